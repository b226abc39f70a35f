import { candidateView } from '../testing/random-cluster';
import { hostStateFilter } from './host-state.filter';

const request = { vcpus: 1, memoryMib: 1024 };

describe('host-state filter', () => {
  it('accepts an ENABLED host', () => {
    expect(hostStateFilter.passes(candidateView({ state: 'ENABLED' }), request)).toBe(true);
  });

  it.each(['DISABLED', 'MAINTENANCE', 'DOWN'] as const)('rejects a %s host', (state) => {
    expect(hostStateFilter.passes(candidateView({ state }), request)).toBe(false);
  });

  it('describes the rejected hosts by state with counts', () => {
    const rejected = [
      candidateView({ id: 'a', state: 'DOWN' }),
      candidateView({ id: 'b', state: 'DOWN' }),
      candidateView({ id: 'c', state: 'MAINTENANCE' }),
    ];
    expect(hostStateFilter.describe(request, rejected)).toBe('not ENABLED: 2 DOWN, 1 MAINTENANCE');
  });
});
