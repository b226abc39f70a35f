import { FILTER_STACK, WEIGHERS, firstRejectingFilter } from './stack';
import { candidateView } from './testing/random-cluster';

describe('filter stack', () => {
  it('runs the cheap, selective filters first and labels last', () => {
    expect(FILTER_STACK.map((filter) => filter.name)).toEqual([
      'host-state',
      'memory',
      'vcpus',
      'excluded-host',
      'anti-affinity',
      'required-labels',
    ]);
  });

  it('blames the first filter in stack order when several reject a host', () => {
    const host = candidateView({ state: 'DOWN', freeMemoryMib: 0, freeVcpus: 0 });
    expect(firstRejectingFilter(host, { vcpus: 1, memoryMib: 1 })?.name).toBe('host-state');
  });

  it('finds no rejecting filter for a host that can take the request', () => {
    expect(firstRejectingFilter(candidateView(), { vcpus: 1, memoryMib: 1 })).toBeUndefined();
  });

  it('has one weigher per policy name', () => {
    expect(Object.keys(WEIGHERS).sort()).toEqual(['pack', 'spread']);
    for (const [name, weigher] of Object.entries(WEIGHERS)) expect(weigher.name).toBe(name);
  });
});
