import { candidateView } from '../testing/random-cluster';
import { vcpuFilter } from './vcpu.filter';

describe('vcpus filter', () => {
  it('accepts a host whose free vCPUs equal the request', () => {
    expect(vcpuFilter.passes(candidateView({ freeVcpus: 4 }), { vcpus: 4, memoryMib: 1 })).toBe(true);
  });

  it('rejects a host with fewer free vCPUs than requested', () => {
    expect(vcpuFilter.passes(candidateView({ freeVcpus: 3.5 }), { vcpus: 4, memoryMib: 1 })).toBe(false);
  });

  it('describes the need and the most free vCPUs among the rejected hosts', () => {
    const rejected = [candidateView({ freeVcpus: 1 }), candidateView({ freeVcpus: 3 })];
    expect(vcpuFilter.describe({ vcpus: 4, memoryMib: 1 }, rejected)).toBe('need 4 vCPU free, best has 3');
  });
});
