import type { CandidateView, PlacementRequest } from '../model';
import { bestOf, formatCapacity, type PlacementFilter } from './placement-filter';

/** Free memory is measured under the memory overcommit ratio (1.0 by default: no memory overcommit). */
export function hasFreeMemory(
  host: Pick<CandidateView, 'freeMemoryMib'>,
  request: Pick<PlacementRequest, 'memoryMib'>,
): boolean {
  return host.freeMemoryMib >= request.memoryMib;
}

export const memoryFilter: PlacementFilter = {
  name: 'memory',
  passes: hasFreeMemory,
  describe(request, rejected) {
    const bestFreeMib = bestOf(rejected, (host) => host.freeMemoryMib);
    return `need ${request.memoryMib} MiB free, best has ${formatCapacity(bestFreeMib)} MiB`;
  },
};
