import { antiAffinityFilter } from './filters/anti-affinity.filter';
import { excludedHostFilter } from './filters/excluded-host.filter';
import { hostStateFilter } from './filters/host-state.filter';
import { memoryFilter } from './filters/memory.filter';
import type { PlacementFilter } from './filters/placement-filter';
import { requiredLabelsFilter } from './filters/required-labels.filter';
import { vcpuFilter } from './filters/vcpu.filter';
import type { CandidateView, PlacementRequest, WeigherName } from './model';
import { packWeigher } from './weighers/pack.weigher';
import type { PlacementWeigher } from './weighers/placement-weigher';
import { spreadWeigher } from './weighers/spread.weigher';

/**
 * The filter stack, in the order every host goes through it (as Nomad's `feasible/stack.go`). A host is
 * rejected by, and counted against, the first filter that fails it, so the order also decides what the
 * "no host fits" message blames. Cheapest and most selective first:
 */
export const FILTER_STACK: readonly PlacementFilter[] = Object.freeze([
  // One string compare; removes every DOWN/DISABLED/MAINTENANCE host before any arithmetic, and tells the
  // operator first when capacity is missing because hosts are out of service.
  hostStateFilter,
  // One compare on precomputed free memory; memory is the resource that runs out first in most pools
  // (it is not overcommitted by default). The index prunes whole blocks of hosts on it.
  memoryFilter,
  // One compare on precomputed free vCPUs; overcommitted 4:1 by default, so it bites less often than memory.
  // The index prunes whole blocks of hosts on it too.
  vcpuFilter,
  // A scan of a handful of ids, usually absent.
  excludedHostFilter,
  // One hash lookup, usually absent; rejects only the few hosts already running a group member.
  antiAffinityFilter,
  // A loop over the required labels; last because it costs the most per host.
  requiredLabelsFilter,
]);

/** Every weigher by policy name; one weigher per policy (no weighted sum of several). */
export const WEIGHERS: Readonly<Record<WeigherName, PlacementWeigher>> = Object.freeze({
  spread: spreadWeigher,
  pack: packWeigher,
});

/** The first filter in stack order that rejects the host, or undefined when the host can take the request. */
export function firstRejectingFilter(
  host: CandidateView,
  request: PlacementRequest,
): PlacementFilter | undefined {
  for (const filter of FILTER_STACK) {
    if (!filter.passes(host, request)) return filter;
  }
  return undefined;
}

export function passesAllFilters(host: CandidateView, request: PlacementRequest): boolean {
  return firstRejectingFilter(host, request) === undefined;
}
