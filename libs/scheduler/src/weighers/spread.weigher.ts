import { compareHostIds, type PlacementWeigher, type WeighedHost } from './placement-weigher';

/**
 * Spread: the most free memory wins (absolute MiB, as Nova's RAM weigher), then the most free vCPUs.
 * Spreading is the default: a host failure or a noisy neighbour touches as few VMs as possible.
 */
export function compareForSpread(a: WeighedHost, b: WeighedHost): number {
  return b.freeMemoryMib - a.freeMemoryMib || b.freeVcpus - a.freeVcpus || compareHostIds(a, b);
}

export const spreadWeigher: PlacementWeigher = { name: 'spread', compare: compareForSpread };
