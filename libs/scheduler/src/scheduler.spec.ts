import { SchedulerError, SchedulerErrorCode } from './errors';
import { placeOnce } from './place-once';
import { Scheduler } from './scheduler';
import { uniformHost } from './testing/random-cluster';

const small = { vcpus: 2, memoryMib: 4096 };

describe('Scheduler', () => {
  it('places on the host with the lowest memory utilisation by default (spread)', () => {
    const scheduler = new Scheduler({
      hosts: [
        uniformHost('a', { memoryMibAllocated: 8192 }),
        uniformHost('b'),
        uniformHost('c', { memoryMibAllocated: 4096 }),
      ],
    });
    expect(scheduler.place(small)).toEqual({ ok: true, hostId: 'b' });
  });

  it('places by utilisation after placement across host sizes, as the full scan does', () => {
    const hosts = [
      uniformHost('small', { cpus: 32, memoryMib: 131072 }),
      uniformHost('big', { cpus: 128, memoryMib: 1048576, memoryMibAllocated: 65536 }),
    ];
    const scheduler = new Scheduler({ hosts });
    // 4 GiB: 3 % on the empty small host against 7 % on the big one; 64 GiB: 50 % against 12.5 %.
    expect(scheduler.place(small)).toEqual({ ok: true, hostId: 'small' });
    expect(scheduler.place({ vcpus: 8, memoryMib: 65536 })).toEqual({ ok: true, hostId: 'big' });
    expect(placeOnce(hosts, { vcpus: 8, memoryMib: 65536 })).toEqual({ ok: true, hostId: 'big' });
    expect(scheduler.stats()).toMatchObject({ indexed: 2, fullScans: 0 });
  });

  it('looks past a class whose best host fails a filter', () => {
    const scheduler = new Scheduler({
      hosts: [
        uniformHost('big-a', { memoryMib: 1048576, antiAffinityGroups: { web: 1 } }),
        uniformHost('big-b', { memoryMib: 1048576, memoryMibAllocated: 524288 }),
        uniformHost('small', { memoryMib: 131072, memoryMibAllocated: 32768 }),
      ],
    });
    // big-a is best but runs a web VM; big-b (50 %) ranks below small (25 %).
    expect(scheduler.place({ ...small, antiAffinityGroup: 'web' })).toEqual({ ok: true, hostId: 'small' });
  });

  it('does not change any allocation when it places', () => {
    const scheduler = new Scheduler({ hosts: [uniformHost('a')] });
    const before = scheduler.hosts();
    scheduler.place(small);
    expect(scheduler.hosts()).toEqual(before);
  });

  it('moves to the next host once a reservation makes it the emptiest', () => {
    const scheduler = new Scheduler({ hosts: [uniformHost('a'), uniformHost('b')] });
    scheduler.reserve('a', small);
    expect(scheduler.place(small)).toEqual({ ok: true, hostId: 'b' });
  });

  it('keeps filling the same host under pack', () => {
    const scheduler = new Scheduler({
      policy: { weigher: 'pack' },
      hosts: [uniformHost('a'), uniformHost('b')],
    });
    scheduler.reserve('b', small);
    expect(scheduler.place(small)).toEqual({ ok: true, hostId: 'b' });
  });

  it('records the anti-affinity group on reserve and forgets it on release', () => {
    const scheduler = new Scheduler({ hosts: [uniformHost('a')] });
    const web = { ...small, antiAffinityGroup: 'web' };
    scheduler.reserve('a', web);
    expect(scheduler.host('a')?.antiAffinityGroups).toEqual({ web: 1 });
    expect(scheduler.place(web).ok).toBe(false);
    scheduler.release('a', web);
    expect(scheduler.host('a')?.antiAffinityGroups).toEqual({});
    expect(scheduler.place(web)).toEqual({ ok: true, hostId: 'a' });
  });

  it('gives back capacity on release', () => {
    const scheduler = new Scheduler({ hosts: [uniformHost('a', { memoryMib: 4096 })] });
    scheduler.reserve('a', small);
    expect(scheduler.place(small).ok).toBe(false);
    scheduler.release('a', small);
    expect(scheduler.host('a')).toMatchObject({ vcpusAllocated: 0, memoryMibAllocated: 0 });
    expect(scheduler.place(small).ok).toBe(true);
  });

  it('stops placing on a host upserted as MAINTENANCE and places on it again once ENABLED', () => {
    const scheduler = new Scheduler({ hosts: [uniformHost('a')] });
    scheduler.upsertHost(uniformHost('a', { state: 'MAINTENANCE' }));
    const refused = scheduler.place(small);
    expect(refused.ok === false && refused.message).toBe(
      'no host can run 2 vCPU / 4096 MiB: 1 host rejected by host-state (not ENABLED: 1 MAINTENANCE)',
    );
    scheduler.upsertHost(uniformHost('a'));
    expect(scheduler.place(small)).toEqual({ ok: true, hostId: 'a' });
  });

  it('replaces labels on upsert', () => {
    const scheduler = new Scheduler({ hosts: [uniformHost('a', { labels: { zone: 'az1' } })] });
    scheduler.upsertHost(uniformHost('a', { labels: { zone: 'az2' } }));
    expect(scheduler.place({ ...small, requiredLabels: { zone: 'az1' } }).ok).toBe(false);
    expect(scheduler.place({ ...small, requiredLabels: { zone: 'az2' } })).toEqual({ ok: true, hostId: 'a' });
  });

  it('forgets a removed host', () => {
    const scheduler = new Scheduler({
      hosts: [uniformHost('a'), uniformHost('b', { memoryMibAllocated: 1024 })],
    });
    expect(scheduler.removeHost('a')).toBe(true);
    expect(scheduler.removeHost('a')).toBe(false);
    expect(scheduler.size).toBe(1);
    expect(scheduler.place(small)).toEqual({ ok: true, hostId: 'b' });
  });

  it('says there are no hosts when it holds none', () => {
    const result = new Scheduler().place(small);
    expect(result.ok === false && result.message).toBe(
      'no host can run 2 vCPU / 4096 MiB: there are no hosts',
    );
  });

  it('explains a refusal exactly as placeOnce does', () => {
    const hosts = [
      uniformHost('a', { state: 'DOWN' }),
      uniformHost('b', { memoryMibAllocated: 130000 }),
      uniformHost('c', { cpus: 1, vcpusAllocated: 3 }),
    ];
    expect(new Scheduler({ hosts }).place(small)).toEqual(placeOnce(hosts, small));
  });

  it('finds a host carrying a rare label among many that do not', () => {
    const hosts = Array.from({ length: 400 }, (_, index) =>
      uniformHost(`h${index}`, { labels: { zone: 'az1' } }),
    );
    hosts.push(uniformHost('gpu-host', { memoryMibAllocated: 100000, labels: { zone: 'az1', gpu: 'a100' } }));
    const scheduler = new Scheduler({ hosts });
    expect(scheduler.place({ ...small, requiredLabels: { gpu: 'a100', zone: 'az1' } })).toEqual({
      ok: true,
      hostId: 'gpu-host',
    });
    expect(scheduler.stats()).toEqual({ decisions: 1, indexed: 1, fullScans: 0, indexMisses: 0 });
  });

  it('refuses to reserve on an unknown host', () => {
    const scheduler = new Scheduler();
    expect(() => scheduler.reserve('nope', small)).toThrow(
      expect.objectContaining({ code: SchedulerErrorCode.UnknownHost, resource: 'host nope' }),
    );
  });

  it('refuses to release more than the host has allocated, leaving the allocation unchanged', () => {
    const scheduler = new Scheduler({ hosts: [uniformHost('a')] });
    scheduler.reserve('a', small);
    expect(() => scheduler.release('a', { vcpus: 4, memoryMib: 4096 })).toThrow(SchedulerError);
    expect(scheduler.host('a')).toMatchObject({ vcpusAllocated: 2, memoryMibAllocated: 4096 });
  });

  it('refuses a host whose size is not a whole number, leaving the index exact', () => {
    expect(() => new Scheduler({ hosts: [uniformHost('a', { memoryMibAllocated: 1.5 })] })).toThrow(
      expect.objectContaining({
        code: SchedulerErrorCode.InvalidHost,
        resource: 'host a memoryMibAllocated',
      }),
    );
  });

  it('refuses a host ratio outside 1/1024 to 1024', () => {
    expect(() => new Scheduler({ hosts: [uniformHost('a', { memoryOvercommitRatio: 1e-9 })] })).toThrow(
      expect.objectContaining({
        code: SchedulerErrorCode.InvalidHost,
        resource: 'host a memoryOvercommitRatio',
      }),
    );
  });

  it('refuses a reservation that would allocate more than 2^50', () => {
    const scheduler = new Scheduler({ hosts: [uniformHost('a', { memoryMibAllocated: 2 ** 50 })] });
    expect(() => scheduler.reserve('a', { vcpus: 1, memoryMib: 1 })).toThrow(
      expect.objectContaining({ code: SchedulerErrorCode.InvalidRequest, resource: 'host a allocation' }),
    );
    expect(scheduler.host('a')).toMatchObject({ vcpusAllocated: 0, memoryMibAllocated: 2 ** 50 });
  });

  it('answers a request with a fractional size from the full scan, not counted as an index miss', () => {
    const scheduler = new Scheduler({
      hosts: [uniformHost('a'), uniformHost('b', { memoryMibAllocated: 1 })],
    });
    expect(scheduler.place({ vcpus: 1, memoryMib: 0.5 })).toEqual({ ok: true, hostId: 'a' });
    expect(scheduler.stats()).toEqual({ decisions: 1, indexed: 0, fullScans: 1, indexMisses: 0 });
  });

  it('refuses a host whose capacity is not a finite number', () => {
    expect(() => new Scheduler({ hosts: [uniformHost('a', { memoryMib: Number.NaN })] })).toThrow(
      expect.objectContaining({ code: SchedulerErrorCode.InvalidHost, resource: 'host a memoryMib' }),
    );
  });

  it('refuses a reservation with a negative size', () => {
    const scheduler = new Scheduler({ hosts: [uniformHost('a')] });
    expect(() => scheduler.reserve('a', { vcpus: -1, memoryMib: 1 })).toThrow(
      expect.objectContaining({ code: SchedulerErrorCode.InvalidRequest }),
    );
  });

  it('refuses a policy with a zero overcommit ratio', () => {
    expect(() => new Scheduler({ policy: { cpuOvercommitRatio: 0 } })).toThrow(
      expect.objectContaining({ code: SchedulerErrorCode.InvalidPolicy }),
    );
  });

  it('answers an invalid request with a refusal instead of throwing', () => {
    const scheduler = new Scheduler({ hosts: [uniformHost('a')] });
    const result = scheduler.place({ vcpus: 1, memoryMib: Number.NaN });
    expect(result.ok === false && result.rejections.map((rejection) => rejection.filter)).toEqual(['memory']);
  });
});
