import { compareHostIds, type PlacementWeigher, type WeighedHost } from './placement-weigher';

/**
 * Pack: the least free memory that still fits wins (filters already removed hosts that do not fit), then
 * the fewest free vCPUs: best fit in absolute MiB. Packing fills hosts one by one, leaving whole hosts empty
 * for large VMs or power-off, and strands the fewest MiB on the hosts it uses. The request does not change
 * the order (subtracting the same size from every host keeps it), so every host is in one class.
 */
export function compareForPack(a: WeighedHost, b: WeighedHost): number {
  return a.freeMemoryMib - b.freeMemoryMib || a.freeVcpus - b.freeVcpus || compareHostIds(a, b);
}

export const packWeigher: PlacementWeigher = {
  name: 'pack',
  compare: compareForPack,
  rank: (host) => host.freeMemoryMib,
  capacityClass: () => '',
  compareWithinClass: compareForPack,
};
