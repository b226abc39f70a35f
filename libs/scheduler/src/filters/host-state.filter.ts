import type { CandidateView, HostState } from '../model';
import type { PlacementFilter } from './placement-filter';

/** Only ENABLED hosts take new VMs; DISABLED and MAINTENANCE are operator choices, DOWN is a failed heartbeat. */
export function isHostEnabled(host: Pick<CandidateView, 'state'>): boolean {
  return host.state === 'ENABLED';
}

export const hostStateFilter: PlacementFilter = {
  name: 'host-state',
  passes: isHostEnabled,
  describe(_request, rejected) {
    const hostsByState = new Map<HostState, number>();
    for (const host of rejected) hostsByState.set(host.state, (hostsByState.get(host.state) ?? 0) + 1);
    const states = [...hostsByState].map(([state, hosts]) => `${hosts} ${state}`).join(', ');
    return `not ENABLED: ${states}`;
  },
};
