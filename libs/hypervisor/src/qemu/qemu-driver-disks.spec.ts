import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DriverConsole, DriverVmSpec } from '../driver';
import { DEMO_READY_MARKER, demoImageForTests, demoImagePaths, PROBE_MARKER } from './demo-image';
import { QemuDriver } from './qemu-driver';
import { diskNodeName } from './qemu-disks';
import { describeWithRealQemu } from './real-qemu.testing';

/**
 * A shell on the demo guest's serial console: each command's output is read between markers, and the
 * exit status comes back. TICK lines and kernel messages that land on the console are left out.
 */
class GuestShell {
  private seen = '';
  private n = 0;

  private constructor(private readonly console: DriverConsole) {
    void (async () => {
      for await (const chunk of console.output) this.seen += chunk.toString('utf8');
    })();
  }

  static async open(driver: QemuDriver, vmId: string): Promise<GuestShell> {
    const shell = new GuestShell(await driver.attachConsole(vmId));
    // The guest starts its console shell at the first Enter.
    for (let attempt = 0; ; attempt++) {
      shell.console.write(Buffer.from('\n'));
      try {
        await shell.run('true', 5_000);
        return shell;
      } catch (e) {
        if (attempt >= 5) throw e;
      }
    }
  }

  async run(command: string, timeoutMs = 60_000): Promise<{ code: number; out: string }> {
    const tag = `Q${++this.n}x`;
    const from = this.seen.length;
    this.console.write(Buffer.from(`echo @${tag}B; ${command}; echo @${tag}E$?\n`));
    // A file without a final newline ends its output on the marker's line.
    const done = new RegExp(`^@${tag}B\\r?\\n([\\s\\S]*?)@${tag}E(\\d+)\\r?\\n`, 'm');
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = done.exec(this.seen.slice(from));
      if (m) {
        const out = m[1]
          .split(/\r?\n/)
          .filter((l) => l && !/^TICK \d+$/.test(l) && !/^\[\s*\d+\.\d+\]/.test(l))
          .join('\n');
        return { code: Number(m[2]), out };
      }
      if (Date.now() > deadline)
        throw new Error(
          `guest: ${command}: no answer in ${timeoutMs} ms; saw:\n${this.seen.slice(from).slice(-600)}`,
        );
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Runs and expects success; returns the output. */
  async ok(command: string): Promise<string> {
    const r = await this.run(command);
    if (r.code !== 0) throw new Error(`guest: ${command}: exit ${r.code}: ${r.out}`);
    return r.out;
  }

  close(): void {
    this.console.close();
  }
}

describeWithRealQemu('qemu driver disks on real QEMU', () => {
  // Real: QEMU processes booting the demo guest from a qcow2 overlay, qcow2 files made by qemu-img, and the
  // guest's own view of its disks (sysfs, dd) through its serial console. What reaches the files is read
  // back with qemu-img. Nothing is faked.

  jest.setTimeout(300_000);

  let stateDir: string;
  let srDir: string;
  let shmDir: string;
  let image: { kernel: string; initrd: string; disk: string };
  let driver: QemuDriver;
  const MiB = 1024 * 1024;

  const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
  const qemuImg = (...args: string[]) => execFileSync('qemu-img', args, { cwd: srDir, encoding: 'utf8' });
  /** Guest-visible bytes of an image (its whole chain), read while QEMU may hold it (-U). */
  function bytesOf(file: string, offset: number, length: number): string {
    const raw = path.join(os.tmpdir(), `flotilla-bytes-${process.pid}.raw`);
    try {
      qemuImg('convert', '-U', '-f', 'qcow2', '-O', 'raw', file, raw);
      const fd = fs.openSync(raw, 'r');
      const buf = Buffer.alloc(length);
      fs.readSync(fd, buf, 0, length, offset);
      fs.closeSync(fd);
      return buf.toString('latin1');
    } finally {
      fs.rmSync(raw, { force: true });
    }
  }
  const backingOf = (file: string) =>
    (JSON.parse(qemuImg('info', '-U', '--output=json', file)) as { 'backing-filename'?: string })[
      'backing-filename'
    ];

  async function newDriver(): Promise<QemuDriver> {
    return QemuDriver.create({
      stateDir,
      accelerator: 'auto',
      probeGuest: {
        kernel: image.kernel,
        initrd: image.initrd,
        cmdline: 'console=ttyS0 panic=-1 demo.probe=1',
        marker: PROBE_MARKER,
      },
    });
  }

  async function waitForSerial(vmId: string, marker: string, timeoutMs = 120_000): Promise<void> {
    const log = path.join(stateDir, vmId, 'serial.log');
    const deadline = Date.now() + timeoutMs;
    while (!(fs.existsSync(log) && fs.readFileSync(log, 'utf8').includes(marker))) {
      if (Date.now() > deadline) throw new Error(`vm ${vmId}: no ${marker} within ${timeoutMs} ms`);
      await sleep(100);
    }
  }

  async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = await probe();
      if (v !== undefined) return v;
      if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
      await sleep(200);
    }
  }

  function killOurQemus(): void {
    for (const p of fs.readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
      try {
        const cmd = fs.readFileSync(`/proc/${p}/cmdline`, 'utf8');
        if (cmd.startsWith('qemu-system') && cmd.includes(stateDir)) process.kill(Number(p), 'SIGKILL');
      } catch {
        // gone already
      }
    }
  }

  beforeAll(async () => {
    const built = await demoImageForTests();
    image = demoImagePaths(built.catalogueDir, built);
    stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-qdd-'));
    srDir = fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-sr-'));
    shmDir = fs.mkdtempSync('/dev/shm/flotilla-sr-');
    driver = await newDriver();
  });

  afterAll(async () => {
    await driver?.close().catch(() => undefined);
    killOurQemus();
    for (const d of [stateDir, srDir, shmDir]) if (d) fs.rmSync(d, { recursive: true, force: true });
  });

  describe('one VM with a root disk and a data disk', () => {
    const vmId = `disks-${process.pid}`;
    let shell: GuestShell;
    const file = (name: string) => path.join(srDir, name);

    beforeAll(async () => {
      // The root disk is a copy-on-write overlay of the demo appliance, as Flotilla makes them.
      fs.copyFileSync(image.disk, file('base.qcow2'));
      qemuImg('create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', 'base.qcow2', 'root.qcow2');
      qemuImg('create', '-q', '-f', 'qcow2', 'data.qcow2', String(64 * MiB));
      const spec: DriverVmSpec = {
        vmId,
        name: 'disks',
        vcpus: 1,
        memoryMib: 160,
        boot: { kind: 'disk' },
        disks: [
          { id: 'root', path: file('root.qcow2'), format: 'qcow2', bootable: true },
          { id: 'data-0b7c6f1e-3d2a-4c5b', path: file('data.qcow2'), format: 'qcow2' },
        ],
        nics: [],
      };
      await driver.start(spec);
      await waitForSerial(vmId, DEMO_READY_MARKER);
      shell = await GuestShell.open(driver, vmId);
    });

    afterAll(() => shell?.close());

    it('boots from the root overlay through the firmware and shows the data disk as vdb', async () => {
      expect(await shell.ok('cat /sys/block/vdb/size')).toBe(String((64 * MiB) / 512));
      // The serial is the disk id's first 20 characters: a name the guest can rely on.
      expect(await shell.ok('cat /sys/block/vdb/serial')).toBe('data-0b7c6f1e-3d2a-4');
      expect(await driver.openDiskFiles(vmId)).toEqual(
        [file('base.qcow2'), file('data.qcow2'), file('root.qcow2')].sort(),
      );
      // The base layer is opened read-only by QEMU; the guest wrote nothing to it.
      expect(backingOf(file('root.qcow2'))).toBe('base.qcow2');
    });

    it('hot-plugs a disk from a tmpfs (no O_DIRECT there): the guest sees it, and its writes are in the file after unplug', async () => {
      const plug = path.join(shmDir, 'plug.qcow2');
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', plug, String(32 * MiB)]);
      const { device } = await driver.plugDisk(vmId, { id: 'plug-1', path: plug, format: 'qcow2' });
      expect(device).toBe('vdc');
      // Idempotent: the same disk again is success, same name.
      expect(await driver.plugDisk(vmId, { id: 'plug-1', path: plug, format: 'qcow2' })).toEqual({ device });
      await until('guest sees the disk', async () =>
        (await shell.run(`cat /sys/block/${device}/serial`)).out === 'plug-1' ? true : undefined,
      );
      expect(await shell.ok(`cat /sys/block/${device}/size`)).toBe(String((32 * MiB) / 512));
      await shell.ok(
        `printf 'FLOTILLA-PLUGGED' | dd of=/dev/${device} bs=512 seek=100 conv=notrunc,sync,fsync`,
      );
      expect(await driver.openDiskFiles(vmId)).toContain(plug);

      await driver.unplugDisk(vmId, 'plug-1', { timeoutMs: 30_000, force: false });
      expect(await driver.openDiskFiles(vmId)).not.toContain(plug);
      expect((await shell.run(`test -e /sys/block/${device}`)).code).not.toBe(0);
      expect(bytesOf(plug, 100 * 512, 16)).toBe('FLOTILLA-PLUGGED');
      // Not plugged any more: unplugging again is success.
      await driver.unplugDisk(vmId, 'plug-1', { timeoutMs: 1_000, force: false });
    });

    it('closes the file on unplug whatever its node is named (a node name ending in "f" is no file node)', async () => {
      // One path in sixteen gives a format node whose hex hash ends in "f": such a node was once kept open,
      // and the disk stayed locked by QEMU after its unplug.
      const named = Array.from({ length: 200 }, (_, i) => file(`plug-f-${i}.qcow2`)).find((p) =>
        diskNodeName('plug-f', p).endsWith('f'),
      )!;
      qemuImg('create', '-q', '-f', 'qcow2', named, String(16 * MiB));
      const { device } = await driver.plugDisk(vmId, { id: 'plug-f', path: named, format: 'qcow2' });
      await until('guest sees the disk', async () =>
        (await shell.run(`cat /sys/block/${device}/serial`)).out === 'plug-f' ? true : undefined,
      );
      await driver.unplugDisk(vmId, 'plug-f', { timeoutMs: 30_000, force: false });
      expect(await driver.openDiskFiles(vmId)).not.toContain(named);
      // Without -U: qemu-img takes the image's locks, which only a QEMU still holding the file would refuse.
      expect(() => qemuImg('info', '-f', 'qcow2', named)).not.toThrow();
    });

    it('hot-plugs a read-only disk that the guest cannot write', async () => {
      const ro = file('ro.qcow2');
      qemuImg('create', '-q', '-f', 'qcow2', ro, String(16 * MiB));
      const before = fs.readFileSync(ro);
      const { device } = await driver.plugDisk(vmId, {
        id: 'ro-1',
        path: ro,
        format: 'qcow2',
        readOnly: true,
      });
      await until('guest sees the disk', async () =>
        (await shell.run(`cat /sys/block/${device}/ro`)).out === '1' ? true : undefined,
      );
      const write = await shell.run(`dd if=/dev/urandom of=/dev/${device} bs=4096 count=4 conv=fsync`);
      expect(write.code).not.toBe(0);
      await driver.unplugDisk(vmId, 'ro-1', { timeoutMs: 30_000, force: true });
      expect(fs.readFileSync(ro).equals(before)).toBe(true);
    });

    it('an unplug the guest cannot answer (paused) times out, and completes by itself once the guest lets go', async () => {
      const late = file('late.qcow2');
      qemuImg('create', '-q', '-f', 'qcow2', late, String(16 * MiB));
      const { device } = await driver.plugDisk(vmId, { id: 'late-1', path: late, format: 'qcow2' });
      await until('guest sees the disk', async () =>
        (await shell.run(`test -e /sys/block/${device}`)).code === 0 ? true : undefined,
      );
      await driver.pause(vmId);
      await expect(
        driver.unplugDisk(vmId, 'late-1', { timeoutMs: 1_500, force: true }),
      ).rejects.toMatchObject({
        kind: 'timeout',
      });
      expect(await driver.openDiskFiles(vmId)).toContain(late);
      await driver.unpause(vmId);
      // The guest ejects the device when it runs again; the driver then closes the file by itself.
      await until(
        'file closed',
        async () => ((await driver.openDiskFiles(vmId)).includes(late) ? undefined : true),
        // A TCG guest on a loaded machine takes its time to eject the device once it runs again.
        120_000,
      );
      expect((await shell.run(`test -e /sys/block/${device}`)).code).not.toBe(0);
    });

    it('takes a live snapshot while the guest writes: the old file stays consistent and the new top takes the writes', async () => {
      await shell.ok(`printf 'BEFORE-SNAPSHOT' | dd of=/dev/vdb bs=512 seek=4096 conv=notrunc,sync,fsync`);
      // A writer that keeps going through the snapshot.
      await shell.ok(
        `(i=0; while :; do dd if=/dev/urandom of=/dev/vdb bs=64k count=1 seek=$((i % 16)) conv=notrunc,fsync 2>/dev/null; i=$((i+1)); done) & W=$!`,
      );
      await sleep(1_000);
      qemuImg(
        'create',
        '-q',
        '-f',
        'qcow2',
        '-F',
        'qcow2',
        '-b',
        'data.qcow2',
        '-u',
        'data-s1.qcow2',
        String(64 * MiB),
      );
      await driver.snapshotDisk(vmId, file('data.qcow2'), file('data-s1.qcow2'));
      // Repeating a snapshot that is done is success.
      await driver.snapshotDisk(vmId, file('data.qcow2'), file('data-s1.qcow2'));
      await shell.ok(`printf 'AFTER-SNAPSHOT' | dd of=/dev/vdb bs=512 seek=6144 conv=notrunc,sync,fsync`);
      await sleep(1_000);
      await shell.ok('kill $W; sync');

      // The old file is a clean, closed-for-writing image: consistent, and without the later write.
      expect(() => qemuImg('check', '-U', '-q', 'data.qcow2')).not.toThrow();
      expect(bytesOf(file('data.qcow2'), 4096 * 512, 15)).toBe('BEFORE-SNAPSHOT');
      expect(bytesOf(file('data.qcow2'), 6144 * 512, 14)).toBe('\0'.repeat(14));
      // The new top took the writes, and reads through to the old file below it.
      const s1 = JSON.parse(qemuImg('check', '-U', '--output=json', 'data-s1.qcow2')) as {
        'allocated-clusters': number;
      };
      expect(s1['allocated-clusters']).toBeGreaterThan(0);
      expect(bytesOf(file('data-s1.qcow2'), 6144 * 512, 14)).toBe('AFTER-SNAPSHOT');
      expect(bytesOf(file('data-s1.qcow2'), 4096 * 512, 15)).toBe('BEFORE-SNAPSHOT');
      expect(await driver.openDiskFiles(vmId)).toEqual(
        expect.arrayContaining([file('data.qcow2'), file('data-s1.qcow2')]),
      );
    });

    it('knows the new top after an agent restart, and grows the disk online: the guest sees the new size', async () => {
      shell.close();
      await driver.close();
      driver = await newDriver();
      await driver.recover();
      shell = await GuestShell.open(driver, vmId);
      await expect(driver.resizeDisk(vmId, file('data.qcow2'), 128 * MiB)).rejects.toMatchObject({
        kind: 'not-found',
      });
      await driver.resizeDisk(vmId, file('data-s1.qcow2'), 128 * MiB);
      await until('guest sees 128 MiB', async () =>
        (await shell.run('cat /sys/block/vdb/size')).out === String((128 * MiB) / 512) ? true : undefined,
      );
      await expect(driver.resizeDisk(vmId, file('data-s1.qcow2'), 64 * MiB)).rejects.toMatchObject({
        kind: 'invalid-spec',
      });
    });

    it('merges the chain into the top with block-stream: the top holds every byte and the old layer is closed', async () => {
      await driver.streamDisk(vmId, file('data-s1.qcow2'), undefined);
      expect(backingOf(file('data-s1.qcow2'))).toBeUndefined();
      expect(bytesOf(file('data-s1.qcow2'), 4096 * 512, 15)).toBe('BEFORE-SNAPSHOT');
      expect(bytesOf(file('data-s1.qcow2'), 6144 * 512, 14)).toBe('AFTER-SNAPSHOT');
      expect(await driver.openDiskFiles(vmId)).not.toContain(file('data.qcow2'));
      // The guest carries on writing to the merged top.
      await shell.ok(`printf 'AFTER-STREAM' | dd of=/dev/vdb bs=512 seek=8192 conv=notrunc,sync,fsync`);
      expect(bytesOf(file('data-s1.qcow2'), 8192 * 512, 12)).toBe('AFTER-STREAM');
    });

    it('streams part of a chain, keeping the base: the header names it by its plain name', async () => {
      // root.qcow2 → base.qcow2; a snapshot puts root-s1 on top; stream root into root-s1, keep base.
      const size = JSON.parse(qemuImg('info', '-U', '--output=json', 'root.qcow2'))['virtual-size'] as number;
      qemuImg(
        'create',
        '-q',
        '-f',
        'qcow2',
        '-F',
        'qcow2',
        '-b',
        'root.qcow2',
        '-u',
        'root-s1.qcow2',
        String(size),
      );
      await driver.snapshotDisk(vmId, file('root.qcow2'), file('root-s1.qcow2'));
      await driver.streamDisk(vmId, file('root-s1.qcow2'), 'base.qcow2');
      expect(backingOf(file('root-s1.qcow2'))).toBe('base.qcow2');
      const open = await driver.openDiskFiles(vmId);
      expect(open).toEqual(expect.arrayContaining([file('root-s1.qcow2'), file('base.qcow2')]));
      expect(open).not.toContain(file('root.qcow2'));
    });

    it('suspends and resumes with a hot-plugged disk: the guest still has it where it was', async () => {
      const extra = file('extra.qcow2');
      qemuImg('create', '-q', '-f', 'qcow2', extra, String(8 * MiB));
      const { device } = await driver.plugDisk(vmId, { id: 'extra-1', path: extra, format: 'qcow2' });
      await until('guest sees the disk', async () =>
        (await shell.run(`cat /sys/block/${device}/serial`)).out === 'extra-1' ? true : undefined,
      );
      shell.close();
      expect((await driver.suspend(vmId)).powerState).toBe('SUSPENDED');
      expect(await driver.openDiskFiles(vmId)).toContain(extra);
      expect((await driver.resume(vmId)).powerState).toBe('RUNNING');
      shell = await GuestShell.open(driver, vmId);
      expect(await shell.ok(`cat /sys/block/${device}/serial`)).toBe('extra-1');
      await shell.ok(`printf 'AFTER-RESUME' | dd of=/dev/${device} bs=512 seek=10 conv=notrunc,sync,fsync`);
      await driver.unplugDisk(vmId, 'extra-1', { timeoutMs: 30_000, force: false });
      expect(bytesOf(extra, 10 * 512, 12)).toBe('AFTER-RESUME');
    });

    it('refuses an overlay that is not backed by the current top, and a disk whose backing file is a path', async () => {
      qemuImg('create', '-q', '-f', 'qcow2', 'stray.qcow2', '1M');
      await expect(
        driver.snapshotDisk(vmId, file('data-s1.qcow2'), file('stray.qcow2')),
      ).rejects.toMatchObject({ kind: 'invalid-spec' });
      // A header naming /etc/passwd-like paths is never handed to QEMU.
      qemuImg('create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', '/etc/hostname', '-u', 'evil.qcow2', '1M');
      await expect(
        driver.plugDisk(vmId, { id: 'evil', path: file('evil.qcow2'), format: 'qcow2' }),
      ).rejects.toMatchObject({ kind: 'invalid-spec', message: expect.stringMatching(/backing file/) });
      expect(await driver.openDiskFiles(vmId)).not.toContain('/etc/hostname');
    });
  });
});
