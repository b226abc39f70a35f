import { SchedulerError, SchedulerErrorCode } from './errors';
import { placeOnce } from './place-once';
import { Scheduler } from './scheduler';
import { uniformHost } from './testing/random-cluster';

const small = { vcpus: 2, memoryMib: 4096 };

describe('Scheduler', () => {
  it('places on the host with the most free memory by default (spread)', () => {
    const scheduler = new Scheduler({
      hosts: [
        uniformHost('a', { memoryMibAllocated: 8192 }),
        uniformHost('b'),
        uniformHost('c', { memoryMibAllocated: 4096 }),
      ],
    });
    expect(scheduler.place(small)).toEqual({ ok: true, hostId: 'b' });
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
