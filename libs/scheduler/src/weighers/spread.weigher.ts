import { utilisationAfter } from '../capacity';
import {
  compareHostIds,
  type PlacementWeigher,
  type WeighedHost,
  type WeighedRequest,
} from './placement-weigher';

/**
 * Spread: the lowest memory utilisation once the VM is on the host wins, `(allocated + request) /
 * effective capacity`; then the lowest vCPU utilisation the same way; then the host id. Hosts fill evenly in
 * proportion to their size (as Kubernetes' LeastAllocated and Nomad's spread score, which also count the
 * request in): a 64 GiB VM goes to a 1 TiB host (+6 %) rather than to an empty 128 GiB one (+50 %).
 * Spreading is the default: a host failure or a noisy neighbour touches as few VMs as possible.
 *
 * The order depends on the request's size, but only across capacity classes: on two hosts with the same
 * effective capacity, adding the same request to both keeps their order, so within a class the order is
 * simply "least allocated first" (compareSpreadWithinClass) and the index can keep it sorted.
 */
export function compareForSpread(a: WeighedHost, b: WeighedHost, request: WeighedRequest): number {
  const memoryA = spreadRank(a, request);
  const memoryB = spreadRank(b, request);
  if (memoryA !== memoryB) return memoryA < memoryB ? -1 : 1;
  const vcpusA = utilisationAfter(a.vcpusAllocated, request.vcpus, a.vcpuCapacity);
  const vcpusB = utilisationAfter(b.vcpusAllocated, request.vcpus, b.vcpuCapacity);
  if (vcpusA !== vcpusB) return vcpusA < vcpusB ? -1 : 1;
  return compareHostIds(a, b);
}

/** Memory utilisation once the request is on the host: spread's first key. */
export function spreadRank(host: WeighedHost, request: WeighedRequest): number {
  return utilisationAfter(host.memoryMibAllocated, request.memoryMib, host.memoryCapacityMib);
}

/**
 * Spread's order on hosts of one capacity class, for every request at once: least memory allocated, then
 * fewest vCPUs allocated, then the host id. Allocation does not count for a resource the class has none of
 * (utilisationAfter is Infinity there, whatever is allocated).
 */
export function compareSpreadWithinClass(a: WeighedHost, b: WeighedHost): number {
  return (
    (a.memoryCapacityMib > 0 ? a.memoryMibAllocated - b.memoryMibAllocated : 0) ||
    (a.vcpuCapacity > 0 ? a.vcpusAllocated - b.vcpusAllocated : 0) ||
    compareHostIds(a, b)
  );
}

/** Same effective memory and vCPU capacity (a double prints as the shortest string that reads back as it). */
export function spreadCapacityClass(host: Pick<WeighedHost, 'memoryCapacityMib' | 'vcpuCapacity'>): string {
  return `${host.memoryCapacityMib}/${host.vcpuCapacity}`;
}

export const spreadWeigher: PlacementWeigher = {
  name: 'spread',
  compare: compareForSpread,
  rank: spreadRank,
  capacityClass: spreadCapacityClass,
  compareWithinClass: compareSpreadWithinClass,
};
