import { placementPolicy } from './model';
import { placeOnce } from './place-once';
import { uniformHost } from './testing/random-cluster';

describe('placeOnce', () => {
  it('chooses the host with the lowest memory utilisation under spread', () => {
    const hosts = [
      uniformHost('a', { memoryMibAllocated: 65536 }),
      uniformHost('b', { memoryMibAllocated: 1024 }),
      uniformHost('c', { memoryMibAllocated: 32768 }),
    ];
    expect(placeOnce(hosts, { vcpus: 2, memoryMib: 4096 }, placementPolicy({ weigher: 'spread' }))).toEqual({
      ok: true,
      hostId: 'b',
    });
  });

  it("weighs utilisation against each host's own effective capacity under spread", () => {
    const hosts = [
      // 64 GiB free, 50 % used: 53 % after a 4 GiB VM.
      uniformHost('a', { memoryMibAllocated: 65536 }),
      // The same memory at 2:1 overcommit: 256 GiB effective, 64 GiB used: 27 % after.
      uniformHost('b', { memoryMibAllocated: 65536, memoryOvercommitRatio: 2 }),
    ];
    expect(placeOnce(hosts, { vcpus: 2, memoryMib: 4096 })).toEqual({ ok: true, hostId: 'b' });
  });

  it('chooses the fullest host that still fits under pack', () => {
    const hosts = [
      uniformHost('a', { memoryMibAllocated: 65536 }),
      uniformHost('b', { memoryMibAllocated: 129024 }), // 2048 MiB free: too little
      uniformHost('c', { memoryMibAllocated: 120000 }),
    ];
    expect(placeOnce(hosts, { vcpus: 2, memoryMib: 4096 }, placementPolicy({ weigher: 'pack' }))).toEqual({
      ok: true,
      hostId: 'c',
    });
  });

  it('uses the policy default of 4 vCPUs per core for a host without its own ratio', () => {
    const hosts = [uniformHost('a', { cpus: 2, vcpusAllocated: 6 })]; // 8 vCPU capacity, 2 free
    expect(placeOnce(hosts, { vcpus: 2, memoryMib: 1 }).ok).toBe(true);
    expect(placeOnce(hosts, { vcpus: 3, memoryMib: 1 }).ok).toBe(false);
  });

  it("uses a host's own overcommit ratios over the policy's", () => {
    const hosts = [
      uniformHost('a', { cpus: 2, cpuOvercommitRatio: 1, memoryMib: 4096, memoryOvercommitRatio: 1.5 }),
    ];
    expect(placeOnce(hosts, { vcpus: 3, memoryMib: 1 }).ok).toBe(false);
    expect(placeOnce(hosts, { vcpus: 2, memoryMib: 6144 }).ok).toBe(true);
  });

  it('does not memory-overcommit by default', () => {
    expect(placeOnce([uniformHost('a', { memoryMib: 4096 })], { vcpus: 1, memoryMib: 4097 }).ok).toBe(false);
  });

  it('explains why no host fits', () => {
    const hosts = [uniformHost('a', { state: 'DOWN' }), uniformHost('b', { memoryMibAllocated: 131072 })];
    expect(placeOnce(hosts, { vcpus: 2, memoryMib: 4096 })).toEqual({
      ok: false,
      rejections: [
        { filter: 'host-state', hosts: 1, reason: 'not ENABLED: 1 DOWN' },
        { filter: 'memory', hosts: 1, reason: 'need 4096 MiB free, best has 0 MiB' },
      ],
      message:
        'no host can run 2 vCPU / 4096 MiB: 1 host rejected by host-state (not ENABLED: 1 DOWN), ' +
        '1 by memory (need 4096 MiB free, best has 0 MiB)',
    });
  });

  it('answers "there are no hosts" for an empty host list', () => {
    const result = placeOnce([], { vcpus: 2, memoryMib: 4096 });
    expect(result.ok === false && result.message).toBe(
      'no host can run 2 vCPU / 4096 MiB: there are no hosts',
    );
  });
});
