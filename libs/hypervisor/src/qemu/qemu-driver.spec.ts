import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { DriverConsole, DriverError, DriverVmSpec, DriverVmStatus } from '../driver';
import {
  DEMO_POWERBUTTON_IGNORED_MARKER,
  DEMO_POWEROFF_MARKER,
  DEMO_READY_MARKER,
  DEMO_TICK_LINE,
  demoImageForTests,
  demoImagePaths,
  PROBE_MARKER,
} from './demo-image';
import { buildQemuArgv, vmUuid } from './qemu-command';
import { QemuDriver, type QemuDriverOptions } from './qemu-driver';
import { freeTcpPort } from './qemu-migration-qmp';
import { QmpClient } from './qmp-client';
import { VmDirectory } from './vm-directory';
import { describeWithRealQemu } from './real-qemu.testing';

describeWithRealQemu('qemu driver on real QEMU', () => {
  // Real: qemu-system-x86_64 processes booting the demo guest (Debian cloud kernel + busybox init), observed from
  // the guest side — its serial console (DEMO-READY, TICK n, power-off markers) and HTTP through the forwarded
  // port — as well as through the driver. Nothing is faked. Waits scale with the accelerator; assertions do not.

  jest.setTimeout(240_000);

  let stateDir: string;
  let image: { kernel: string; initrd: string; disk: string };
  let driver: QemuDriver;
  const drivers: QemuDriver[] = [];
  /** Upper bounds only: TCG boots in ~2-4 s on an idle host, several VMs on 2 vCPUs take longer. */
  let bootTimeoutMs = 90_000;

  const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

  function specFor(name: string, extra: Partial<DriverVmSpec> = {}, cmdline = ''): DriverVmSpec {
    return {
      vmId: `${name}-${process.pid}`,
      name,
      vcpus: 1,
      memoryMib: 128,
      boot: {
        kind: 'kernel',
        kernel: image.kernel,
        initrd: image.initrd,
        cmdline: `console=ttyS0 panic=-1 demo.name=${name} ${cmdline}`.trim(),
      },
      disks: [],
      nics: [],
      ...extra,
    };
  }

  async function newDriver(extra: Partial<QemuDriverOptions> = {}): Promise<QemuDriver> {
    const d = await QemuDriver.create({
      ...extra,
      stateDir,
      accelerator: 'auto',
      probeGuest: {
        kernel: image.kernel,
        initrd: image.initrd,
        cmdline: 'console=ttyS0 panic=-1 demo.probe=1',
        marker: PROBE_MARKER,
      },
      cleanRebootTimeoutMs: 60_000,
    });
    drivers.push(d);
    return d;
  }

  const serialLog = (vmId: string) => path.join(stateDir, vmId, 'serial.log');
  const logSize = (vmId: string) => (fs.existsSync(serialLog(vmId)) ? fs.statSync(serialLog(vmId)).size : 0);
  const logSince = (vmId: string, offset: number) =>
    fs.existsSync(serialLog(vmId)) ? fs.readFileSync(serialLog(vmId)).subarray(offset).toString('utf8') : '';

  /** Waits until the serial log, from byte `offset` on, contains `marker`. */
  async function waitForSerial(
    vmId: string,
    marker: string | RegExp,
    offset = 0,
    timeoutMs = bootTimeoutMs,
  ): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const text = logSince(vmId, offset);
      if (typeof marker === 'string' ? text.includes(marker) : marker.test(text)) return text;
      if (Date.now() > deadline)
        throw new Error(
          `vm ${vmId}: no ${marker} on the console within ${timeoutMs} ms; last:\n${text.slice(-800)}`,
        );
      await sleep(50);
    }
  }

  /** TICK numbers of complete lines only: a VM stopped mid-line leaves `TICK 1` of what becomes `TICK 12`. */
  /** A whole TICK line (ticks() reads only whole lines, from the start of one). */
  const TICK_LINE = /(?:^|\n)TICK \d+\s*\n/;
  /** Two whole TICK lines, whatever the kernel printed between them. */
  const TWO_TICK_LINES = /(?:^|\n)TICK \d+[^\S\n]*\n(?:[\s\S]*\n)?TICK \d+[^\S\n]*\n/;
  const ticks = (text: string) =>
    [...text.slice(0, text.lastIndexOf('\n') + 1).matchAll(DEMO_TICK_LINE)].map((m) => Number(m[1]));
  const lastTick = (vmId: string) => ticks(logSince(vmId, 0)).pop() ?? 0;

  function httpGet(hostAddress: string): Promise<{ status: number; body: string }> {
    return new Promise((resolve, reject) => {
      const req = http.get(`http://${hostAddress}/`, { timeout: 10_000 }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on('error', reject);
      req.on('timeout', () => req.destroy(new Error('HTTP timeout')));
    });
  }

  /** Pids of every live QEMU whose command line carries this VM's -uuid. */
  function qemuPidsOf(vmId: string): number[] {
    const uuid = vmUuid(vmId);
    return fs
      .readdirSync('/proc')
      .filter((p) => /^\d+$/.test(p))
      .filter((p) => {
        try {
          const args = fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0');
          const stat = fs.readFileSync(`/proc/${p}/stat`, 'utf8');
          return args.includes(uuid) && !/\) [ZX] /.test(stat);
        } catch {
          return false;
        }
      })
      .map(Number);
  }

  /** Every QEMU started under this test's state dir (found by its command line), killed. */
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

  async function readConsole(console: DriverConsole, marker: string, timeoutMs: number): Promise<string> {
    let seen = '';
    const deadline = sleep(timeoutMs).then(() => 'timeout' as const);
    const iterator = console.output[Symbol.asyncIterator]();
    for (;;) {
      const next = await Promise.race([iterator.next(), deadline]);
      if (next === 'timeout')
        throw new Error(`console: no ${marker} within ${timeoutMs} ms; saw:\n${seen.slice(-500)}`);
      if (next.done) throw new Error(`console ended before ${marker}; saw:\n${seen.slice(-500)}`);
      seen += next.value.toString('utf8');
      if (seen.includes(marker)) return seen;
    }
  }

  function nextUnrequested(d: QemuDriver, vmId: string): Promise<DriverVmStatus> {
    return new Promise((resolve) => d.onUnrequestedChange((s) => s.vmId === vmId && resolve(s)));
  }

  beforeAll(async () => {
    const built = await demoImageForTests();
    image = demoImagePaths(built.catalogueDir, built);
    stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-qd-'));
    driver = await newDriver();
    if (driver.capabilities().accelerator === 'kvm') bootTimeoutMs = 30_000;
    await driver.recover();
  });

  afterAll(async () => {
    for (const d of drivers) await d.close().catch(() => undefined);
    killOurQemus();
    fs.rmSync(stateDir, { recursive: true, force: true });
  });

  describe('qemu driver on a real QEMU', () => {
    it('reports the accelerator it chose and why, and the real host capacity', () => {
      const caps = driver.capabilities();
      expect(['kvm', 'tcg']).toContain(caps.accelerator);
      expect(caps.acceleratorReason).toMatch(/kvm probe:/);
      const hasVirtualization = /\b(vmx|svm)\b/.test(fs.readFileSync('/proc/cpuinfo', 'utf8'));
      if (!hasVirtualization) expect(caps.accelerator).toBe('tcg');
      expect(driver.capacity()).toEqual({
        cpus: os.availableParallelism(),
        memoryMib: Math.floor(os.totalmem() / 1024 / 1024),
      });
    });

    it('refuses a bad spec with invalid-spec naming the field, and starts nothing', async () => {
      const bad = specFor('bad', { nics: [{ mac: 'not-a-mac', forwards: [] }] });
      await expect(driver.start(bad)).rejects.toMatchObject({
        kind: 'invalid-spec',
        message: expect.stringMatching(/^nics\[0\]\.mac:/),
      });
      await expect(driver.start({ ...specFor('bad2'), memoryMib: -1 })).rejects.toMatchObject({
        kind: 'invalid-spec',
        message: expect.stringMatching(/^memoryMib:/),
      });
      await expect(driver.start({ ...specFor('bad3'), vmId: '../x' })).rejects.toBeInstanceOf(DriverError);
      expect(fs.readdirSync(stateDir).filter((f) => !f.startsWith('accel') && !f.startsWith('.'))).toEqual(
        [],
      );
    });

    describe('one VM through its whole life', () => {
      let spec: DriverVmSpec;
      let vmId: string;
      let web: string;
      beforeAll(() => {
        const disk = path.join(stateDir, `scratch-${process.pid}.raw`);
        fs.writeFileSync(disk, Buffer.alloc(0));
        fs.truncateSync(disk, 1024 * 1024);
        spec = specFor('life', {
          disks: [{ path: disk, format: 'raw' }],
          nics: [{ mac: '52:54:00:00:00:01', forwards: [{ guestPort: 80 }] }],
        });
        vmId = spec.vmId;
      });

      it('starts: the guest boots to DEMO-READY and answers HTTP on its forwarded port', async () => {
        const status = await driver.start(spec);
        expect(status).toMatchObject({ vmId, powerState: 'RUNNING' });
        expect(status.forwards).toEqual([
          { guestPort: 80, hostAddress: expect.stringMatching(/^127\.0\.0\.1:\d+$/) },
        ]);
        web = status.forwards![0].hostAddress;
        // Nobody is attached to the console: QEMU still writes it to serial.log.
        await waitForSerial(vmId, DEMO_READY_MARKER);
        const page = await httpGet(web);
        expect(page.status).toBe(200);
        expect(page.body).toContain('<h1>life</h1>');
        expect(qemuPidsOf(vmId)).toHaveLength(1);
      });

      it('never runs a second QEMU for a VM that runs', async () => {
        const [pid] = qemuPidsOf(vmId);
        expect((await driver.start(spec)).powerState).toBe('RUNNING');
        // A second agent on the same state dir finds the live QEMU (pidfile + -uuid) and does not spawn one;
        // it cannot take QMP over from the agent that holds it, so it says so.
        const other = await newDriver();
        await expect(other.start(spec)).rejects.toMatchObject({
          kind: 'failed',
          message: expect.stringMatching(/runs but does not answer QMP/),
        });
        await other.close();
        // And QEMU itself refuses a second process on the same VM directory: it locks the pidfile.
        const dir = new VmDirectory(stateDir, vmId);
        const launch = dir.readSpec()!;
        const second = spawnSync('qemu-system-x86_64', buildQemuArgv(launch, dir.runtimePaths), {
          timeout: 20_000,
          encoding: 'utf8',
        });
        expect(second.status).not.toBe(0);
        expect(second.stderr).toMatch(/pid file/i);
        expect(qemuPidsOf(vmId)).toEqual([pid]);
        expect((await httpGet(web)).status).toBe(200);
      });

      it('pause stops the guest clock; unpause lets it tick on', async () => {
        await waitForSerial(vmId, TICK_LINE);
        expect((await driver.pause(vmId)).powerState).toBe('PAUSED');
        expect((await driver.status(vmId))?.powerState).toBe('PAUSED');
        const frozenAt = logSize(vmId);
        await sleep(2500);
        expect(ticks(logSince(vmId, frozenAt))).toEqual([]);
        expect((await driver.unpause(vmId)).powerState).toBe('RUNNING');
        await waitForSerial(vmId, TICK_LINE, frozenAt, 30_000);
      });

      it('reports metrics that grow while the guest runs', async () => {
        const first = await driver.metrics(vmId);
        expect(first.residentMemoryBytes).toBeGreaterThan(0);
        expect(first.nics).toEqual([]);
        expect(first.disks.map((d) => d.device)).toEqual(['disk0']);
        const at = logSize(vmId);
        await waitForSerial(vmId, /TICK \d+\s+TICK \d+/, at, 30_000);
        const second = await driver.metrics(vmId);
        expect(second.cpuTimeNs).toBeGreaterThan(first.cpuTimeNs);
        // The demo guest writes each TICK to sector 0 of its scratch disk.
        expect(second.disks[0].writeBytes).toBeGreaterThan(first.disks[0].writeBytes);
      });

      it('attaches consoles that all see the output and can type into the guest', async () => {
        const a = await driver.attachConsole(vmId);
        const b = await driver.attachConsole(vmId);
        try {
          const seenByB = readConsole(b, 'answer=42', 30_000);
          a.write(Buffer.from('\n'));
          await sleep(500);
          a.write(Buffer.from('echo answer=$((6*7))\n'));
          await readConsole(a, 'answer=42', 30_000);
          await seenByB;
        } finally {
          a.close();
          b.close();
        }
        // QEMU writes each chunk to the console socket, then to its log file: the log may trail the
        // consoles by a moment (it did by one byte once under load), so wait a little for it.
        await waitForSerial(vmId, 'answer=42', 0, 5000);
        expect((await driver.consoleLog(vmId, 4096)).toString()).toContain('answer=42');
      });

      it('reboots hard: the guest boots again', async () => {
        const at = logSize(vmId);
        expect((await driver.reboot(vmId, { hard: true })).powerState).toBe('RUNNING');
        await waitForSerial(vmId, DEMO_READY_MARKER, at);
      });

      it('reboots clean: the guest powers off on the button, then boots again in the same QEMU', async () => {
        const [pid] = qemuPidsOf(vmId);
        const at = logSize(vmId);
        expect((await driver.reboot(vmId, { hard: false })).powerState).toBe('RUNNING');
        const text = await waitForSerial(vmId, DEMO_READY_MARKER, at);
        expect(text.indexOf(DEMO_POWEROFF_MARKER)).toBeGreaterThanOrEqual(0);
        expect(text.indexOf(DEMO_POWEROFF_MARKER)).toBeLessThan(text.indexOf(DEMO_READY_MARKER));
        expect(qemuPidsOf(vmId)).toEqual([pid]);
        expect((await httpGet(web)).status).toBe(200);
      });

      it('suspends to a file with no QEMU left, and resumes with the guest memory intact', async () => {
        // Whole lines: on a busy machine the guest's UART may be mid-line ("TICK 2" without its newline)
        // when it is suspended, and lastTick() counts whole lines only.
        await waitForSerial(vmId, TWO_TICK_LINES, logSize(vmId), 30_000);
        expect((await driver.suspend(vmId)).powerState).toBe('SUSPENDED');
        expect(qemuPidsOf(vmId)).toEqual([]);
        expect(fs.statSync(path.join(stateDir, vmId, 'saved-state.bin')).size).toBeGreaterThan(0);
        expect((await driver.status(vmId))?.powerState).toBe('SUSPENDED');
        const before = lastTick(vmId);
        expect(before).toBeGreaterThan(1);
        const at = logSize(vmId);
        // start() of a SUSPENDED VM resumes it.
        expect((await driver.start(spec)).powerState).toBe('RUNNING');
        await waitForSerial(vmId, TICK_LINE, at, 30_000);
        const after = ticks(logSince(vmId, at))[0];
        expect(after).toBeGreaterThan(before);
        expect(after).toBeLessThanOrEqual(before + 2);
        expect(logSince(vmId, at)).not.toContain(DEMO_READY_MARKER);
        expect(fs.existsSync(path.join(stateDir, vmId, 'saved-state.bin'))).toBe(false);
        expect((await httpGet(web)).status).toBe(200);
      });

      it('shuts down clean: the guest powers off on the button and QEMU ends', async () => {
        const at = logSize(vmId);
        const status = await driver.shutdown(vmId, { hard: false, timeoutMs: 60_000 });
        expect(status).toEqual({ vmId, powerState: 'HALTED' });
        expect(logSince(vmId, at)).toContain(DEMO_POWEROFF_MARKER);
        expect(qemuPidsOf(vmId)).toEqual([]);
        expect(await driver.shutdown(vmId, { hard: true, timeoutMs: 0 })).toEqual({
          vmId,
          powerState: 'HALTED',
        });
      });

      it('starts again from HALTED and shuts down hard at once', async () => {
        const at = logSize(vmId);
        await driver.start(spec);
        await waitForSerial(vmId, DEMO_READY_MARKER, at);
        const hardAt = logSize(vmId);
        expect((await driver.shutdown(vmId, { hard: true, timeoutMs: 0 })).powerState).toBe('HALTED');
        expect(qemuPidsOf(vmId)).toEqual([]);
        expect(logSince(vmId, hardAt)).not.toContain(DEMO_POWEROFF_MARKER);
      });

      it('destroys the VM: no process and no files remain; an unknown VM destroys fine', async () => {
        await driver.start(spec);
        await driver.destroy(vmId);
        expect(qemuPidsOf(vmId)).toEqual([]);
        expect(fs.existsSync(path.join(stateDir, vmId))).toBe(false);
        expect(await driver.status(vmId)).toBeUndefined();
        await driver.destroy(vmId);
        await driver.destroy('never-existed');
      });
    });

    it('boots from a qcow2 disk through the firmware', async () => {
      const spec = specFor('diskboot', {
        boot: { kind: 'disk' },
        disks: [{ path: image.disk, format: 'qcow2', readOnly: true }],
      });
      await driver.start(spec);
      const text = await waitForSerial(spec.vmId, DEMO_READY_MARKER);
      expect(text).toMatch(/SYSLINUX/); // the boot loader on the disk ran: no -kernel here
      await driver.destroy(spec.vmId);
      expect(qemuPidsOf(spec.vmId)).toEqual([]);
    });

    it('reports a QEMU that cannot start with the reason from its log, and leaves nothing running', async () => {
      const taken = net.createServer();
      await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
      const hostPort = (taken.address() as net.AddressInfo).port;
      try {
        const spec = specFor('portclash', {
          nics: [{ mac: '52:54:00:00:00:02', forwards: [{ guestPort: 80, hostPort }] }],
        });
        await expect(driver.start(spec)).rejects.toMatchObject({
          kind: 'failed',
          message: expect.stringMatching(/host forwarding rule/i),
        });
        expect(qemuPidsOf(spec.vmId)).toEqual([]);
        expect(await driver.status(spec.vmId)).toMatchObject({
          powerState: 'HALTED',
          reason: expect.stringMatching(/^start failed: /),
        });
        await driver.destroy(spec.vmId);
      } finally {
        taken.close();
      }
    });

    it('picks another host port when the one it picked is taken before QEMU binds it, and says so', async () => {
      // The race, made certain: the first port the driver picks is one this test holds.
      const taken = net.createServer();
      await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
      const takenPort = (taken.address() as net.AddressInfo).port;
      const picks = [takenPort];
      const lines: string[] = [];
      const d = await newDriver({
        pickHostPort: async () => picks.shift() ?? freeTcpPort('127.0.0.1'),
        log: (line) => lines.push(line),
      });
      const spec = specFor('portrace', {
        nics: [{ mac: '52:54:00:00:00:03', forwards: [{ guestPort: 80, hostPort: 0 }] }],
      });
      try {
        const status = await d.start(spec);
        expect(status.powerState).toBe('RUNNING');
        const [forward] = status.forwards ?? [];
        expect(forward.guestPort).toBe(80);
        expect(forward.hostAddress).not.toBe(`127.0.0.1:${takenPort}`);
        expect(lines.some((l) => /picking again/.test(l))).toBe(true);
        expect(qemuPidsOf(spec.vmId)).toHaveLength(1);
      } finally {
        taken.close();
        await d.destroy(spec.vmId).catch(() => undefined);
      }
    });

    it('stops a guest that ignores the power button once the clean shutdown times out', async () => {
      const spec = specFor('stubborn', {}, 'demo.ignore_powerbutton=1');
      await driver.start(spec);
      await waitForSerial(spec.vmId, DEMO_READY_MARKER);
      const status = await driver.shutdown(spec.vmId, { hard: false, timeoutMs: 3000 });
      expect(status.powerState).toBe('HALTED');
      expect(logSince(spec.vmId, 0)).toContain(DEMO_POWERBUTTON_IGNORED_MARKER);
      expect(logSince(spec.vmId, 0)).not.toContain(DEMO_POWEROFF_MARKER);
      expect(qemuPidsOf(spec.vmId)).toEqual([]);
      await driver.destroy(spec.vmId);
    });

    describe('while watching, changes nobody asked for', () => {
      it.each([
        ['the guest powers off', 'poweroff -f', 'guest shut down'],
        [
          'the guest kernel panics',
          'echo c > /proc/sysrq-trigger',
          'guest crashed (kernel panic): Kernel panic - not syncing: sysrq triggered crash',
        ],
      ])('%s: HALTED with the reason, QEMU gone', async (name, command, reason) => {
        const spec = specFor(name.replace(/\W+/g, '-').slice(4, 20));
        await driver.start(spec);
        await waitForSerial(spec.vmId, DEMO_READY_MARKER);
        const change = nextUnrequested(driver, spec.vmId);
        const console = await driver.attachConsole(spec.vmId);
        console.write(Buffer.from('\n'));
        await sleep(500);
        console.write(Buffer.from(`${command}\n`));
        expect(await change).toEqual({ vmId: spec.vmId, powerState: 'HALTED', reason });
        console.close();
        expect(qemuPidsOf(spec.vmId)).toEqual([]);
        expect(await driver.status(spec.vmId)).toEqual({ vmId: spec.vmId, powerState: 'HALTED', reason });
        await driver.destroy(spec.vmId);
      });

      it('QEMU is killed: HALTED with the signal', async () => {
        const spec = specFor('killed');
        await driver.start(spec);
        const change = nextUnrequested(driver, spec.vmId);
        process.kill(qemuPidsOf(spec.vmId)[0], 'SIGKILL');
        expect(await change).toEqual({
          vmId: spec.vmId,
          powerState: 'HALTED',
          reason: 'QEMU process was killed by SIGKILL',
        });
        await driver.destroy(spec.vmId);
      });
    });

    describe('after an agent restart', () => {
      const paused = () => specFor('paused');
      const killed = () => specFor('gone');
      const poweredOff = () => specFor('off');
      const saved = () => specFor('saved');

      it('re-attaches to VMs that kept running and tells what happened to the others', async () => {
        const first = await newDriver();
        await Promise.all([paused(), killed(), poweredOff(), saved()].map((s) => first.start(s)));
        await Promise.all(
          [paused(), poweredOff(), saved()].map((s) => waitForSerial(s.vmId, DEMO_READY_MARKER)),
        );
        await first.pause(paused().vmId);
        await first.suspend(saved().vmId);
        await first.close(); // the agent stops; its VMs do not

        // While no agent watches: one QEMU is killed, one guest powers itself off.
        process.kill(qemuPidsOf(killed().vmId)[0], 'SIGKILL');
        const qmp = await QmpClient.connect({
          socketPath: path.join(stateDir, poweredOff().vmId, 'qmp.sock'),
        });
        const off = qmp.waitForEvent('SHUTDOWN', { timeoutMs: 60_000 });
        await qmp.execute('system_powerdown');
        await off;
        qmp.close();
        expect(qemuPidsOf(poweredOff().vmId)).toHaveLength(1); // -no-shutdown: QEMU waits, runstate `shutdown`

        const second = await newDriver();
        const recovered = await second.recover();
        const byId = new Map(recovered.map((s) => [s.vmId, s]));
        expect(byId.get(paused().vmId)).toEqual({ vmId: paused().vmId, powerState: 'PAUSED' });
        expect(byId.get(killed().vmId)).toEqual({
          vmId: killed().vmId,
          powerState: 'HALTED',
          reason: 'QEMU process ended while no agent was watching (killed or crashed)',
        });
        expect(byId.get(poweredOff().vmId)).toEqual({
          vmId: poweredOff().vmId,
          powerState: 'HALTED',
          reason: 'guest shut down',
        });
        expect(qemuPidsOf(poweredOff().vmId)).toEqual([]);
        expect(byId.get(saved().vmId)).toEqual({ vmId: saved().vmId, powerState: 'SUSPENDED' });

        // The re-attached VM is under control again: it ticks on when unpaused.
        const at = logSize(paused().vmId);
        expect((await second.unpause(paused().vmId)).powerState).toBe('RUNNING');
        await waitForSerial(paused().vmId, TICK_LINE, at, 30_000);

        // And it is watched: killing it is reported (no signal known for a QEMU this agent did not spawn).
        const change = nextUnrequested(second, paused().vmId);
        process.kill(qemuPidsOf(paused().vmId)[0], 'SIGKILL');
        expect(await change).toMatchObject({
          powerState: 'HALTED',
          reason: expect.stringMatching(/QEMU process ended/),
        });

        // The suspended VM resumes under the new agent; a damaged image fails cleanly and keeps the VM SUSPENDED.
        const savedImage = path.join(stateDir, saved().vmId, 'saved-state.bin');
        const good = fs.readFileSync(savedImage);
        fs.writeFileSync(savedImage, good.subarray(0, Math.floor(good.length / 2)));
        await expect(second.resume(saved().vmId)).rejects.toMatchObject({ kind: 'failed' });
        expect(qemuPidsOf(saved().vmId)).toEqual([]);
        expect(await second.status(saved().vmId)).toEqual({ vmId: saved().vmId, powerState: 'SUSPENDED' });
        fs.writeFileSync(savedImage, good);
        const before = lastTick(saved().vmId);
        const resumedAt = logSize(saved().vmId);
        expect((await second.resume(saved().vmId)).powerState).toBe('RUNNING');
        await waitForSerial(saved().vmId, TICK_LINE, resumedAt, 30_000);
        expect(ticks(logSince(saved().vmId, resumedAt))[0]).toBeGreaterThan(before);

        const ids = [paused(), killed(), poweredOff(), saved()].map((s) => s.vmId);
        for (const id of ids) await second.destroy(id);
        expect((await second.list()).filter((s) => ids.includes(s.vmId))).toEqual([]);
      });
    });
  });
});
