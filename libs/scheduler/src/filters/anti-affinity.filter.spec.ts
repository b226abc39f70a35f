import { candidateView } from '../testing/random-cluster';
import { antiAffinityFilter } from './anti-affinity.filter';

describe('anti-affinity filter', () => {
  const request = { vcpus: 1, memoryMib: 1, antiAffinityGroup: 'web' };

  it('accepts any host when the request has no group', () => {
    const host = candidateView({ antiAffinityGroups: { web: 1 } });
    expect(antiAffinityFilter.passes(host, { vcpus: 1, memoryMib: 1 })).toBe(true);
  });

  it('accepts a host running VMs of other groups only', () => {
    expect(antiAffinityFilter.passes(candidateView({ antiAffinityGroups: { db: 2 } }), request)).toBe(true);
  });

  it('rejects a host already running a VM of the same group', () => {
    expect(antiAffinityFilter.passes(candidateView({ antiAffinityGroups: { web: 1 } }), request)).toBe(false);
  });

  it('accepts a host whose count for the group dropped to zero', () => {
    expect(antiAffinityFilter.passes(candidateView({ antiAffinityGroups: { web: 0 } }), request)).toBe(true);
  });

  it('does not treat Object.prototype members as groups', () => {
    const constructorGroup = { vcpus: 1, memoryMib: 1, antiAffinityGroup: 'constructor' };
    expect(antiAffinityFilter.passes(candidateView(), constructorGroup)).toBe(true);
  });

  it('describes the group the rejected hosts already run', () => {
    expect(antiAffinityFilter.describe(request, [])).toBe('already run a VM of anti-affinity group web');
  });
});
