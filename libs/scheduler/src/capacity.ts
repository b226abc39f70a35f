import type { CandidateView, HostCandidate, PlacementPolicy } from './model';

/**
 * Free capacity under overcommit. The indexed scheduler and placeOnce both call these functions, never
 * their own arithmetic, so both see bit-identical numbers and therefore the same order of hosts.
 */
export function freeMemoryMib(
  host: Pick<HostCandidate, 'memoryMib' | 'memoryMibAllocated' | 'memoryOvercommitRatio'>,
  policy: Pick<PlacementPolicy, 'memoryOvercommitRatio'>,
): number {
  return (
    host.memoryMib * (host.memoryOvercommitRatio ?? policy.memoryOvercommitRatio) - host.memoryMibAllocated
  );
}

export function freeVcpus(
  host: Pick<HostCandidate, 'cpus' | 'vcpusAllocated' | 'cpuOvercommitRatio'>,
  policy: Pick<PlacementPolicy, 'cpuOvercommitRatio'>,
): number {
  return host.cpus * (host.cpuOvercommitRatio ?? policy.cpuOvercommitRatio) - host.vcpusAllocated;
}

export function toCandidateView(host: HostCandidate, policy: PlacementPolicy): CandidateView {
  return {
    id: host.id,
    state: host.state,
    freeMemoryMib: freeMemoryMib(host, policy),
    freeVcpus: freeVcpus(host, policy),
    labels: host.labels,
    antiAffinityGroups: host.antiAffinityGroups,
  };
}

/** Memory utilisation against the overcommitted capacity (0 = empty, 1 = full); 0 for a host without memory. */
export function memoryUtilisation(
  host: Pick<HostCandidate, 'memoryMib' | 'memoryMibAllocated' | 'memoryOvercommitRatio'>,
  policy: Pick<PlacementPolicy, 'memoryOvercommitRatio'>,
): number {
  const capacityMib = host.memoryMib * (host.memoryOvercommitRatio ?? policy.memoryOvercommitRatio);
  return capacityMib > 0 ? host.memoryMibAllocated / capacityMib : 0;
}
