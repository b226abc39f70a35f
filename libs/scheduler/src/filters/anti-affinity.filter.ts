import type { CandidateView, PlacementRequest } from '../model';
import type { PlacementFilter } from './placement-filter';

/** A host already running a VM of the request's group is out, so one host failure takes at most one member. */
export function isOutsideAntiAffinityGroup(
  host: Pick<CandidateView, 'antiAffinityGroups'>,
  request: Pick<PlacementRequest, 'antiAffinityGroup'>,
): boolean {
  const group = request.antiAffinityGroup;
  // hasOwn: group names are data, and "constructor" must not match Object.prototype.
  return (
    group === undefined ||
    !Object.hasOwn(host.antiAffinityGroups, group) ||
    !(host.antiAffinityGroups[group] > 0)
  );
}

export const antiAffinityFilter: PlacementFilter = {
  name: 'anti-affinity',
  passes: isOutsideAntiAffinityGroup,
  describe(request) {
    return `already run a VM of anti-affinity group ${request.antiAffinityGroup ?? ''}`;
  },
};
