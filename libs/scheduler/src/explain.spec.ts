import { explainNoHost } from './explain';
import { candidateView } from './testing/random-cluster';

const request = { vcpus: 2, memoryMib: 4096 };

describe('explainNoHost', () => {
  it('counts each host against the first filter that rejects it and names the biggest cause first', () => {
    const hosts = [
      candidateView({ id: 'a', freeMemoryMib: 1024 }),
      candidateView({ id: 'b', freeMemoryMib: 2048 }),
      candidateView({ id: 'c', freeMemoryMib: 0 }),
      // DOWN and short of memory: blamed on host-state, which comes first in the stack.
      candidateView({ id: 'd', state: 'DOWN', freeMemoryMib: 0 }),
      candidateView({ id: 'e', state: 'DOWN' }),
    ];
    const result = explainNoHost(hosts, request);
    expect(result.rejections).toEqual([
      { filter: 'memory', hosts: 3, reason: 'need 4096 MiB free, best has 2048 MiB' },
      { filter: 'host-state', hosts: 2, reason: 'not ENABLED: 2 DOWN' },
    ]);
    expect(result.message).toBe(
      'no host can run 2 vCPU / 4096 MiB: 3 hosts rejected by memory (need 4096 MiB free, best has 2048 MiB), ' +
        '2 by host-state (not ENABLED: 2 DOWN)',
    );
  });

  it('lists filters with equal counts in stack order', () => {
    const hosts = [candidateView({ id: 'a', freeVcpus: 0 }), candidateView({ id: 'b', freeMemoryMib: 0 })];
    expect(explainNoHost(hosts, request).rejections.map((rejection) => rejection.filter)).toEqual([
      'memory',
      'vcpus',
    ]);
  });

  it('says "1 host" for a single rejected host', () => {
    const result = explainNoHost([candidateView({ state: 'MAINTENANCE' })], request);
    expect(result.message).toBe(
      'no host can run 2 vCPU / 4096 MiB: 1 host rejected by host-state (not ENABLED: 1 MAINTENANCE)',
    );
  });

  it('says there are no hosts when the pool is empty', () => {
    const result = explainNoHost([], request);
    expect(result).toEqual({
      ok: false,
      rejections: [],
      message: 'no host can run 2 vCPU / 4096 MiB: there are no hosts',
    });
  });

  it('names the anti-affinity group, excluded hosts and missing labels', () => {
    const hosts = [
      candidateView({ id: 'a', antiAffinityGroups: { web: 1 } }),
      candidateView({ id: 'b' }),
      candidateView({ id: 'c', labels: { zone: 'az2' } }),
    ];
    const result = explainNoHost(hosts, {
      ...request,
      antiAffinityGroup: 'web',
      excludeHostIds: ['b'],
      requiredLabels: { zone: 'az1' },
    });
    expect(result.message).toBe(
      'no host can run 2 vCPU / 4096 MiB: 1 host rejected by excluded-host (excluded by the request), ' +
        '1 by anti-affinity (already run a VM of anti-affinity group web), ' +
        '1 by required-labels (need labels zone=az1)',
    );
  });
});
