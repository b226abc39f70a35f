import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ConvergenceSample, judgeConvergence } from '@flotilla/domain';
import { DriverMigrationParameters, DriverOutgoingStatus, DriverVmSpec } from '../driver';
import { SimDriver } from './sim-driver';
import { SIM_SETUP_MS } from './sim-outgoing';
import { simGuestMemoryLoad } from './sim-guest-load';
import { ManualSimTimers } from './sim-migration.testing';

// Real: the sim driver and the pre-copy model of @flotilla/domain, two driver instances (two sim hosts)
// with their own state directories. Fake: the clock (ManualSimTimers), so that every run is the same.

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

const vm = (id: string, extra: Partial<DriverVmSpec> = {}): DriverVmSpec => ({
  vmId: id,
  name: id,
  vcpus: 1,
  memoryMib: 512,
  boot: { kind: 'kernel', kernel: '/k', cmdline: 'console=ttyS0' },
  disks: [],
  nics: [],
  ...extra,
});
/** The demo guest rewriting 64 MiB at about 1 GB/s (HOST-NOTES §4). */
const dirtier = (id: string) =>
  vm(id, { boot: { kind: 'kernel', kernel: '/k', cmdline: 'console=ttyS0 demo.dirty=64' } });
/** QEMU 7.2's defaults: the case that never converges with a busy guest. */
const qemuDefaults: DriverMigrationParameters = {
  downtimeLimitMs: 300,
  bandwidthBytesPerSec: 128 * MiB,
  autoConverge: false,
  postCopy: false,
};

describe('sim driver live migration', () => {
  let dir: string;
  let timers: ManualSimTimers;
  let source: SimDriver;
  let destination: SimDriver;

  const host = async (name: string, memoryMib = 8192) => {
    const d = new SimDriver({ stateDir: path.join(dir, name), capacity: { cpus: 8, memoryMib }, timers });
    await d.recover();
    return d;
  };

  beforeEach(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sim-mig-'));
    timers = new ManualSimTimers();
    source = await host('h1');
    destination = await host('h2');
  });
  afterEach(async () => {
    await source.close();
    await destination.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  /** Prepares the destination and starts sending; returns the migration id. */
  async function start(spec: DriverVmSpec, parameters: DriverMigrationParameters, migrationId = 'm1') {
    await source.start(spec);
    const incoming = await destination.prepareIncoming(spec, {
      migrationId,
      listenHost: '127.0.0.1',
      receiveDiskIds: [],
      postCopy: parameters.postCopy,
    });
    await source.startOutgoing(spec.vmId, migrationId, incoming.migrationAddress, parameters);
    return migrationId;
  }

  /** Advances the clock in small steps, collecting one status per completed round, until `until` holds. */
  async function runUntil(vmId: string, until: (s: DriverOutgoingStatus) => boolean, maxModelMs = 120_000) {
    const perRound: DriverOutgoingStatus[] = [];
    let status = await source.outgoingStatus(vmId, 'm1', 0);
    for (let t = 0; t < maxModelMs && !until(status); t += 50) {
      timers.advance(50);
      status = await source.outgoingStatus(vmId, 'm1', 0);
      if (status.rounds > (perRound[perRound.length - 1]?.rounds ?? 0)) perRound.push(status);
    }
    return { status, perRound };
  }

  it('moves an idle VM: the destination runs it and the source forgets it', async () => {
    await start(vm('vm-1'), { ...qemuDefaults, bandwidthBytesPerSec: GiB });
    const { status } = await runUntil('vm-1', (s) => s.state === 'pre-switchover');
    expect(status).toMatchObject({ state: 'pre-switchover', rounds: 1 });
    await source.switchOver('vm-1', 'm1');
    const done = (await runUntil('vm-1', (s) => s.state === 'completed')).status;
    expect(done.memoryRemainingBytes).toBe(0);
    expect(done.memoryTransferredBytes).toBeGreaterThanOrEqual(512 * MiB);
    expect(done.downtimeMs).toBeGreaterThan(0);
    expect(done.downtimeMs).toBeLessThanOrEqual(300 + 10);
    expect(done.totalTimeMs).toBeGreaterThanOrEqual(done.downtimeMs);
    expect((await destination.finishIncoming('vm-1', 'm1', 30_000)).powerState).toBe('RUNNING');
    await source.finishOutgoing('vm-1', 'm1');
    expect(await source.status('vm-1')).toBeUndefined();
    expect(await destination.list()).toEqual([{ vmId: 'vm-1', powerState: 'RUNNING' }]);
  });

  it('keeps the source paused in pre-switchover until switchOver, and counts the wait as downtime', async () => {
    await start(vm('vm-1'), { ...qemuDefaults, bandwidthBytesPerSec: GiB });
    await runUntil('vm-1', (s) => s.state === 'pre-switchover');
    timers.advance(60_000);
    expect((await source.outgoingStatus('vm-1', 'm1', 0)).state).toBe('pre-switchover');
    expect((await source.status('vm-1'))?.powerState).toBe('PAUSED');
    await expect(source.unpause('vm-1')).rejects.toThrow('held by migration m1 (pre-switchover)');
    await source.switchOver('vm-1', 'm1');
    const { status } = await runUntil('vm-1', (s) => s.state === 'completed');
    expect(status.downtimeMs).toBeGreaterThanOrEqual(60_000);
  });

  it('switches over by itself when the switch is armed: no wait counted, and a cancel after it is refused', async () => {
    await start(vm('vm-1'), { ...qemuDefaults, bandwidthBytesPerSec: GiB, switchWhenReady: true });
    const { status } = await runUntil('vm-1', (s) => s.state === 'completed');
    expect(status.downtimeMs).toBeGreaterThan(0);
    expect(status.downtimeMs).toBeLessThanOrEqual(300 + 10);
    await expect(source.cancelOutgoing('vm-1', 'm1')).rejects.toThrow('past the switchover');
    await source.switchOver('vm-1', 'm1'); // repeating the switch is success
    expect((await destination.finishIncoming('vm-1', 'm1', 30_000)).powerState).toBe('RUNNING');
  });

  it('never converges for a guest dirtying 64 MiB at 1 GB/s under QEMU defaults, and says so within 3 rounds', async () => {
    await start(dirtier('vm-1'), qemuDefaults);
    const { status, perRound } = await runUntil('vm-1', (s) => s.rounds >= 12);
    expect(status.state).toBe('active');
    expect(status.memoryRemainingBytes).toBeGreaterThanOrEqual(64 * MiB);
    const samples: ConvergenceSample[] = perRound.map((s) => ({
      rounds: s.rounds,
      remainingBytes: s.memoryRemainingBytes,
      dirtyRateBytesPerSec: s.dirtyRateBytesPerSec,
      transferRateBytesPerSec: s.transferRateBytesPerSec,
      expectedDowntimeMs: s.expectedDowntimeMs,
      downtimeLimitMs: 300,
    }));
    expect(judgeConvergence(samples.slice(0, 3)).state).toBe('not-converging');
  });

  it('converges for the same guest with auto-converge, throttling its vCPUs', async () => {
    await start(dirtier('vm-1'), { ...qemuDefaults, autoConverge: true });
    const { status } = await runUntil('vm-1', (s) => s.state !== 'active' && s.state !== 'setup');
    expect(status.state).toBe('pre-switchover');
    expect(status.cpuThrottlePercent).toBeGreaterThanOrEqual(20);
  });

  it('converges for the same guest at 4 GiB/s', async () => {
    await start(dirtier('vm-1'), { ...qemuDefaults, bandwidthBytesPerSec: 4 * GiB });
    const { status } = await runUntil('vm-1', (s) => s.state !== 'active' && s.state !== 'setup');
    expect(status.state).toBe('pre-switchover');
  });

  it('applies a raised bandwidth from the next round on, and then converges', async () => {
    await start(dirtier('vm-1'), qemuDefaults);
    await runUntil('vm-1', (s) => s.rounds >= 3);
    await source.tuneOutgoing('vm-1', 'm1', { bandwidthBytesPerSec: 4 * GiB });
    const { status } = await runUntil('vm-1', (s) => s.state !== 'active');
    expect(status.state).toBe('pre-switchover');
  });

  it('cancels: the VM runs on the source again and the destination frees the incoming VM', async () => {
    await start(dirtier('vm-1'), { ...qemuDefaults, bandwidthBytesPerSec: 4 * GiB });
    await runUntil('vm-1', (s) => s.state === 'pre-switchover');
    await source.cancelOutgoing('vm-1', 'm1');
    expect((await source.outgoingStatus('vm-1', 'm1', 0)).state).toBe('cancelled');
    expect((await source.status('vm-1'))?.powerState).toBe('RUNNING');
    await destination.abortIncoming('vm-1', 'm1');
    expect(await destination.list()).toEqual([]);
    await source.cancelOutgoing('vm-1', 'm1');
    await expect(source.finishOutgoing('vm-1', 'm1')).rejects.toThrow('is cancelled, not completed');
  });

  it('refuses to cancel after the switchover', async () => {
    await start(vm('vm-1'), { ...qemuDefaults, bandwidthBytesPerSec: GiB });
    await runUntil('vm-1', (s) => s.state === 'pre-switchover');
    await source.switchOver('vm-1', 'm1');
    await runUntil('vm-1', (s) => s.state === 'completed');
    await expect(source.cancelOutgoing('vm-1', 'm1')).rejects.toMatchObject({
      kind: 'invalid-state',
      message: 'migration m1 is completed: past the switchover, the destination runs the VM',
    });
  });

  it('switches a non-converging migration to post-copy, which completes with a short downtime', async () => {
    await start(dirtier('vm-1'), { ...qemuDefaults, postCopy: true });
    await runUntil('vm-1', (s) => s.rounds >= 3);
    await source.tuneOutgoing('vm-1', 'm1', { startPostCopy: true });
    expect((await source.outgoingStatus('vm-1', 'm1', 0)).state).toBe('postcopy-active');
    await expect(source.cancelOutgoing('vm-1', 'm1')).rejects.toThrow('past the switchover');
    const { status } = await runUntil('vm-1', (s) => s.state === 'completed');
    expect(status.downtimeMs).toBeLessThan(10);
    expect(status.postCopyRequests).toBeGreaterThan(0);
    expect(status.memoryRemainingBytes).toBe(0);
    await destination.finishIncoming('vm-1', 'm1', 30_000);
    await source.finishOutgoing('vm-1', 'm1');
    expect(await destination.list()).toEqual([{ vmId: 'vm-1', powerState: 'RUNNING' }]);
  });

  it('refuses the switch to post-copy when the migration was started without it', async () => {
    await start(dirtier('vm-1'), qemuDefaults);
    await runUntil('vm-1', (s) => s.state === 'active');
    await expect(source.tuneOutgoing('vm-1', 'm1', { startPostCopy: true })).rejects.toThrow(
      'started without post-copy',
    );
  });

  it('refuses an incoming VM that does not fit the destination, and frees the memory of an aborted one', async () => {
    const small = await host('h3', 1024);
    const incoming = { listenHost: '127.0.0.1', receiveDiskIds: [], postCopy: false };
    await small.prepareIncoming(vm('vm-a', { memoryMib: 768 }), { ...incoming, migrationId: 'ma' });
    await expect(
      small.prepareIncoming(vm('vm-b', { memoryMib: 512 }), { ...incoming, migrationId: 'mb' }),
    ).rejects.toMatchObject({
      kind: 'capacity',
      message: expect.stringContaining('256 MiB of memory free'),
    });
    await small.abortIncoming('vm-a', 'ma');
    await small.prepareIncoming(vm('vm-b', { memoryMib: 512 }), { ...incoming, migrationId: 'mb' });
  });

  it('answers a repeated prepareIncoming with the same incoming VM, and refuses one for another migration', async () => {
    const options = { migrationId: 'm1', listenHost: '10.0.0.2', receiveDiskIds: [], postCopy: false };
    const first = await destination.prepareIncoming(vm('vm-1'), options);
    expect(first).toMatchObject({ migrationAddress: 'sim:10.0.0.2/m1', status: { powerState: 'PAUSED' } });
    expect(await destination.prepareIncoming(vm('vm-1'), options)).toEqual(first);
    await expect(destination.prepareIncoming(vm('vm-1'), { ...options, migrationId: 'm2' })).rejects.toThrow(
      'already arriving here by migration m1',
    );
  });

  it('refuses a second migration of a VM, naming the one in progress', async () => {
    await start(vm('vm-1'), qemuDefaults);
    await expect(source.startOutgoing('vm-1', 'm2', 'sim:127.0.0.1/m2', qemuDefaults)).rejects.toThrow(
      'vm vm-1 is in migration m1',
    );
    await source.startOutgoing('vm-1', 'm1', 'sim:127.0.0.1/m1', qemuDefaults);
  });

  it('refuses a destination that is not a sim host address for this migration', async () => {
    await source.start(vm('vm-1'));
    await expect(source.startOutgoing('vm-1', 'm1', '127.0.0.1:49152', qemuDefaults)).rejects.toMatchObject({
      kind: 'invalid-spec',
    });
    await expect(source.startOutgoing('vm-1', 'm1', 'sim:127.0.0.1/m9', qemuDefaults)).rejects.toThrow(
      'the sim migrates only to sim hosts',
    );
  });

  it('fails the migration when the VM is destroyed on the source', async () => {
    await start(dirtier('vm-1'), qemuDefaults);
    await runUntil('vm-1', (s) => s.state === 'active');
    await source.destroy('vm-1');
    const status = await source.outgoingStatus('vm-1', 'm1', 0);
    expect(status).toMatchObject({ state: 'failed', error: 'the VM was destroyed on the source' });
  });

  it('mirrors disks before memory: the allocated bytes at the bandwidth, then READY', async () => {
    const disk = path.join(dir, 'root.qcow2');
    fs.writeFileSync(disk, Buffer.alloc(MiB, 1));
    const spec = vm('vm-1', { disks: [{ id: 'vbd-1', path: disk, format: 'qcow2' }] });
    await source.start(spec);
    const incoming = await destination.prepareIncoming(spec, {
      migrationId: 'm1',
      listenHost: '127.0.0.1',
      receiveDiskIds: ['vbd-1'],
      postCopy: false,
    });
    expect(incoming.nbdExports).toEqual({ 'vbd-1': 'sim-vbd-1' });
    const target = { diskId: 'vbd-1', nbdAddress: incoming.nbdAddress!, exportName: 'sim-vbd-1' };
    await source.startDiskMirror('vm-1', 'm1', [target], MiB);
    await expect(source.startOutgoing('vm-1', 'm1', incoming.migrationAddress, qemuDefaults)).rejects.toThrow(
      'not mirrored yet',
    );
    timers.advance(1000);
    const mirrored = await source.outgoingStatus('vm-1', 'm1', 0);
    expect(mirrored).toMatchObject({ state: 'mirroring', disks: [{ diskId: 'vbd-1', ready: true }] });
    expect(mirrored.disks[0].doneBytes).toBeGreaterThanOrEqual(MiB);
    await source.startOutgoing('vm-1', 'm1', incoming.migrationAddress, qemuDefaults);
    expect((await source.outgoingStatus('vm-1', 'm1', 0)).state).toBe('setup');
  });

  it('refuses to mirror a disk the VM does not have', async () => {
    await source.start(vm('vm-1'));
    const target = { diskId: 'vbd-9', nbdAddress: 'sim:127.0.0.1/m1/nbd', exportName: 'x' };
    await expect(source.startDiskMirror('vm-1', 'm1', [target], MiB)).rejects.toMatchObject({
      kind: 'not-found',
    });
  });

  it('keeps an incoming VM across an agent restart, and forgets outgoing migrations (the VM runs on)', async () => {
    await start(vm('vm-1'), { ...qemuDefaults, bandwidthBytesPerSec: GiB });
    await runUntil('vm-1', (s) => s.state === 'pre-switchover');
    await source.recover();
    await destination.recover();
    await expect(source.outgoingStatus('vm-1', 'm1', 0)).rejects.toMatchObject({ kind: 'not-found' });
    expect((await source.status('vm-1'))?.powerState).toBe('RUNNING');
    expect(await destination.list()).toEqual([{ vmId: 'vm-1', powerState: 'PAUSED' }]);
    await expect(destination.abortIncoming('vm-1', 'other')).rejects.toThrow('not other');
    await destination.abortIncoming('vm-1', 'm1');
    expect(await destination.list()).toEqual([]);
  });

  it('resolves a long poll as soon as the state or the round changes, not at its end', async () => {
    await start(dirtier('vm-1'), qemuDefaults);
    const settled: DriverOutgoingStatus[] = [];
    void source.outgoingStatus('vm-1', 'm1', 10_000).then((s) => settled.push(s));
    timers.advance(1);
    await Promise.resolve();
    expect(settled).toEqual([]);
    timers.advance(SIM_SETUP_MS);
    await new Promise((r) => setImmediate(r));
    expect(settled.map((s) => s.state)).toEqual(['active']);
    void source.outgoingStatus('vm-1', 'm1', 10_000).then((s) => settled.push(s));
    timers.advance(4000);
    await new Promise((r) => setImmediate(r));
    expect(settled.map((s) => s.rounds)).toEqual([0, 1]);
  });

  it('runs in scaled real time with the default timers', async () => {
    const real = new SimDriver({
      stateDir: path.join(dir, 'real'),
      capacity: { cpus: 4, memoryMib: 8192 },
      migrationTimeScale: 0.001,
    });
    await real.recover();
    await real.start(vm('vm-1'));
    await real.startOutgoing('vm-1', 'm1', 'sim:127.0.0.1/m1', {
      ...qemuDefaults,
      bandwidthBytesPerSec: GiB,
    });
    let status = await real.outgoingStatus('vm-1', 'm1', 0);
    while (status.state !== 'pre-switchover') status = await real.outgoingStatus('vm-1', 'm1', 1000);
    await real.switchOver('vm-1', 'm1');
    while (status.state !== 'completed') status = await real.outgoingStatus('vm-1', 'm1', 1000);
    expect(status.rounds).toBe(1);
    await real.close();
  });
});

describe('sim guest memory load', () => {
  it('reads demo.dirty as a working set rewritten at about 1 GB/s', () => {
    expect(simGuestMemoryLoad(dirtier('x'))).toEqual({
      memoryBytes: 512 * MiB,
      dirtyRateBytesPerSec: 1e9,
      dirtyWorkingSetBytes: 64 * MiB,
    });
  });

  it('slows the rate by demo.dsleep between passes', () => {
    const load = simGuestMemoryLoad(
      vm('x', { boot: { kind: 'kernel', kernel: '/k', cmdline: 'demo.dirty=64 demo.dsleep=1' } }),
    );
    expect(load.dirtyRateBytesPerSec).toBeLessThan(64 * MiB);
  });

  it('treats a bad demo.dirty, or a disk-booted VM, as idle', () => {
    const bad = simGuestMemoryLoad(
      vm('x', { boot: { kind: 'kernel', kernel: '/k', cmdline: 'demo.dirty=lots' } }),
    );
    expect(bad.dirtyWorkingSetBytes).toBeUndefined();
    expect(simGuestMemoryLoad(vm('x', { boot: { kind: 'disk' } })).dirtyWorkingSetBytes).toBeUndefined();
  });
});
