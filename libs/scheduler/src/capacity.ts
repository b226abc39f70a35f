import type { CandidateView, HostCandidate, PlacementPolicy } from './model';

/**
 * Capacity under overcommit. The indexed scheduler and placeOnce both call these functions, never their own
 * arithmetic, so both see bit-identical numbers and therefore the same order of hosts.
 */

/** Effective memory: `memoryMib × memoryOvercommitRatio`, the host's own ratio over the policy's. */
export function memoryCapacityMib(
  host: Pick<HostCandidate, 'memoryMib' | 'memoryOvercommitRatio'>,
  policy: Pick<PlacementPolicy, 'memoryOvercommitRatio'>,
): number {
  return host.memoryMib * (host.memoryOvercommitRatio ?? policy.memoryOvercommitRatio);
}

/** Effective vCPUs: `cpus × cpuOvercommitRatio`, the host's own ratio over the policy's. */
export function vcpuCapacity(
  host: Pick<HostCandidate, 'cpus' | 'cpuOvercommitRatio'>,
  policy: Pick<PlacementPolicy, 'cpuOvercommitRatio'>,
): number {
  return host.cpus * (host.cpuOvercommitRatio ?? policy.cpuOvercommitRatio);
}

export function freeMemoryMib(
  host: Pick<HostCandidate, 'memoryMib' | 'memoryMibAllocated' | 'memoryOvercommitRatio'>,
  policy: Pick<PlacementPolicy, 'memoryOvercommitRatio'>,
): number {
  return memoryCapacityMib(host, policy) - host.memoryMibAllocated;
}

export function freeVcpus(
  host: Pick<HostCandidate, 'cpus' | 'vcpusAllocated' | 'cpuOvercommitRatio'>,
  policy: Pick<PlacementPolicy, 'cpuOvercommitRatio'>,
): number {
  return vcpuCapacity(host, policy) - host.vcpusAllocated;
}

export function toCandidateView(host: HostCandidate, policy: PlacementPolicy): CandidateView {
  return {
    id: host.id,
    state: host.state,
    memoryCapacityMib: memoryCapacityMib(host, policy),
    vcpuCapacity: vcpuCapacity(host, policy),
    memoryMibAllocated: host.memoryMibAllocated,
    vcpusAllocated: host.vcpusAllocated,
    freeMemoryMib: freeMemoryMib(host, policy),
    freeVcpus: freeVcpus(host, policy),
    labels: host.labels,
    antiAffinityGroups: host.antiAffinityGroups,
  };
}

/**
 * Utilisation of one resource once `requested` more is allocated: `(allocated + requested) / capacity`
 * (0 = empty, 1 = full, above 1 when overcommitted beyond the ratio). A host with no capacity of the
 * resource counts as infinitely full, so it is chosen last and never divides 0 by 0.
 *
 * The spread weigher ranks hosts by this number, and both placement paths compute it here. It is exact
 * enough to rank: with whole-number sizes below 2^51 (the Scheduler's guards), two hosts with the same
 * capacity and different allocations always get different values (one more MiB moves the quotient by more
 * than the double's rounding step), and correctly rounded division never puts a smaller true quotient
 * above a larger one; it can only make quotients that differ by less than one part in 2^52 tie, and ties
 * fall through to the next key.
 */
export function utilisationAfter(allocated: number, requested: number, capacity: number): number {
  return capacity > 0 ? (allocated + requested) / capacity : Infinity;
}

/** Memory utilisation against the overcommitted capacity (0 = empty, 1 = full); 0 for a host without memory. */
export function memoryUtilisation(
  host: Pick<HostCandidate, 'memoryMib' | 'memoryMibAllocated' | 'memoryOvercommitRatio'>,
  policy: Pick<PlacementPolicy, 'memoryOvercommitRatio'>,
): number {
  const capacityMib = memoryCapacityMib(host, policy);
  return capacityMib > 0 ? host.memoryMibAllocated / capacityMib : 0;
}
