import { freeMemoryMib, freeVcpus, memoryCapacityMib, vcpuCapacity } from './capacity';
import { SchedulerError, SchedulerErrorCode } from './errors';
import {
  MAX_SIZE,
  assertValidHost,
  assertValidPolicy,
  assertValidReservation,
  isIndexableSize,
} from './guards';
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
  /**
   * Decisions where the full scan ran: the index found no host (the scan explains why, or rescues), or the
   * request's size was not a whole number from 0 to 2^50 (outside what the index ranks exactly).
   */
  readonly fullScans: number;
  /** Full scans that found a host the index missed: always 0 unless the index has a bug. */
  readonly indexMisses: number;
}

/** A host as the scheduler holds it: the snapshot's fields plus its capacity under the policy. */
interface IndexedHost extends CandidateView {
  readonly cpus: number;
  readonly memoryMib: number;
  vcpusAllocated: number;
  memoryMibAllocated: number;
  /** The weigher's capacity class: which HostOrder in `classes` holds the host (when ENABLED). */
  readonly capacityClass: string;
  readonly cpuOvercommitRatio?: number;
  readonly memoryOvercommitRatio?: number;
  /** A private, null-prototype copy: reserve and release change the counts. */
  readonly antiAffinityGroups: Record<string, number>;
  freeMemoryMib: number;
  freeVcpus: number;
}

/**
 * Holds a pool's hosts and places VMs on them with the same filters and weigher as `placeOnce`, without
 * scanning every host: ENABLED hosts are grouped by the weigher's capacity class (spread: same effective
 * memory and vCPUs; pack: one class) and kept sorted best-first within each class (a HostOrder per class).
 * A decision finds each class's best host that passes every filter (walking from the front, skipping blocks
 * of hosts without enough free memory or vCPUs) and keeps the best of those under the weigher's order for
 * this request. Within a class that order is the request-independent one the class is sorted by, so the
 * result is exactly the host `placeOnce` picks. See README.md.
 *
 * `place` only decides; the caller commits a decision with `reserve` (and undoes it with `release`), or
 * refreshes a host from its authoritative record with `upsertHost`.
 */
export class Scheduler {
  readonly policy: PlacementPolicy;
  private readonly weigher: PlacementWeigher;
  private readonly hostsById = new Map<string, IndexedHost>();
  /**
   * ENABLED hosts only, one HostOrder per capacity class, never an empty one: other states never take VMs,
   * and the explanation scans hostsById. By key, and as a dense list for the per-decision pass.
   */
  private readonly classes = new Map<string, CapacityClass>();
  private readonly classList: CapacityClass[] = [];
  /** heads[i]: the first host of classList[i], kept in step so the per-decision pass reads one array. */
  private readonly heads: IndexedHost[] = [];
  /** Scratch for findInClasses: the rank of each class's first host for the request being placed. */
  private headRanks = new Float64Array(16);
  /** ENABLED hosts, across all classes. */
  private indexedCount = 0;
  /** ENABLED hosts only, like `classes`. */
  private readonly labelIndex = new LabelIndex<IndexedHost>();
  private readonly counters = { decisions: 0, indexed: 0, fullScans: 0, indexMisses: 0 };

  constructor(options: SchedulerOptions = {}) {
    this.policy = placementPolicy(options.policy);
    assertValidPolicy(this.policy);
    this.weigher = WEIGHERS[this.policy.weigher];
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
    const capacity = {
      memoryCapacityMib: memoryCapacityMib(host, this.policy),
      vcpuCapacity: vcpuCapacity(host, this.policy),
    };
    const indexed: IndexedHost = {
      id: host.id,
      state: host.state,
      cpus: host.cpus,
      memoryMib: host.memoryMib,
      vcpusAllocated: host.vcpusAllocated,
      memoryMibAllocated: host.memoryMibAllocated,
      cpuOvercommitRatio: host.cpuOvercommitRatio,
      memoryOvercommitRatio: host.memoryOvercommitRatio,
      ...capacity,
      capacityClass: this.weigher.capacityClass(capacity),
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
    // The index ranks exactly only whole-number sizes (see guards.ts); the full scan answers anything else.
    const indexable = isIndexableSize(request.memoryMib) && isIndexableSize(request.vcpus);
    const found = indexable ? this.findInIndex(request) : undefined;
    if (found !== undefined) {
      this.counters.indexed += 1;
      return { ok: true, hostId: found.id };
    }
    // The index found nothing. The full scan explains why, and, should the index ever disagree with the
    // filters, still finds the host: the index can be slow, never wrong about "no capacity".
    this.counters.fullScans += 1;
    const result = placeOnViews(this.hostsById, request, this.policy);
    if (result.ok && indexable) this.counters.indexMisses += 1;
    return result;
  }

  /** Adds the request to the host's allocation (and its anti-affinity group), as after a `place` decision. */
  reserve(hostId: string, request: PlacementRequest): void {
    assertValidReservation(hostId, request);
    const host = this.requireHost(hostId);
    if (
      host.vcpusAllocated + request.vcpus > MAX_SIZE ||
      host.memoryMibAllocated + request.memoryMib > MAX_SIZE
    ) {
      throw new SchedulerError({
        code: SchedulerErrorCode.InvalidRequest,
        resource: `host ${hostId} allocation`,
        expected: 'at most 2^50 vCPUs and 2^50 MiB allocated',
        actual:
          `${host.vcpusAllocated} vCPU / ${host.memoryMibAllocated} MiB ` +
          `plus ${request.vcpus} vCPU / ${request.memoryMib} MiB`,
        action: 'release what is no longer running, or upsertHost the host from its current record',
      });
    }
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
    if (rarest !== undefined && rarest.size * rarest.size <= this.indexedCount) {
      let best: IndexedHost | undefined;
      for (const host of rarest) {
        if (accept(host) && (best === undefined || this.weigher.compare(host, best, request) < 0))
          best = host;
      }
      return best;
    }
    return this.findInClasses(request, accept);
  }

  /**
   * The best accepted host of all classes. Within a class the weigher's order for this request is the order
   * the class is sorted by, so a class's first host ranks above all its others and the walk's first accepted
   * host is the class's best. One tight pass ranks every class's first host; the class with the best one is
   * walked first, as it usually holds the answer; then only classes whose first host could still beat the
   * best found so far, each walk ending at the first host that ranks below it (every host after it in its
   * class does too). Costs O(classes) per decision plus the walks.
   */
  private findInClasses(
    request: PlacementRequest,
    accept: (host: IndexedHost) => boolean,
  ): IndexedHost | undefined {
    const list = this.classList;
    const count = list.length;
    if (count === 0) return undefined;
    const { memoryMib, vcpus } = request;
    if (count === 1) return list[0].order.findFirst(memoryMib, vcpus, accept);
    const weigher = this.weigher;
    if (this.headRanks.length < count) this.headRanks = new Float64Array(count * 2);
    const ranks = this.headRanks;
    let leading = 0;
    const heads = this.heads;
    for (let index = 0; index < count; index += 1) {
      const rank = weigher.rank(heads[index], request);
      ranks[index] = rank;
      if (
        rank < ranks[leading] ||
        (rank === ranks[leading] &&
          index !== leading &&
          weigher.compare(heads[index], heads[leading], request) < 0)
      )
        leading = index;
    }
    let best = list[leading].order.findFirst(memoryMib, vcpus, accept);
    let bestRank = best === undefined ? 0 : weigher.rank(best, request);
    for (let index = 0; index < count; index += 1) {
      if (index === leading || (best !== undefined && ranks[index] > bestRank)) continue;
      const bound = best;
      const found =
        bound === undefined
          ? list[index].order.findFirst(memoryMib, vcpus, accept)
          : list[index].order.findFirst(
              memoryMib,
              vcpus,
              accept,
              (host) => weigher.compare(host, bound, request) > 0,
            );
      // With a bound, the walk stops before any host that ranks below it: what it finds is better.
      if (found !== undefined) {
        best = found;
        bestRank = weigher.rank(found, request);
      }
    }
    return best;
  }

  private reallocate(host: IndexedHost, vcpusDelta: number, memoryMibDelta: number): void {
    // The host's place in its class changes, so it leaves the order first and re-enters at its new place.
    const indexed = isIndexed(host.state);
    if (indexed) this.deleteFromOrder(host);
    host.vcpusAllocated += vcpusDelta;
    host.memoryMibAllocated += memoryMibDelta;
    this.refreshFreeCapacity(host);
    if (indexed) this.insertIntoClass(host);
  }

  private refreshFreeCapacity(host: IndexedHost): void {
    host.freeMemoryMib = freeMemoryMib(host, this.policy);
    host.freeVcpus = freeVcpus(host, this.policy);
  }

  private attach(host: IndexedHost): void {
    if (!isIndexed(host.state)) return;
    this.insertIntoClass(host);
    this.indexedCount += 1;
    this.labelIndex.add(host);
  }

  private detach(host: IndexedHost): void {
    if (!isIndexed(host.state)) return;
    this.deleteFromOrder(host);
    this.indexedCount -= 1;
    this.labelIndex.delete(host);
  }

  /** Puts the host into its class's order, creating the class when it is new. */
  private insertIntoClass(host: IndexedHost): void {
    let capacityClass = this.classes.get(host.capacityClass);
    if (capacityClass === undefined) {
      capacityClass = new CapacityClass(
        host.capacityClass,
        new HostOrder<IndexedHost>(this.weigher.compareWithinClass),
        this.classList.length,
      );
      this.classes.set(capacityClass.key, capacityClass);
      this.classList.push(capacityClass);
      this.heads.push(host);
    }
    capacityClass.order.insert(host);
    this.heads[capacityClass.position] = capacityClass.order.first() as IndexedHost;
  }

  /** Takes the host out of its class order, and drops the class once empty (findInClasses needs a head). */
  private deleteFromOrder(host: IndexedHost): void {
    const capacityClass = this.classes.get(host.capacityClass);
    if (capacityClass === undefined || !capacityClass.order.delete(host))
      throw new Error(`scheduler index out of sync: host ${host.id} missing from order`);
    const position = capacityClass.position;
    const head = capacityClass.order.first();
    if (head !== undefined) {
      this.heads[position] = head;
      return;
    }
    this.classes.delete(capacityClass.key);
    const last = this.classList.pop() as CapacityClass;
    const lastHead = this.heads.pop() as IndexedHost;
    if (last !== capacityClass) {
      this.classList[position] = last;
      this.heads[position] = lastHead;
      last.position = position;
    }
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

/** The ENABLED hosts of one capacity class, sorted by the weigher's order within the class. */
class CapacityClass {
  constructor(
    readonly key: string,
    readonly order: HostOrder<IndexedHost>,
    /** Where the class sits in Scheduler.classList (moved when another class is dropped). */
    public position: number,
  ) {}
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
