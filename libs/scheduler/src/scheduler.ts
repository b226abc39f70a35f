import { freeMemoryMib, freeVcpus } from './capacity';
import { SchedulerError, SchedulerErrorCode } from './errors';
import { assertValidHost, assertValidPolicy, assertValidReservation } from './guards';
import { isHostEnabled } from './filters/host-state.filter';
import { HostOrder } from './host-order';
import { LabelIndex } from './label-index';
import {
  placementPolicy,
  type CandidateView,
  type HostCandidate,
  type HostState,
  type PlacementPolicy,
  type PlacementRequest,
  type PlacementResult,
} from './model';
import { placeOnViews } from './place-once';
import { WEIGHERS, passesAllFilters } from './stack';
import type { PlacementWeigher } from './weighers/placement-weigher';

export interface SchedulerOptions {
  /** Defaults: spread, 4.0 vCPUs per core, no memory overcommit. */
  readonly policy?: Partial<PlacementPolicy>;
  readonly hosts?: Iterable<HostCandidate>;
}

/** How the scheduler reached its decisions; for metrics and for tests that hold the index to the full scan. */
export interface SchedulerStats {
  readonly decisions: number;
  /** Decisions answered from the index alone. */
  readonly indexed: number;
  /** Decisions where the index found no host and the full scan ran (to explain, or to rescue). */
  readonly fullScans: number;
  /** Full scans that found a host the index missed: always 0 unless the index has a bug. */
  readonly indexMisses: number;
}

/** A host as the scheduler holds it: the snapshot's fields plus its free capacity under the policy. */
interface IndexedHost extends CandidateView {
  readonly cpus: number;
  readonly memoryMib: number;
  vcpusAllocated: number;
  memoryMibAllocated: number;
  readonly cpuOvercommitRatio?: number;
  readonly memoryOvercommitRatio?: number;
  /** A private, null-prototype copy: reserve and release change the counts. */
  readonly antiAffinityGroups: Record<string, number>;
  freeMemoryMib: number;
  freeVcpus: number;
}

/**
 * Holds a pool's hosts and places VMs on them with the same filters and weigher as `placeOnce`, without
 * scanning every host: ENABLED hosts are kept sorted best-first by the policy's weigher (HostOrder), and a
 * decision walks that order from the front, skipping blocks of hosts without enough free memory or vCPUs,
 * and returns the first host that passes every filter. Since the order is the weigher's total order, that
 * host is exactly the one `placeOnce` picks. See README.md.
 *
 * `place` only decides; the caller commits a decision with `reserve` (and undoes it with `release`), or
 * refreshes a host from its authoritative record with `upsertHost`.
 */
export class Scheduler {
  readonly policy: PlacementPolicy;
  private readonly weigher: PlacementWeigher;
  private readonly hostsById = new Map<string, IndexedHost>();
  /** ENABLED hosts only: other states never take VMs, and the explanation scans hostsById. */
  private readonly order: HostOrder<IndexedHost>;
  /** ENABLED hosts only, like `order`. */
  private readonly labelIndex = new LabelIndex<IndexedHost>();
  private readonly counters = { decisions: 0, indexed: 0, fullScans: 0, indexMisses: 0 };

  constructor(options: SchedulerOptions = {}) {
    this.policy = placementPolicy(options.policy);
    assertValidPolicy(this.policy);
    this.weigher = WEIGHERS[this.policy.weigher];
    this.order = new HostOrder<IndexedHost>(this.weigher.compare);
    for (const host of options.hosts ?? []) this.upsertHost(host);
  }

  /** Number of hosts in any state. */
  get size(): number {
    return this.hostsById.size;
  }

  /** Adds a host or replaces it with a fresh snapshot (state, capacity, allocation, labels, groups). */
  upsertHost(host: HostCandidate): void {
    assertValidHost(host);
    const existing = this.hostsById.get(host.id);
    if (existing !== undefined) this.detach(existing);
    const indexed: IndexedHost = {
      id: host.id,
      state: host.state,
      cpus: host.cpus,
      memoryMib: host.memoryMib,
      vcpusAllocated: host.vcpusAllocated,
      memoryMibAllocated: host.memoryMibAllocated,
      cpuOvercommitRatio: host.cpuOvercommitRatio,
      memoryOvercommitRatio: host.memoryOvercommitRatio,
      labels: Object.freeze({ ...host.labels }),
      antiAffinityGroups: Object.assign(
        Object.create(null) as Record<string, number>,
        host.antiAffinityGroups,
      ),
      freeMemoryMib: 0,
      freeVcpus: 0,
    };
    this.refreshFreeCapacity(indexed);
    this.hostsById.set(host.id, indexed);
    this.attach(indexed);
  }

  /** False when the host was not there. */
  removeHost(hostId: string): boolean {
    const existing = this.hostsById.get(hostId);
    if (existing === undefined) return false;
    this.detach(existing);
    this.hostsById.delete(hostId);
    return true;
  }

  /** The best host for the request, or why there is none. Changes no allocation. */
  place(request: PlacementRequest): PlacementResult {
    this.counters.decisions += 1;
    const found = this.findInIndex(request);
    if (found !== undefined) {
      this.counters.indexed += 1;
      return { ok: true, hostId: found.id };
    }
    // The index found nothing. The full scan explains why, and, should the index ever disagree with the
    // filters, still finds the host: the index can be slow, never wrong about "no capacity".
    this.counters.fullScans += 1;
    const result = placeOnViews(this.hostsById, request, this.policy);
    if (result.ok) this.counters.indexMisses += 1;
    return result;
  }

  /** Adds the request to the host's allocation (and its anti-affinity group), as after a `place` decision. */
  reserve(hostId: string, request: PlacementRequest): void {
    assertValidReservation(hostId, request);
    const host = this.requireHost(hostId);
    this.reallocate(host, request.vcpus, request.memoryMib);
    const group = request.antiAffinityGroup;
    if (group !== undefined) host.antiAffinityGroups[group] = (host.antiAffinityGroups[group] ?? 0) + 1;
  }

  /** Takes the request off the host's allocation, e.g. when the VM failed to start or was deleted. */
  release(hostId: string, request: PlacementRequest): void {
    assertValidReservation(hostId, request);
    const host = this.requireHost(hostId);
    if (request.vcpus > host.vcpusAllocated || request.memoryMib > host.memoryMibAllocated) {
      throw new SchedulerError({
        code: SchedulerErrorCode.ReleaseExceedsAllocation,
        resource: `host ${hostId} allocation`,
        expected: `at most ${host.vcpusAllocated} vCPU / ${host.memoryMibAllocated} MiB released`,
        actual: `${request.vcpus} vCPU / ${request.memoryMib} MiB`,
        action: 'release only what was reserved, or upsertHost the host from its current record',
      });
    }
    this.reallocate(host, -request.vcpus, -request.memoryMib);
    const group = request.antiAffinityGroup;
    if (group !== undefined && host.antiAffinityGroups[group] !== undefined) {
      host.antiAffinityGroups[group] -= 1;
      if (host.antiAffinityGroups[group] <= 0) delete host.antiAffinityGroups[group];
    }
  }

  /** The host as the scheduler currently sees it (allocation included), or undefined. */
  host(hostId: string): HostCandidate | undefined {
    const host = this.hostsById.get(hostId);
    return host === undefined ? undefined : toHostCandidate(host);
  }

  /** Every host as the scheduler currently sees it: the snapshot `placeOnce` would decide on. */
  hosts(): HostCandidate[] {
    return [...this.hostsById.values()].map(toHostCandidate);
  }

  stats(): SchedulerStats {
    return { ...this.counters };
  }

  private findInIndex(request: PlacementRequest): IndexedHost | undefined {
    const accept = (host: IndexedHost): boolean => passesAllFilters(host, request);
    const rarest =
      request.requiredLabels === undefined ? undefined : this.labelIndex.rarestMatch(request.requiredLabels);
    // If carriers of a label are spread through the order, the walk meets one about every n/k hosts (k
    // carriers), while scanning the carriers costs k: scan them when k² ≤ n. Both give the exact best host.
    if (rarest !== undefined && rarest.size * rarest.size <= this.order.size) {
      let best: IndexedHost | undefined;
      for (const host of rarest) {
        if (accept(host) && (best === undefined || this.weigher.compare(host, best) < 0)) best = host;
      }
      return best;
    }
    return this.order.findFirst(request.memoryMib, request.vcpus, accept);
  }

  private reallocate(host: IndexedHost, vcpusDelta: number, memoryMibDelta: number): void {
    // The host's weigher key changes, so it leaves the order first and re-enters at its new place.
    const indexed = isIndexed(host.state);
    if (indexed) this.deleteFromOrder(host);
    host.vcpusAllocated += vcpusDelta;
    host.memoryMibAllocated += memoryMibDelta;
    this.refreshFreeCapacity(host);
    if (indexed) this.order.insert(host);
  }

  private refreshFreeCapacity(host: IndexedHost): void {
    host.freeMemoryMib = freeMemoryMib(host, this.policy);
    host.freeVcpus = freeVcpus(host, this.policy);
  }

  private attach(host: IndexedHost): void {
    if (!isIndexed(host.state)) return;
    this.order.insert(host);
    this.labelIndex.add(host);
  }

  private detach(host: IndexedHost): void {
    if (!isIndexed(host.state)) return;
    this.deleteFromOrder(host);
    this.labelIndex.delete(host);
  }

  private deleteFromOrder(host: IndexedHost): void {
    if (!this.order.delete(host))
      throw new Error(`scheduler index out of sync: host ${host.id} missing from order`);
  }

  private requireHost(hostId: string): IndexedHost {
    const host = this.hostsById.get(hostId);
    if (host === undefined) {
      throw new SchedulerError({
        code: SchedulerErrorCode.UnknownHost,
        resource: `host ${hostId}`,
        expected: 'a host known to the scheduler',
        actual: 'no such host',
        action: 'upsertHost it first, or place again: it may have been removed since the decision',
      });
    }
    return host;
  }
}

/** Only hosts that pass the host-state filter are worth indexing. */
function isIndexed(state: HostState): boolean {
  return isHostEnabled({ state });
}

function toHostCandidate(host: IndexedHost): HostCandidate {
  return {
    id: host.id,
    state: host.state,
    cpus: host.cpus,
    memoryMib: host.memoryMib,
    vcpusAllocated: host.vcpusAllocated,
    memoryMibAllocated: host.memoryMibAllocated,
    ...(host.cpuOvercommitRatio === undefined ? {} : { cpuOvercommitRatio: host.cpuOvercommitRatio }),
    ...(host.memoryOvercommitRatio === undefined
      ? {}
      : { memoryOvercommitRatio: host.memoryOvercommitRatio }),
    labels: { ...host.labels },
    antiAffinityGroups: { ...host.antiAffinityGroups },
  };
}
