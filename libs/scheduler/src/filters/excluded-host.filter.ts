import type { CandidateView, PlacementRequest } from '../model';
import type { PlacementFilter } from './placement-filter';

/** A linear search: requests exclude a handful of hosts (a migration source, a host that just failed the VM). */
export function isHostAllowed(
  host: Pick<CandidateView, 'id'>,
  request: Pick<PlacementRequest, 'excludeHostIds'>,
): boolean {
  return request.excludeHostIds === undefined || !request.excludeHostIds.includes(host.id);
}

export const excludedHostFilter: PlacementFilter = {
  name: 'excluded-host',
  passes: isHostAllowed,
  describe() {
    return 'excluded by the request';
  },
};
