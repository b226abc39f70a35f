import type { CandidateView, PlacementRequest } from '../model';
import { bestOf, formatCapacity, type PlacementFilter } from './placement-filter';

/** Free vCPUs are measured under the cpu overcommit ratio (4.0 vCPUs per core by default). */
export function hasFreeVcpus(
  host: Pick<CandidateView, 'freeVcpus'>,
  request: Pick<PlacementRequest, 'vcpus'>,
): boolean {
  return host.freeVcpus >= request.vcpus;
}

export const vcpuFilter: PlacementFilter = {
  name: 'vcpus',
  passes: hasFreeVcpus,
  describe(request, rejected) {
    const bestFreeVcpus = bestOf(rejected, (host) => host.freeVcpus);
    return `need ${request.vcpus} vCPU free, best has ${formatCapacity(bestFreeVcpus)}`;
  },
};
