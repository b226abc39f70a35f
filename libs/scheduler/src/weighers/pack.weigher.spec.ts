import type { CandidateView } from '../model';
import { sizedView } from '../testing/random-cluster';
import { packWeigher } from './pack.weigher';

const request = { vcpus: 2, memoryMib: 4096 };
const best = (hosts: CandidateView[]) => [...hosts].sort((a, b) => packWeigher.compare(a, b, request))[0].id;

describe('pack weigher', () => {
  it('prefers the host with the least free memory, in MiB rather than as a share', () => {
    expect(
      best([
        // 8 GiB free of 1 TiB: 99 % full.
        sizedView('a', { memoryCapacityMib: 1048576, vcpuCapacity: 64, memoryMibAllocated: 1040384 }),
        // 4 GiB free of 16 GiB: 75 % full, but the tighter fit.
        sizedView('b', { memoryCapacityMib: 16384, vcpuCapacity: 64, memoryMibAllocated: 12288 }),
      ]),
    ).toBe('b');
  });

  it('breaks a free-memory tie by the fewest free vCPUs', () => {
    expect(
      best([
        sizedView('a', { memoryCapacityMib: 4096, vcpuCapacity: 16 }),
        sizedView('b', { memoryCapacityMib: 4096, vcpuCapacity: 4 }),
      ]),
    ).toBe('b');
  });

  it('breaks a full tie by the smallest host id', () => {
    const size = { memoryCapacityMib: 4096, vcpuCapacity: 4 };
    expect(best([sizedView('h2', size), sizedView('h1', size)])).toBe('h1');
  });

  it('keeps every host in one class: its order does not depend on the request', () => {
    expect(packWeigher.capacityClass({ memoryCapacityMib: 1, vcpuCapacity: 1 })).toBe(
      packWeigher.capacityClass({ memoryCapacityMib: 2, vcpuCapacity: 2 }),
    );
  });
});
