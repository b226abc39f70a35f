import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { postCopySafe } from '@flotilla/domain';
import { DriverOutgoingState, DriverOutgoingStatus, DriverVmSpec, DriverVmStatus } from '../driver';
import {
  DEMO_READY_MARKER,
  DEMO_TICK_LINE,
  demoImageForTests,
  demoImagePaths,
  PROBE_MARKER,
} from './demo-image';
import { QemuDriver } from './qemu-driver';
import { isProcessAlive } from './qemu-process';
import { describeWithRealQemu } from './real-qemu.testing';

describeWithRealQemu('qemu driver live migration on real QEMU', () => {
  // Two QemuDriver instances with their own state directories are two hosts; the QEMUs stream memory and
  // disk writes to each other over loopback TCP. The guest's own TICK counter, console and disk are the
  // evidence. Nothing is faked.

  jest.setTimeout(300_000);

  const MiB = 1024 * 1024;
  let image: { kernel: string; initrd: string };
  let srcDir: string;
  let dstDir: string;
  let srDir: string;
  let source: QemuDriver;
  let dest: QemuDriver;
  const unrequested: { host: string; status: DriverVmStatus }[] = [];
  const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

  async function newDriver(stateDir: string, host: string): Promise<QemuDriver> {
    const driver = await QemuDriver.create({
      stateDir,
      accelerator: 'auto',
      probeGuest: {
        kernel: image.kernel,
        initrd: image.initrd,
        cmdline: 'console=ttyS0 panic=-1 demo.probe=1',
        marker: PROBE_MARKER,
      },
    });
    driver.onUnrequestedChange((status) => unrequested.push({ host, status }));
    return driver;
  }

  function specFor(
    name: string,
    options: { dirtyMib?: number; memoryMib?: number; disks?: DriverVmSpec['disks']; web?: boolean } = {},
  ): DriverVmSpec {
    const dirty = options.dirtyMib ? ` demo.dirty=${options.dirtyMib}` : '';
    return {
      vmId: `${name}-${process.pid}`,
      name,
      vcpus: 1,
      memoryMib: options.memoryMib ?? 160,
      boot: {
        kind: 'kernel',
        kernel: image.kernel,
        initrd: image.initrd,
        cmdline: `console=ttyS0 panic=-1 demo.name=${name}${dirty}`,
      },
      disks: options.disks ?? [],
      nics: options.web ? [{ mac: '52:54:00:00:00:07', forwards: [{ guestPort: 80 }] }] : [],
    };
  }

  const serial = (stateDir: string, vmId: string) => {
    try {
      return fs.readFileSync(path.join(stateDir, vmId, 'serial.log'), 'utf8');
    } catch {
      return '';
    }
  };
  const ticks = (text: string) =>
    [...text.slice(0, text.lastIndexOf('\n') + 1).matchAll(DEMO_TICK_LINE)].map((m) => Number(m[1]));
  const lastTick = (stateDir: string, vmId: string) => ticks(serial(stateDir, vmId)).pop() ?? 0;

  /** Polls `probe` until it gives a value; on timeout the error adds what `explain` says of the state. */
  async function until<T>(
    what: string,
    probe: () => T | undefined | Promise<T | undefined>,
    timeoutMs = 60_000,
    explain?: () => Promise<string>,
  ) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = await probe();
      if (v !== undefined) return v;
      if (Date.now() > deadline) {
        const state = explain ? `; ${await explain().catch((e: Error) => e.message)}` : '';
        throw new Error(`${what}: not within ${timeoutMs} ms${state}`);
      }
      await sleep(200);
    }
  }

  /** A guest that stopped counting: its QEMU's state and the end of its console. */
  const guestState = (driver: QemuDriver, stateDir: string, vmId: string) => async () =>
    `QEMU ${JSON.stringify(await driver.status(vmId))}; console ends ${JSON.stringify(serial(stateDir, vmId).slice(-600))}`;

  /** Boots the VM on the source and waits until the guest counts (and dirties memory, if asked). */
  async function bootOnSource(spec: DriverVmSpec): Promise<void> {
    await source.start(spec);
    await until(
      'DEMO-READY',
      () => (serial(srcDir, spec.vmId).includes(DEMO_READY_MARKER) ? true : undefined),
      120_000,
    );
    await until('two TICKs', () => (lastTick(srcDir, spec.vmId) >= 2 ? true : undefined));
  }

  /** Long-polls the source until the migration reaches one of `states`; fails on a state past them. */
  async function waitOutgoing(
    vmId: string,
    migrationId: string,
    states: DriverOutgoingState[],
    timeoutMs = 120_000,
    seen: DriverOutgoingState[] = [],
  ): Promise<DriverOutgoingStatus> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const s = await source.outgoingStatus(vmId, migrationId, 2_000);
      seen.push(s.state);
      if (states.includes(s.state)) return s;
      if (['failed', 'cancelled', 'completed'].includes(s.state))
        throw new Error(
          `migration ${migrationId} is ${s.state} (${s.error ?? ''}), expected ${states.join('/')}`,
        );
      if (Date.now() > deadline)
        throw new Error(`migration ${migrationId} still ${s.state} after ${timeoutMs} ms`);
    }
  }

  const params = (over: Partial<Parameters<QemuDriver['startOutgoing']>[3]> = {}) => ({
    downtimeLimitMs: 300,
    bandwidthBytesPerSec: 1024 * MiB,
    autoConverge: false,
    postCopy: false,
    ...over,
  });

  /** Prepare on the destination and start memory on the source. */
  async function begin(spec: DriverVmSpec, migrationId: string, p = params()) {
    const incoming = await dest.prepareIncoming(spec, {
      migrationId,
      listenHost: '127.0.0.1',
      receiveDiskIds: [],
      postCopy: p.postCopy,
    });
    await source.startOutgoing(spec.vmId, migrationId, incoming.migrationAddress, p);
    return incoming;
  }

  /** Switch-over and both hosts' cleanup, after the source waits in pre-switchover. */
  async function complete(vmId: string, migrationId: string): Promise<DriverOutgoingStatus> {
    await source.switchOver(vmId, migrationId);
    const done = await waitOutgoing(vmId, migrationId, ['completed']);
    expect((await dest.finishIncoming(vmId, migrationId, 60_000)).powerState).toBe('RUNNING');
    await source.finishOutgoing(vmId, migrationId);
    return done;
  }

  function httpGet(hostAddress: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const req = http.get(`http://${hostAddress}/cgi-bin/status`, { timeout: 10_000 }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve(body));
      });
      req.on('error', reject);
      req.on('timeout', () => req.destroy(new Error('HTTP timeout')));
    });
  }

  const qemuOf = (stateDir: string, vmId: string): number | undefined => {
    try {
      const pid = Number(fs.readFileSync(path.join(stateDir, vmId, 'qemu.pid'), 'utf8').trim());
      return isProcessAlive(pid) ? pid : undefined;
    } catch {
      return undefined;
    }
  };

  function killOurQemus(): void {
    for (const p of fs.readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
      try {
        const cmd = fs.readFileSync(`/proc/${p}/cmdline`, 'utf8');
        if (cmd.startsWith('qemu-system') && (cmd.includes(srcDir) || cmd.includes(dstDir)))
          process.kill(Number(p), 'SIGKILL');
      } catch {
        // gone already
      }
    }
  }

  beforeAll(async () => {
    const built = await demoImageForTests();
    image = demoImagePaths(built.catalogueDir, built);
    srcDir = fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-mig-a-'));
    dstDir = fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-mig-b-'));
    srDir = fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-mig-sr-'));
    source = await newDriver(srcDir, 'source');
    dest = await newDriver(dstDir, 'destination');
  });

  afterAll(async () => {
    await source?.close().catch(() => undefined);
    await dest?.close().catch(() => undefined);
    killOurQemus();
    for (const d of [srcDir, dstDir, srDir]) if (d) fs.rmSync(d, { recursive: true, force: true });
  });

  it('declares live migration, and post-copy where userfaultfd is usable', () => {
    expect(source.capabilities()).toMatchObject({ liveMigration: true });
    // Post-copy needs userfaultfd, and is refused under TCG, where QEMU's post-copy corrupts some guests.
    expect(source.capabilities().postCopy).toBe(
      fs.existsSync('/proc/sys/vm/unprivileged_userfaultfd') &&
        postCopySafe(source.capabilities().accelerator),
    );
  });

  it('moves an idle VM: the guest counts on at the destination without a restart, and the source is gone', async () => {
    const spec = specFor('idle', { web: true });
    const vmId = spec.vmId;
    await bootOnSource(spec);
    const incoming = await begin(spec, 'mig-idle');
    expect(incoming.status.powerState).toBe('PAUSED');
    expect((await dest.list()).find((v) => v.vmId === vmId)?.powerState).toBe('PAUSED');
    const sourceWeb = (await source.status(vmId))!.forwards![0].hostAddress;
    expect(incoming.status.forwards![0].hostAddress).not.toBe(sourceWeb);
    await waitOutgoing(vmId, 'mig-idle', ['pre-switchover']);
    const before = lastTick(srcDir, vmId);

    const done = await complete(vmId, 'mig-idle');
    expect(done).toMatchObject({ state: 'completed' });
    expect(done.totalTimeMs).toBeGreaterThan(0);
    expect(done.downtimeMs).toBeGreaterThan(0);
    expect(done.memoryTotalBytes).toBeGreaterThanOrEqual(160 * MiB);
    expect(done.bytesTransferred).toBeGreaterThan(0);
    expect(done.rounds).toBeGreaterThanOrEqual(1);

    // The counter goes on from where it was: the same boot, continued.
    await until('TICKs at the destination', () => (lastTick(dstDir, vmId) > before + 1 ? true : undefined));
    expect(ticks(serial(dstDir, vmId))[0]).toBeGreaterThanOrEqual(before);
    expect(serial(dstDir, vmId)).not.toContain(DEMO_READY_MARKER);
    const page = JSON.parse(await httpGet(incoming.status.forwards![0].hostAddress)) as { tick: number };
    expect(page.tick).toBeGreaterThan(before);

    // The destination has an ordinary VM; the source has nothing left of it.
    expect(await dest.status(vmId)).toMatchObject({ powerState: 'RUNNING' });
    expect(fs.existsSync(path.join(dstDir, vmId, 'migration.json'))).toBe(false);
    expect(await source.status(vmId)).toBeUndefined();
    expect(fs.existsSync(path.join(srcDir, vmId))).toBe(false);
    // Repeating the last steps is success.
    await source.finishOutgoing(vmId, 'mig-idle');
    expect((await dest.finishIncoming(vmId, 'mig-idle', 1_000)).powerState).toBe('RUNNING');
    expect(unrequested.filter((u) => u.status.vmId === vmId)).toEqual([]);
    await dest.destroy(vmId);
  });

  it('holds the source in pre-switchover until switchOver, and refuses a second migration meanwhile', async () => {
    const spec = specFor('held');
    const vmId = spec.vmId;
    await bootOnSource(spec);
    const incoming = await begin(spec, 'mig-held');
    await waitOutgoing(vmId, 'mig-held', ['pre-switchover']);
    // Nothing moves by itself: still waiting a while later, the guest paused on both sides.
    expect((await source.outgoingStatus(vmId, 'mig-held', 3_000)).state).toBe('pre-switchover');
    expect((await source.status(vmId))!.powerState).toBe('PAUSED');
    expect((await dest.status(vmId))!.powerState).toBe('PAUSED');
    await expect(source.finishOutgoing(vmId, 'mig-held')).rejects.toMatchObject({ kind: 'invalid-state' });

    // Idempotent for its id; another migration of the VM is refused, naming this one.
    expect(
      await dest.prepareIncoming(spec, {
        migrationId: 'mig-held',
        listenHost: '127.0.0.1',
        receiveDiskIds: [],
        postCopy: false,
      }),
    ).toMatchObject({ migrationAddress: incoming.migrationAddress });
    await expect(
      dest.prepareIncoming(spec, {
        migrationId: 'other',
        listenHost: '127.0.0.1',
        receiveDiskIds: [],
        postCopy: false,
      }),
    ).rejects.toMatchObject({ kind: 'invalid-state', message: expect.stringContaining('mig-held') });
    await expect(
      source.startOutgoing(vmId, 'other', incoming.migrationAddress, params()),
    ).rejects.toMatchObject({ kind: 'invalid-state', message: expect.stringContaining('mig-held') });

    await complete(vmId, 'mig-held');
    // A VM that runs on the destination as an ordinary VM cannot be received there again.
    await expect(
      dest.prepareIncoming(spec, {
        migrationId: 'again',
        listenHost: '127.0.0.1',
        receiveDiskIds: [],
        postCopy: false,
      }),
    ).rejects.toMatchObject({ kind: 'invalid-state' });
    await dest.destroy(vmId);
  });

  it('switches over by itself when the switch is armed, and refuses a cancel after it', async () => {
    const spec = specFor('armed');
    const vmId = spec.vmId;
    await bootOnSource(spec);
    await begin(spec, 'mig-armed', params({ switchWhenReady: true }));
    const before = lastTick(srcDir, vmId);
    // Nobody calls switchOver: the driver continued from pre-switchover at QEMU's event. The status long
    // poll waits through that pause instead of answering it (nobody needs to act on it).
    const seen: DriverOutgoingState[] = [];
    const done = await waitOutgoing(vmId, 'mig-armed', ['completed'], 120_000, seen);
    expect(done.downtimeMs).toBeGreaterThan(0);
    expect(seen).not.toContain('pre-switchover');
    await expect(source.cancelOutgoing(vmId, 'mig-armed')).rejects.toMatchObject({
      kind: 'invalid-state',
      message: expect.stringContaining('too late'),
    });
    await source.switchOver(vmId, 'mig-armed'); // repeating the switch is success
    expect((await dest.finishIncoming(vmId, 'mig-armed', 60_000)).powerState).toBe('RUNNING');
    await until('TICKs at the destination', () => (lastTick(dstDir, vmId) > before + 1 ? true : undefined));
    expect(serial(dstDir, vmId)).not.toContain(DEMO_READY_MARKER);
    await source.finishOutgoing(vmId, 'mig-armed');
    expect(await source.status(vmId)).toBeUndefined();
    expect(unrequested.filter((u) => u.status.vmId === vmId)).toEqual([]);
    await dest.destroy(vmId);
  });

  it('cancels a transfer that cannot converge: the VM keeps running on the source, and the destination keeps nothing', async () => {
    const spec = specFor('cancel', { dirtyMib: 32, memoryMib: 224 });
    const vmId = spec.vmId;
    await bootOnSource(spec);
    await begin(spec, 'mig-cancel', params({ bandwidthBytesPerSec: 16 * MiB }));
    const active = await waitOutgoing(vmId, 'mig-cancel', ['active']);
    expect(active.memoryTotalBytes).toBeGreaterThanOrEqual(224 * MiB);

    await source.cancelOutgoing(vmId, 'mig-cancel');
    expect((await source.outgoingStatus(vmId, 'mig-cancel', 0)).state).toBe('cancelled');
    expect((await source.status(vmId))!.powerState).toBe('RUNNING');
    const at = lastTick(srcDir, vmId);
    await until('TICKs go on at the source', () => (lastTick(srcDir, vmId) > at + 1 ? true : undefined));
    await source.cancelOutgoing(vmId, 'mig-cancel'); // nothing in flight: success

    await dest.abortIncoming(vmId, 'mig-cancel');
    expect(fs.existsSync(path.join(dstDir, vmId))).toBe(false);
    expect(await dest.status(vmId)).toBeUndefined();
    await dest.abortIncoming(vmId, 'mig-cancel');
    expect(unrequested.filter((u) => u.status.vmId === vmId)).toEqual([]);
    await source.destroy(vmId);
  });

  it('cancels in pre-switchover: the paused guest runs on at the source', async () => {
    const spec = specFor('unpause');
    const vmId = spec.vmId;
    await bootOnSource(spec);
    await begin(spec, 'mig-unpause');
    await waitOutgoing(vmId, 'mig-unpause', ['pre-switchover']);
    expect((await source.status(vmId))!.powerState).toBe('PAUSED');
    await source.cancelOutgoing(vmId, 'mig-unpause');
    expect((await source.status(vmId))!.powerState).toBe('RUNNING');
    const at = lastTick(srcDir, vmId);
    await until('TICKs go on at the source', () => (lastTick(srcDir, vmId) > at + 1 ? true : undefined));
    // Cancelled: there is nothing to switch over or to finish, and the VM's state stays here.
    await expect(source.switchOver(vmId, 'mig-unpause')).rejects.toMatchObject({ kind: 'invalid-state' });
    await expect(source.finishOutgoing(vmId, 'mig-unpause')).rejects.toMatchObject({ kind: 'invalid-state' });
    await dest.abortIncoming(vmId, 'mig-unpause');
    // A new migration of the VM may start once the old one is over.
    await dest.prepareIncoming(spec, {
      migrationId: 'mig-unpause-2',
      listenHost: '127.0.0.1',
      receiveDiskIds: [],
      postCopy: false,
    });
    // destroy() takes an incoming VM away like any other.
    const pid = qemuOf(dstDir, vmId)!;
    await dest.destroy(vmId);
    // Gone or a zombie its parent (this process) has not reaped yet: either way no longer running.
    expect(isProcessAlive(pid)).toBe(false);
    expect(fs.existsSync(path.join(dstDir, vmId))).toBe(false);
    await source.destroy(vmId);
  });

  it('refuses bad input naming the field, and memory before the disks are in sync', async () => {
    const disk = path.join(srDir, 'refuse.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', disk, String(64 * MiB)]);
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', `write -P 0x33 ${MiB} ${16 * MiB}`, disk]);
    const spec = specFor('refuse', { disks: [{ id: 'data', path: disk, format: 'qcow2' }] });
    const vmId = spec.vmId;
    const incomingOptions = {
      migrationId: 'mig-refuse',
      listenHost: '127.0.0.1',
      receiveDiskIds: [],
      postCopy: false,
    };
    await expect(
      dest.prepareIncoming(spec, { ...incomingOptions, receiveDiskIds: ['nope'] }),
    ).rejects.toMatchObject({ kind: 'invalid-spec', message: expect.stringContaining('receiveDiskIds[0]') });
    await expect(
      dest.prepareIncoming(spec, { ...incomingOptions, listenHost: '127.0.0.1; rm' }),
    ).rejects.toMatchObject({ kind: 'invalid-spec', message: expect.stringContaining('listenHost') });
    await expect(dest.prepareIncoming(spec, { ...incomingOptions, migrationId: '' })).rejects.toMatchObject({
      kind: 'invalid-spec',
      message: expect.stringContaining('migrationId'),
    });
    expect(fs.existsSync(path.join(dstDir, vmId))).toBe(false);

    await bootOnSource(spec);
    await expect(
      source.startOutgoing(vmId, 'mig-refuse', '127.0.0.1:1', params({ downtimeLimitMs: 0 })),
    ).rejects.toMatchObject({ kind: 'invalid-spec', message: expect.stringContaining('downtimeLimitMs') });
    await expect(source.startOutgoing(vmId, 'mig-refuse', 'nowhere', params())).rejects.toMatchObject({
      kind: 'invalid-spec',
      message: expect.stringContaining('destinationAddress'),
    });
    await expect(source.outgoingStatus(vmId, 'mig-refuse', 0)).rejects.toMatchObject({ kind: 'not-found' });

    // A mirror slowed to 1 MiB/s is not in sync yet: memory must wait for it.
    const dstDisk = path.join(srDir, 'refuse-dst.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', dstDisk, String(64 * MiB)]);
    const incoming = await dest.prepareIncoming(
      { ...spec, disks: [{ id: 'data', path: dstDisk, format: 'qcow2' }] },
      { ...incomingOptions, receiveDiskIds: ['data'] },
    );
    await expect(
      source.startDiskMirror(
        vmId,
        'mig-refuse',
        [{ diskId: 'other', nbdAddress: incoming.nbdAddress!, exportName: 'x' }],
        MiB,
      ),
    ).rejects.toMatchObject({ kind: 'not-found' });
    await source.startDiskMirror(
      vmId,
      'mig-refuse',
      [{ diskId: 'data', nbdAddress: incoming.nbdAddress!, exportName: incoming.nbdExports.data }],
      MiB,
    );
    await expect(
      source.startOutgoing(vmId, 'mig-refuse', incoming.migrationAddress, params()),
    ).rejects.toMatchObject({ kind: 'invalid-state', message: expect.stringContaining('data') });
    expect((await source.outgoingStatus(vmId, 'mig-refuse', 0)).state).toBe('mirroring');

    // Cancelling the mirror lets go of the destination: its NBD server and the VM there go cleanly.
    await source.cancelOutgoing(vmId, 'mig-refuse');
    expect((await source.status(vmId))!.powerState).toBe('RUNNING');
    await dest.abortIncoming(vmId, 'mig-refuse');
    expect(fs.existsSync(path.join(dstDir, vmId))).toBe(false);
    await source.destroy(vmId);
    expect(() => execFileSync('qemu-img', ['check', '-q', disk])).not.toThrow();
  });

  it('moves a local qcow2 disk with the VM while the guest writes to it: the destination file has every write, and checks clean', async () => {
    const srcDisk = path.join(srDir, 'src-data.qcow2');
    const dstDisk = path.join(srDir, 'dst-data.qcow2');
    for (const f of [srcDisk, dstDisk])
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', f, String(64 * MiB)]);
    // Data from before the migration, far from sector 0 (where the guest writes its TICKs).
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', `write -P 0x5a ${8 * MiB} ${MiB}`, srcDisk]);
    const spec = specFor('storage', { disks: [{ id: 'data', path: srcDisk, format: 'qcow2' }] });
    const vmId = spec.vmId;
    await bootOnSource(spec);

    const incoming = await dest.prepareIncoming(
      { ...spec, disks: [{ id: 'data', path: dstDisk, format: 'qcow2' }] },
      { migrationId: 'mig-disk', listenHost: '127.0.0.1', receiveDiskIds: ['data'], postCopy: false },
    );
    expect(incoming.nbdAddress).toMatch(/^127\.0\.0\.1:\d+$/);
    await source.startDiskMirror(
      vmId,
      'mig-disk',
      [{ diskId: 'data', nbdAddress: incoming.nbdAddress!, exportName: incoming.nbdExports.data }],
      256 * MiB,
    );
    const mirroring = await source.outgoingStatus(vmId, 'mig-disk', 0);
    expect(mirroring.state).toBe('mirroring');
    await until('disk in sync', async () => {
      const s = await source.outgoingStatus(vmId, 'mig-disk', 2_000);
      if (s.disks[0]?.error) throw new Error(s.disks[0].error);
      return s.disks[0]?.ready ? s : undefined;
    });
    await source.startOutgoing(vmId, 'mig-disk', incoming.migrationAddress, params());
    await waitOutgoing(vmId, 'mig-disk', ['pre-switchover']);
    const lastBefore = lastTick(srcDir, vmId);
    await complete(vmId, 'mig-disk');
    await until('TICKs at the destination', () => (lastTick(dstDir, vmId) > lastBefore ? true : undefined));
    await dest.shutdown(vmId, { hard: true, timeoutMs: 0 });

    expect(() => execFileSync('qemu-img', ['check', '-q', dstDisk])).not.toThrow();
    // The old data came through the mirror (the destination's file started empty) ...
    expect(
      execFileSync('qemu-io', ['-r', '-f', 'qcow2', '-c', `read -P 0x5a ${8 * MiB} ${MiB}`, dstDisk], {
        encoding: 'utf8',
      }),
    ).not.toMatch(/mismatch|fail/i);
    // ... and so did the TICKs the guest wrote while it moved: at least the last one before the switch.
    const sector0 = execFileSync('qemu-io', ['-r', '-f', 'qcow2', '-c', 'read -v 0 16', dstDisk], {
      encoding: 'utf8',
    });
    // `00000000:  54 49 43 4b 20 33 0a 00 ...  TICK.3..`: the hex bytes, as text.
    const hex = /^0{8}:((?:\s+[0-9a-f]{2}){16})/m.exec(sector0)?.[1] ?? '';
    const text = Buffer.from(hex.trim().split(/\s+/).join(''), 'hex').toString('latin1');
    const written = Number(/TICK (\d+)/.exec(text)?.[1] ?? -1);
    expect(written).toBeGreaterThanOrEqual(lastBefore);
    await dest.destroy(vmId);
    expect(fs.existsSync(dstDisk)).toBe(true);
  });

  it('switches a busy guest to post-copy where the host allows it, and the migration completes', async () => {
    const spec = specFor('postcopy', { dirtyMib: 32, memoryMib: 224 });
    const vmId = spec.vmId;
    if (!source.capabilities().postCopy) {
      // Under TCG (or without userfaultfd) both ends refuse post-copy, before any QEMU starts for it.
      const refused = {
        kind: 'invalid-state',
        message: expect.stringMatching(
          /^postCopy: this host (runs its guests under TCG|has no usable userfaultfd)/,
        ),
      };
      await expect(
        dest.prepareIncoming(spec, {
          migrationId: 'mig-post',
          listenHost: '127.0.0.1',
          receiveDiskIds: [],
          postCopy: true,
        }),
      ).rejects.toMatchObject(refused);
      await expect(
        source.startOutgoing(vmId, 'mig-post', '127.0.0.1:9', params({ postCopy: true })),
      ).rejects.toMatchObject(refused);
      expect(await dest.status(vmId)).toBeUndefined();
      return;
    }
    await bootOnSource(spec);
    await begin(spec, 'mig-post', params({ bandwidthBytesPerSec: 64 * MiB, postCopy: true }));
    await waitOutgoing(vmId, 'mig-post', ['active']);
    await until('a first pass over memory', async () =>
      (await source.outgoingStatus(vmId, 'mig-post', 2_000)).rounds >= 2 ? true : undefined,
    );
    const before = lastTick(srcDir, vmId);
    await source.tuneOutgoing(vmId, 'mig-post', { startPostCopy: true, bandwidthBytesPerSec: 512 * MiB });
    // The switch to post-copy waits for switchOver too: one point of no return for both ways.
    await waitOutgoing(vmId, 'mig-post', ['pre-switchover']);
    await source.switchOver(vmId, 'mig-post');
    // Post-copy is past the point of no return: the source can no longer take the VM back.
    await expect(source.cancelOutgoing(vmId, 'mig-post')).rejects.toMatchObject({ kind: 'invalid-state' });
    await waitOutgoing(vmId, 'mig-post', ['completed']);
    expect((await dest.finishIncoming(vmId, 'mig-post', 60_000)).powerState).toBe('RUNNING');
    await source.finishOutgoing(vmId, 'mig-post');
    await until(
      'TICKs at the destination',
      () => (lastTick(dstDir, vmId) > before + 1 ? true : undefined),
      60_000,
      guestState(dest, dstDir, vmId),
    );
    expect(serial(dstDir, vmId)).not.toContain(DEMO_READY_MARKER);
    await dest.destroy(vmId);
  });

  it('survives the destination QEMU being killed mid-transfer: the migration fails and the VM runs on at the source', async () => {
    const spec = specFor('killed', { dirtyMib: 32, memoryMib: 224 });
    const vmId = spec.vmId;
    await bootOnSource(spec);
    await begin(spec, 'mig-kill', params({ bandwidthBytesPerSec: 16 * MiB }));
    await waitOutgoing(vmId, 'mig-kill', ['active']);
    process.kill(qemuOf(dstDir, vmId)!, 'SIGKILL');

    const failed = await until('the source sees the failure', async () => {
      const s = await source.outgoingStatus(vmId, 'mig-kill', 2_000);
      return ['failed', 'cancelled'].includes(s.state) ? s : undefined;
    });
    expect(failed.state).toMatch(/failed|cancelled/);
    expect((await source.status(vmId))!.powerState).toBe('RUNNING');
    const at = lastTick(srcDir, vmId);
    await until('TICKs go on at the source', () => (lastTick(srcDir, vmId) > at + 1 ? true : undefined));
    // Not reported as the VM crashing: its QEMU on the destination was only the migration's.
    await until('the destination noticed', async () =>
      (await dest.status(vmId))?.powerState === 'HALTED' ? true : undefined,
    );
    expect(unrequested.filter((u) => u.status.vmId === vmId)).toEqual([]);
    await source.cancelOutgoing(vmId, 'mig-kill');
    await dest.abortIncoming(vmId, 'mig-kill');
    expect(fs.existsSync(path.join(dstDir, vmId))).toBe(false);
    await source.destroy(vmId);
  });

  it('lets restarted agents on both hosts find the migration and finish it', async () => {
    const spec = specFor('restart');
    const vmId = spec.vmId;
    await bootOnSource(spec);
    await begin(spec, 'mig-restart');
    await waitOutgoing(vmId, 'mig-restart', ['pre-switchover']);
    await source.close();
    await dest.close();
    source = await newDriver(srcDir, 'source');
    dest = await newDriver(dstDir, 'destination');
    expect((await source.recover()).find((v) => v.vmId === vmId)?.powerState).toBe('PAUSED');
    // The waiting incoming QEMU is kept, not mistaken for an interrupted resume.
    expect((await dest.recover()).find((v) => v.vmId === vmId)?.powerState).toBe('PAUSED');
    expect((await source.outgoingStatus(vmId, 'mig-restart', 0)).state).toBe('pre-switchover');
    await complete(vmId, 'mig-restart');
    expect(fs.existsSync(path.join(srcDir, vmId))).toBe(false);
    expect(await dest.status(vmId)).toMatchObject({ powerState: 'RUNNING' });
    await dest.destroy(vmId);
  });
});
