import { toCandidateView } from './capacity';
import { explainNoHost } from './explain';
import {
  DEFAULT_PLACEMENT_POLICY,
  type CandidateView,
  type HostCandidate,
  type PlacementPolicy,
  type PlacementRequest,
  type PlacementResult,
} from './model';
import { WEIGHERS, passesAllFilters } from './stack';

/**
 * The reference placement: every host through every filter, the best survivor by the policy's weigher.
 * O(hosts) per decision. Tests hold the indexed Scheduler to it, and it is the quality baseline in the
 * benchmark; services with a few hosts may call it directly.
 */
export function placeOnce(
  hosts: readonly HostCandidate[],
  request: PlacementRequest,
  policy: PlacementPolicy = DEFAULT_PLACEMENT_POLICY,
): PlacementResult {
  const views = hosts.map((host) => toCandidateView(host, policy));
  return placeOnViews(views, request, policy);
}

/** Any collection of views that can be walked more than once (an array, a Map): no-host explanations walk it twice. */
export interface CandidateCollection {
  values(): Iterable<CandidateView>;
}

/** The full scan over views already worked out; the Scheduler's fallback uses it too. */
export function placeOnViews(
  views: CandidateCollection,
  request: PlacementRequest,
  policy: Pick<PlacementPolicy, 'weigher'>,
): PlacementResult {
  const weigher = WEIGHERS[policy.weigher];
  let best: CandidateView | undefined;
  for (const view of views.values()) {
    if (!passesAllFilters(view, request)) continue;
    if (best === undefined || weigher.compare(view, best, request) < 0) best = view;
  }
  return best === undefined ? explainNoHost(views.values(), request) : { ok: true, hostId: best.id };
}
