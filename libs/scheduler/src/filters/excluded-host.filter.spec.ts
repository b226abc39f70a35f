import { candidateView } from '../testing/random-cluster';
import { excludedHostFilter } from './excluded-host.filter';

describe('excluded-host filter', () => {
  it('accepts any host when the request excludes none', () => {
    expect(excludedHostFilter.passes(candidateView({ id: 'h1' }), { vcpus: 1, memoryMib: 1 })).toBe(true);
  });

  it('accepts a host the request does not exclude', () => {
    const request = { vcpus: 1, memoryMib: 1, excludeHostIds: ['h2'] };
    expect(excludedHostFilter.passes(candidateView({ id: 'h1' }), request)).toBe(true);
  });

  it('rejects a host the request excludes', () => {
    const request = { vcpus: 1, memoryMib: 1, excludeHostIds: ['h2', 'h1'] };
    expect(excludedHostFilter.passes(candidateView({ id: 'h1' }), request)).toBe(false);
  });
});
