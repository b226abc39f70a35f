import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { postCopySafe } from '@flotilla/domain';
import {
  DriverCapabilities,
  DriverConsole,
  DriverDisk,
  DriverError,
  DriverIncoming,
  DriverIncomingOptions,
  DriverMigrationParameters,
  DriverMirrorTarget,
  DriverOutgoingStatus,
  DriverVmMetrics,
  DriverVmSpec,
  DriverVmStatus,
  HostCapacity,
  HypervisorDriver,
  ShutdownOptions,
} from '../driver';
import { AcceleratorChoice, AcceleratorVerdict, chooseAccelerator, ProbeGuest } from './accel-probe';
import { guestCpuOf, HostCpu, parseCpuinfo } from './guest-cpu';
import {
  buildQemuArgv,
  initialDiskLayout,
  initialRootPorts,
  QemuLaunchSpec,
  SPARE_DISK_PORTS,
  vmUuid,
} from './qemu-command';
import {
  asDriverError,
  insertedNode,
  openFiles,
  peripheralIds,
  plugDevice,
  releaseDiskNodes,
  snapshotDevice,
  streamDevice,
  unplugDevice,
} from './qemu-disk-ops';
import {
  diskDeviceId,
  diskNodeName,
  nextGuestDiskName,
  QemuLaunchDisk,
  resolveBackingChain,
  supportsDirectIo,
} from './qemu-disks';
import { diskMetrics, readProcessCpuTimeNs, readResidentMemoryBytes } from './qemu-metrics';
import { freeTcpPort, userfaultfdAvailable } from './qemu-migration-qmp';
import { MigrationHost, QemuMigrations } from './qemu-migration';
import {
  adoptQemu,
  findLiveQemu,
  QEMU_BINARY,
  QemuExit,
  qemuLogTail,
  QemuProcess,
  signalQemu,
  spawnQemu,
  waitForProcessExit,
} from './qemu-process';
import { QemuRunState, QmpClient, QmpConnectionError, QmpError } from './qmp-client';
import { describeLayout, withSourceLayout } from './device-layout';
import { restoreVmState, saveVmState } from './saved-state';
import { SerialConsoleHub, tailFile, trimLogFile } from './serial-console';
import { VmDirectory } from './vm-directory';
import {
  validateDiskId,
  validateDriverDisk,
  validateDriverVmSpec,
  validateHostPath,
  validateVmId,
} from './vm-spec-validation';

export interface QemuDriverOptions {
  /** Absolute; one directory per VM below it (see vm-directory.ts). */
  stateDir: string;
  /** FLOTILLA_ACCEL: 'kvm' or 'tcg' skips the probe; 'auto' (default) probes with `probeGuest`. */
  accelerator?: AcceleratorChoice;
  /**
   * The tiny guest the KVM probe boots (the demo kernel with demo.probe=1). A function is asked again at
   * each VM start while the verdict was taken without a guest, so a host that got its demo kernel after
   * the agent started still gets a real probe (and KVM where it works) without a restart.
   */
  probeGuest?: ProbeGuest | (() => Promise<ProbeGuest | undefined>);
  binary?: string;
  /** A clean reboot waits this long for the guest to power off before resetting it anyway. Default 60 s. */
  cleanRebootTimeoutMs?: number;
  /** Deadline of suspend and resume (moving the memory image). Default 120 s. */
  saveRestoreTimeoutMs?: number;
  /**
   * FLOTILLA_DISK_CACHE: 'direct' opens disk files with O_DIRECT (cache.direct=on, aio=native: no double
   * caching in the host page cache, the speed of dd here); 'writeback' uses the page cache; 'auto'
   * (default) is direct wherever the file's filesystem supports O_DIRECT (tmpfs does not).
   */
  diskCache?: 'auto' | 'direct' | 'writeback';
  /** Root ports kept free at start for disks hot-plugged later. Default SPARE_DISK_PORTS (4). */
  spareDiskPorts?: number;
  /** How long streamDisk waits for its block-stream job. Default 1 h. */
  diskJobTimeoutMs?: number;
  /** /proc/cpuinfo's text (what guests see under KVM); replaced in tests. Read once, at create. */
  readCpuinfo?: () => string;
  /** Picks the host port of a forward the spec leaves to the driver; replaced in tests. */
  pickHostPort?: () => Promise<number>;
  log?: (line: string) => void;
}

/** A VM whose QEMU this driver is connected to and watching. */
interface VmHandle {
  dir: VmDirectory;
  launch: QemuLaunchSpec;
  process: QemuProcess;
  qmp: QmpClient;
  /** Set before the driver itself powers the guest off or stops QEMU: those events are not unrequested. */
  expectShutdown: boolean;
  expectExit: boolean;
  console?: SerialConsoleHub;
}

const REASON_GUEST_SHUTDOWN = 'guest shut down';
const REASON_GUEST_PANIC = 'guest crashed (kernel panic)';
const REASON_GONE_UNWATCHED = 'QEMU process ended while no agent was watching (killed or crashed)';

/** Empty where there is none (not Linux): guests then report an unknown model and no flags. */
function readProcCpuinfo(): string {
  try {
    return fs.readFileSync('/proc/cpuinfo', 'utf8');
  } catch {
    return '';
  }
}

async function probeGuestOf(options: QemuDriverOptions): Promise<ProbeGuest | undefined> {
  return typeof options.probeGuest === 'function' ? options.probeGuest() : options.probeGuest;
}

function describeExit(exit: QemuExit | undefined): string {
  if (!exit) return 'QEMU process ended while the agent was watching (killed or crashed)';
  if (exit.signal) return `QEMU process was killed by ${exit.signal}`;
  return `QEMU process exited with code ${exit.code}`;
}

/**
 * Why the guest crashed, as its console said it ("Kernel panic - not syncing: …"), when the panic line is in
 * the console's last few KiB: an operator reads the cause in the VM's state reason without the console.
 */
export function panicReason(serialLog: string): string {
  const tail = tailFile(serialLog, 8192).toString('utf8');
  const line = tail
    .split(/\r?\n/)
    .reverse()
    .find((l) => /Kernel panic/.test(l));
  const said = line
    ?.replace(/^.*?Kernel panic/, 'Kernel panic')
    // Terminal escapes, then any other control character: the reason is plain text.
    // eslint-disable-next-line no-control-regex
    .replace(/\u001b\[[0-9;?]*[A-Za-z]|[\u0000-\u001f\u007f]/g, '')
    .trim()
    .slice(0, 200);
  return said ? `${REASON_GUEST_PANIC}: ${said}` : REASON_GUEST_PANIC;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** A loopback port nobody listens on right now (the kernel picks it). */
const freeLoopbackPort = (): Promise<number> => freeTcpPort('127.0.0.1');

/**
 * Launches of a first start, at most: a host port the driver picked is free when picked, but another process
 * may bind it before QEMU does; then QEMU exits at start and the driver picks again.
 */
const PORT_PICK_ATTEMPTS = 3;
const HOSTFWD_FAILED = /could not set up host forwarding rule/i;

/** Background attempts at releasing block nodes QEMU kept after a guest released a disk (see releaseLater). */
const RELEASE_RETRIES = 30;
/** Least time an unplug waits for QEMU to close a released disk's file before it fails (see unplugDisk). */
const RELEASE_PATIENCE_MS = 5000;

/**
 * Real VMs: one detached `qemu-system-x86_64` per VM, controlled over QMP, with everything the host holds for
 * the VM in `<stateDir>/<vmId>/` so VMs outlive the agent and a new agent re-attaches (recover).
 *
 * Truth comes from QEMU (`query-status`, the process); state.json only records what the agent intended and
 * why a VM halted, to explain a QEMU that is no longer there. Operations on one VM are serialised.
 */
export class QemuDriver implements HypervisorDriver {
  readonly name = 'qemu' as const;
  private readonly handles = new Map<string, VmHandle>();
  private readonly locks = new Map<string, Promise<unknown>>();
  private readonly listeners: ((status: DriverVmStatus) => void)[] = [];
  private readonly binary: string;
  private readonly log: (line: string) => void;
  private closed = false;
  private readonly userfaultfd = userfaultfdAvailable();
  private readonly migrations: QemuMigrations<VmHandle>;

  private constructor(
    private readonly options: QemuDriverOptions,
    private accel: AcceleratorVerdict,
    /** Set while the verdict was taken without a probe guest and one may still come. */
    private probeLater: boolean,
    private readonly hostCpu: HostCpu,
  ) {
    this.binary = options.binary ?? QEMU_BINARY;
    this.log = options.log ?? (() => undefined);
    this.migrations = new QemuMigrations(this.migrationHost());
  }

  /** Checks the options, chooses the accelerator (probe or override) and returns a driver; call recover() next. */
  static async create(options: QemuDriverOptions): Promise<QemuDriver> {
    validateHostPath('stateDir', options.stateDir);
    fs.mkdirSync(options.stateDir, { recursive: true, mode: 0o700 });
    const guest = await probeGuestOf(options);
    const verdict = await chooseAccelerator({
      stateDir: options.stateDir,
      choice: options.accelerator,
      guest,
      binary: options.binary,
    });
    options.log?.(`qemu driver: accelerator ${verdict.accelerator} (${verdict.reason})`);
    const later =
      !guest && typeof options.probeGuest === 'function' && (options.accelerator ?? 'auto') === 'auto';
    return new QemuDriver(options, verdict, later, parseCpuinfo((options.readCpuinfo ?? readProcCpuinfo)()));
  }

  /** Probes now if the first verdict had no guest to probe with and one has arrived since. */
  private async probeIfGuestArrived(): Promise<void> {
    if (!this.probeLater) return;
    const guest = await probeGuestOf(this.options);
    if (!guest) return;
    this.probeLater = false;
    this.accel = await chooseAccelerator({
      stateDir: this.options.stateDir,
      choice: 'auto',
      guest,
      binary: this.options.binary,
    });
    this.log(`qemu driver: probe guest found: accelerator ${this.accel.accelerator} (${this.accel.reason})`);
  }

  capabilities(): DriverCapabilities {
    // Computed at each call: a late probe may change the accelerator, and the CPU guests get with it.
    const cpu = guestCpuOf(this.accel.accelerator, this.hostCpu);
    return {
      accelerator: this.accel.accelerator,
      acceleratorReason: this.accel.reason,
      cpuModel: cpu.model,
      cpuFlags: cpu.flags,
      pause: true,
      suspend: true,
      liveMigration: true,
      postCopy: this.postCopyRefusal() === undefined,
      hotplugDisks: true,
      console: true,
    };
  }

  capacity(): HostCapacity {
    return { cpus: os.availableParallelism(), memoryMib: Math.floor(os.totalmem() / (1024 * 1024)) };
  }

  onUnrequestedChange(listener: (status: DriverVmStatus) => void): void {
    this.listeners.push(listener);
  }

  // --- recovery -----------------------------------------------------------------------------------------

  async recover(): Promise<DriverVmStatus[]> {
    const out: DriverVmStatus[] = [];
    for (const vmId of VmDirectory.list(this.options.stateDir)) {
      try {
        out.push(await this.withLock(vmId, () => this.recoverOne(vmId)));
      } catch (e) {
        // One VM that cannot be read must not hide the others; report what its files say.
        this.log(`vm ${vmId}: recover failed: ${(e as Error).message}`);
        const status = await this.status(vmId).catch(() => undefined);
        if (status) out.push(status);
      }
    }
    return out;
  }

  private async recoverOne(vmId: string): Promise<DriverVmStatus> {
    const existing = this.handles.get(vmId);
    if (existing) return this.statusOf(existing);
    const dir = new VmDirectory(this.options.stateDir, vmId);
    const launch = dir.readSpec();
    if (!launch) return { vmId, powerState: 'HALTED' };
    const pid = findLiveQemu(dir, launch.uuid);
    if (pid === undefined) {
      dir.removeRuntimeFiles();
      if (dir.hasSavedState()) return this.record(dir, 'SUSPENDED');
      const state = dir.readState();
      if (state && (state.intended === 'RUNNING' || state.intended === 'PAUSED'))
        return this.record(dir, 'HALTED', REASON_GONE_UNWATCHED);
      return { vmId, powerState: 'HALTED', ...(state?.reason ? { reason: state.reason } : {}) };
    }
    let qmp: QmpClient;
    try {
      qmp = await QmpClient.connect({ socketPath: dir.qmpSocket, timeoutMs: 5000 });
    } catch (e) {
      // A QEMU that answers nobody cannot be managed: stop it rather than leave a VM nobody controls.
      this.log(`vm ${vmId}: QEMU pid ${pid} does not answer on QMP (${(e as Error).message}): stopping it`);
      signalQemu(pid, launch.uuid, 'SIGKILL');
      await waitForProcessExit(pid, 5000);
      dir.removeRuntimeFiles();
      return this.record(
        dir,
        'HALTED',
        `QEMU did not answer on QMP and was stopped: ${(e as Error).message}`,
      );
    }
    const handle = this.watch({ dir, launch, process: adoptQemu(pid), qmp });
    const { status } = await qmp.execute('query-status');
    switch (status) {
      case 'shutdown':
        await this.stopQemu(handle);
        return this.record(dir, 'HALTED', REASON_GUEST_SHUTDOWN);
      case 'guest-panicked':
        await this.stopQemu(handle);
        return this.record(dir, 'HALTED', panicReason(dir.serialLog));
      case 'inmigrate':
      case 'postmigrate':
      case 'finish-migrate':
        // An interrupted resume (the image was not loaded) or a suspend whose image is complete: the saved
        // state is the VM. Otherwise the QEMU still holds the only copy of the guest: keep it.
        if (dir.readMigration()?.role !== 'incoming' && (dir.hasSavedState() || status === 'inmigrate')) {
          await this.stopQemu(handle);
          return this.record(dir, dir.hasSavedState() ? 'SUSPENDED' : 'HALTED', 'interrupted resume');
        }
        return this.statusOf(handle);
      default:
        // Running or paused: a live QEMU beats a leftover image from an interrupted resume.
        fs.rmSync(dir.savedState, { force: true });
        return this.statusOf(handle);
    }
  }

  // --- lifecycle ----------------------------------------------------------------------------------------

  async start(spec: DriverVmSpec): Promise<DriverVmStatus> {
    const valid = validateDriverVmSpec(spec);
    await this.probeIfGuestArrived();
    return this.withLock(valid.vmId, async () => {
      const dir = new VmDirectory(this.options.stateDir, valid.vmId);
      const handle = this.handles.get(valid.vmId) ?? (await this.adoptLive(dir));
      if (handle) {
        const status = await this.statusOf(handle);
        if (status.powerState === 'RUNNING') return status;
        throw new DriverError('invalid-state', `vm ${valid.vmId} is ${status.powerState}, not HALTED`);
      }
      if (dir.hasSavedState()) return this.resumeLocked(dir);
      const picksPorts = valid.nics.some((n) => n.forwards.some((f) => !f.hostPort));
      for (let attempt = 1; ; attempt++) {
        const launch = await this.newLaunch(valid);
        const argv = buildQemuArgv(launch, dir.runtimePaths);
        dir.create();
        dir.writeSpec(launch);
        dir.writeState('RUNNING');
        try {
          return await this.statusOf(await this.launch(dir, launch, argv));
        } catch (e) {
          const message = (e as Error).message;
          if (picksPorts && attempt < PORT_PICK_ATTEMPTS && HOSTFWD_FAILED.test(message)) {
            this.log(
              `vm ${valid.vmId}: a host port it was given was taken before QEMU bound it: picking again`,
            );
            continue;
          }
          this.record(dir, 'HALTED', `start failed: ${message}`);
          throw e;
        }
      }
    });
  }

  async shutdown(vmId: string, options: ShutdownOptions): Promise<DriverVmStatus> {
    validateVmId(vmId);
    return this.withLock(vmId, async () => {
      const dir = this.existingDir(vmId);
      const handle = this.handles.get(vmId) ?? (await this.adoptLive(dir));
      if (!handle) {
        if (dir.hasSavedState()) {
          if (!options.hard)
            throw new DriverError(
              'invalid-state',
              `vm ${vmId} is SUSPENDED: only a hard shutdown discards its saved state`,
            );
          fs.rmSync(dir.savedState, { force: true });
        }
        return this.record(dir, 'HALTED');
      }
      dir.writeState('HALTED');
      if (!options.hard && options.timeoutMs > 0) {
        const off = await this.powerButtonAndWait(handle, options.timeoutMs);
        if (!off) this.log(`vm ${vmId}: guest did not power off within ${options.timeoutMs} ms: hard stop`);
      }
      await this.stopQemu(handle);
      return this.record(dir, 'HALTED');
    });
  }

  /**
   * Clean reboot: the power button, wait for the guest to power off (QEMU stays, thanks to -no-shutdown),
   * then reset and continue in the same process — the guest reboots through its own shutdown path and the
   * VM keeps its QEMU, ports and console. A guest that ignores the button is reset after
   * cleanRebootTimeoutMs. Hard reboot: system_reset at once.
   */
  async reboot(vmId: string, options: { hard: boolean }): Promise<DriverVmStatus> {
    validateVmId(vmId);
    return this.withLock(vmId, async () => {
      const handle = await this.requireRunning(vmId);
      if (!options.hard) {
        const off = await this.powerButtonAndWait(handle, this.options.cleanRebootTimeoutMs ?? 60_000);
        if (!off) this.log(`vm ${vmId}: guest did not power off for a clean reboot: resetting it`);
      }
      await handle.qmp.execute('system_reset');
      const { status } = await handle.qmp.execute('query-status');
      if (status !== 'running') await handle.qmp.execute('cont');
      handle.expectShutdown = false;
      handle.dir.writeState('RUNNING');
      return this.statusOf(handle);
    });
  }

  async pause(vmId: string): Promise<DriverVmStatus> {
    validateVmId(vmId);
    return this.withLock(vmId, async () => {
      const handle = await this.requireRunning(vmId);
      await handle.qmp.execute('stop');
      handle.dir.writeState('PAUSED');
      return this.statusOf(handle);
    });
  }

  async unpause(vmId: string): Promise<DriverVmStatus> {
    validateVmId(vmId);
    return this.withLock(vmId, async () => {
      const handle = await this.requireRunning(vmId);
      const { status } = await handle.qmp.execute('query-status');
      if (status !== 'running') await handle.qmp.execute('cont');
      handle.dir.writeState('RUNNING');
      return this.statusOf(handle);
    });
  }

  async suspend(vmId: string): Promise<DriverVmStatus> {
    validateVmId(vmId);
    return this.withLock(vmId, async () => {
      const dir = this.existingDir(vmId);
      const handle = this.handles.get(vmId) ?? (await this.adoptLive(dir));
      if (!handle) {
        if (dir.hasSavedState()) return { vmId, powerState: 'SUSPENDED' };
        throw new DriverError(
          'invalid-state',
          `vm ${vmId} is HALTED: only a running or paused VM can be suspended`,
        );
      }
      // The saved state holds exactly the devices QEMU has: spec.json must list the same disks for resume.
      await this.forgetReleasedDisks(handle);
      // Stopped first: the image is one consistent instant and the stream ends at once (nothing is dirtied).
      await handle.qmp.execute('stop');
      try {
        const bytes = await saveVmState({
          qmp: handle.qmp,
          socketPath: dir.migrationSocket,
          file: dir.savedState,
          timeoutMs: this.options.saveRestoreTimeoutMs ?? 120_000,
        });
        this.log(`vm ${vmId}: saved ${bytes} bytes of state`);
      } catch (e) {
        await handle.qmp.execute('cont').catch(() => undefined);
        throw new DriverError(
          'failed',
          `vm ${vmId}: suspend failed, the VM keeps running: ${(e as Error).message}`,
        );
      }
      dir.writeState('SUSPENDED');
      await this.stopQemu(handle);
      return { vmId, powerState: 'SUSPENDED' };
    });
  }

  async resume(vmId: string): Promise<DriverVmStatus> {
    validateVmId(vmId);
    return this.withLock(vmId, async () => {
      const dir = this.existingDir(vmId);
      const handle = this.handles.get(vmId) ?? (await this.adoptLive(dir));
      if (handle) {
        const status = await this.statusOf(handle);
        if (status.powerState === 'RUNNING') return status;
        throw new DriverError('invalid-state', `vm ${vmId} is ${status.powerState}, not SUSPENDED`);
      }
      if (!dir.hasSavedState()) throw new DriverError('invalid-state', `vm ${vmId} is HALTED, not SUSPENDED`);
      return this.resumeLocked(dir);
    });
  }

  private async resumeLocked(dir: VmDirectory): Promise<DriverVmStatus> {
    const launch = dir.readSpec();
    if (!launch) throw new DriverError('failed', `vm ${dir.vmId}: saved state without spec.json`);
    // The chains are read again: the files are checked at every launch, not only the first.
    const layout = this.layoutOf(launch);
    launch.disks = layout.map((place, i) => ({ ...place, ...this.diskFiles(launch.vm.disks[i]) }));
    const handle = await this.launch(
      dir,
      launch,
      buildQemuArgv(launch, dir.runtimePaths, { incoming: true }),
    );
    try {
      await restoreVmState({
        qmp: handle.qmp,
        socketPath: dir.migrationSocket,
        file: dir.savedState,
        timeoutMs: this.options.saveRestoreTimeoutMs ?? 120_000,
      });
      // The incoming side finishes loading just after it reports completion: wait to leave `inmigrate`.
      const deadline = Date.now() + 10_000;
      while ((await handle.qmp.execute('query-status')).status === 'inmigrate') {
        if (Date.now() > deadline) throw new Error('QEMU stayed in inmigrate after the state was loaded');
        await sleep(20);
      }
      await handle.qmp.execute('cont');
    } catch (e) {
      await this.stopQemu(handle);
      throw new DriverError(
        'failed',
        `vm ${dir.vmId}: resume failed, the saved state is kept: ${(e as Error).message}`,
      );
    }
    dir.writeState('RUNNING');
    fs.rmSync(dir.savedState, { force: true });
    return this.statusOf(handle);
  }

  async destroy(vmId: string): Promise<void> {
    validateVmId(vmId);
    return this.withLock(vmId, async () => {
      await this.removeVmHere(new VmDirectory(this.options.stateDir, vmId));
    });
  }

  async status(vmId: string): Promise<DriverVmStatus | undefined> {
    validateVmId(vmId);
    const handle = this.handles.get(vmId);
    if (handle) return this.statusOf(handle);
    const dir = new VmDirectory(this.options.stateDir, vmId);
    if (!dir.exists()) return undefined;
    if (dir.hasSavedState()) return { vmId, powerState: 'SUSPENDED' };
    const state = dir.readState();
    return { vmId, powerState: 'HALTED', ...(state?.reason ? { reason: state.reason } : {}) };
  }

  async list(): Promise<DriverVmStatus[]> {
    const out: DriverVmStatus[] = [];
    for (const vmId of VmDirectory.list(this.options.stateDir)) {
      const s = await this.status(vmId);
      if (s) out.push(s);
    }
    return out;
  }

  async metrics(vmId: string): Promise<DriverVmMetrics> {
    validateVmId(vmId);
    const handle = await this.requireRunning(vmId);
    const blockstats = await handle.qmp.execute('query-blockstats');
    return {
      vmId,
      cpuTimeNs: readProcessCpuTimeNs(handle.process.pid),
      residentMemoryBytes: readResidentMemoryBytes(handle.process.pid),
      disks: diskMetrics(blockstats, handle.launch.disks ?? []),
      // User-mode (slirp) netdevs keep no per-NIC counters QEMU 7.2 exposes over QMP; taps will (from /sys).
      nics: [],
    };
  }

  async plugDisk(vmId: string, disk: DriverDisk & { id: string }): Promise<{ device: string }> {
    validateVmId(vmId);
    const valid = validateDriverDisk('disk', disk);
    if (valid.id === undefined) throw new DriverError('invalid-spec', 'disk.id: is required to hot-plug');
    const id = valid.id;
    return this.withLock(vmId, async () => {
      const handle = await this.requireRunning(vmId);
      const { launch } = handle;
      const layout = this.layoutOf(launch);
      const at = layout.findIndex((d) => d.id === id);
      const present = (await peripheralIds(handle.qmp)).has(diskDeviceId(id));
      if (at >= 0 && present) {
        if (launch.vm.disks[at].path !== valid.path)
          throw new DriverError(
            'invalid-state',
            `disk ${id} is plugged into vm ${vmId} with ${launch.vm.disks[at].path}, not ${valid.path}`,
          );
        return { device: layout[at].guestName };
      }
      if (present)
        throw new DriverError('failed', `vm ${vmId}: QEMU has a device for disk ${id} that spec.json lacks`);
      const other = launch.vm.disks.findIndex((d, i) => i !== at && d.path === valid.path);
      if (other >= 0)
        throw new DriverError(
          'invalid-state',
          `${valid.path} is plugged into vm ${vmId} as disk ${layout[other].id}`,
        );
      let place: QemuLaunchDisk;
      if (at >= 0) {
        // Recorded by an earlier call that did not finish: same port, same name.
        place = { ...layout[at], ...this.diskFiles(valid) };
        launch.vm.disks[at] = valid;
        layout[at] = place;
      } else {
        const used = new Set(layout.map((d) => d.port));
        const port = [...Array(launch.rootPorts ?? 0).keys()].find((p) => !used.has(p));
        if (port === undefined)
          throw new DriverError(
            'capacity',
            `vm ${vmId} has no free PCIe port for another disk (${launch.rootPorts} ports, all in use): ` +
              'add the disk while the VM is halted',
          );
        place = {
          id,
          port,
          guestName: nextGuestDiskName(layout.map((d) => d.guestName)),
          ...this.diskFiles(valid),
        };
        launch.vm.disks.push(valid);
        layout.push(place);
      }
      // Recorded before QEMU changes: a crash in between leaves a disk that the next plug completes (or
      // suspend forgets), never a device that spec.json does not know.
      handle.dir.writeSpec(launch);
      try {
        await plugDevice(handle.qmp, valid, place);
      } catch (e) {
        await releaseDiskNodes(handle.qmp, id).catch(() => undefined);
        this.dropDisk(handle, id);
        throw asDriverError(e, `vm ${vmId}: hot-plug of disk ${id} failed`);
      }
      this.log(`vm ${vmId}: disk ${id} plugged (${place.guestName} likely, port rp${place.port})`);
      return { device: place.guestName };
    });
  }

  /**
   * Without force or with it, the guest must release the disk: QEMU 7.2 has no surprise removal of a PCIe
   * device, and a block node cannot be deleted while a device uses it. A guest that keeps the disk gets
   * 'timeout'; the request stays pending in QEMU, and when the guest lets go later (or the VM stops) the
   * driver finishes the unplug by itself (see the DEVICE_DELETED handler in watch()).
   */
  async unplugDisk(
    vmId: string,
    diskId: string,
    options: { timeoutMs: number; force: boolean },
  ): Promise<void> {
    validateVmId(vmId);
    validateDiskId(diskId, 'diskId');
    const timeoutMs = options.timeoutMs;
    if (!Number.isInteger(timeoutMs) || timeoutMs < 0 || timeoutMs > 3_600_000)
      throw new DriverError('invalid-spec', `timeoutMs: must be 0-3600000, got ${timeoutMs}`);
    return this.withLock(vmId, async () => {
      const dir = this.existingDir(vmId);
      const handle = this.handles.get(vmId) ?? (await this.adoptLive(dir));
      if (!handle) {
        if (dir.hasSavedState())
          throw new DriverError(
            'invalid-state',
            `vm ${vmId} is SUSPENDED and its saved state includes its disks: resume it to unplug one`,
          );
        return; // HALTED: nothing is plugged
      }
      const started = Date.now();
      try {
        if (!(await unplugDevice(handle.qmp, diskId, timeoutMs)))
          throw new DriverError(
            'timeout',
            `vm ${vmId}: the guest did not release disk ${diskId} within ${timeoutMs} ms` +
              (options.force
                ? ' (even forced: QEMU cannot take a PCIe device from a guest that holds it; stop the VM to free it)'
                : '') +
              '; the request stays pending and completes when the guest releases the disk',
          );
        // Unplugged means the file is closed: an export or another VM's attach may follow at once. QEMU
        // closes it after the device is freed, which a loaded host delays; the rest of the budget is waited.
        const patienceMs = Math.max(RELEASE_PATIENCE_MS, timeoutMs - (Date.now() - started));
        const left = await this.releaseDisk(handle, diskId, patienceMs);
        if (left.held.length)
          throw new DriverError(
            'timeout',
            `vm ${vmId}: the guest released disk ${diskId}, but QEMU still holds ${left.held.join(', ')} ` +
              `open after ${patienceMs} ms (${left.reason}); it keeps trying to close it: retry the unplug`,
          );
      } catch (e) {
        throw asDriverError(e, `vm ${vmId}: unplug of disk ${diskId} failed`);
      }
      this.dropDisk(handle, diskId);
    });
  }

  async openDiskFiles(vmId: string): Promise<string[]> {
    validateVmId(vmId);
    const dir = this.existingDir(vmId);
    const handle = this.handles.get(vmId);
    if (handle)
      return openFiles(handle.qmp).catch((e: unknown) => Promise.reject(asDriverError(e, `vm ${vmId}`)));
    // A suspended VM opens its files again on resume: they are as good as open.
    if (!dir.hasSavedState()) return [];
    const launch = dir.readSpec();
    const layout = launch?.disks ?? [];
    return [
      ...new Set((launch?.vm.disks ?? []).flatMap((d, i) => [d.path, ...(layout[i]?.backing ?? [])])),
    ].sort();
  }

  async snapshotDisk(vmId: string, topPath: string, newTopPath: string): Promise<void> {
    validateVmId(vmId);
    validateHostPath('topPath', topPath);
    validateHostPath('newTopPath', newTopPath);
    // The overlay must be a qcow2 sibling whose header names exactly the current top (checked by Flotilla's
    // inspector, like every file QEMU opens).
    const newChain = resolveBackingChain(newTopPath, 'qcow2');
    if (newChain[0] !== topPath)
      throw new DriverError(
        'invalid-spec',
        `newTopPath: ${newTopPath} must be a qcow2 overlay backed by ${path.basename(topPath)} in the same directory`,
      );
    return this.withLock(vmId, async () => {
      const handle = await this.requireRunning(vmId);
      const layout = this.layoutOf(handle.launch);
      const at = handle.launch.vm.disks.findIndex((d) => d.path === topPath || d.path === newTopPath);
      if (at < 0) throw new DriverError('not-found', `vm ${vmId} has no disk whose top file is ${topPath}`);
      const disk = handle.launch.vm.disks[at];
      if (disk.format !== 'qcow2')
        throw new DriverError('invalid-spec', `${topPath}: only qcow2 disks have snapshots`);
      if (disk.path === topPath) {
        try {
          await snapshotDevice(handle.qmp, disk, layout[at], newTopPath);
        } catch (e) {
          throw asDriverError(e, `vm ${vmId}: live snapshot of ${topPath} failed`);
        }
      }
      handle.launch.vm.disks[at] = { ...disk, path: newTopPath };
      layout[at] = { ...layout[at], backing: newChain };
      handle.dir.writeSpec(handle.launch);
      this.log(`vm ${vmId}: disk ${layout[at].id} now writes to ${newTopPath}`);
    });
  }

  async resizeDisk(vmId: string, topPath: string, sizeBytes: number): Promise<void> {
    validateVmId(vmId);
    validateHostPath('topPath', topPath);
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes % 512 !== 0)
      throw new DriverError(
        'invalid-spec',
        `sizeBytes: must be a positive multiple of 512, got ${sizeBytes}`,
      );
    return this.withLock(vmId, async () => {
      const handle = await this.requireRunning(vmId);
      const { id } = this.diskByTop(handle, topPath);
      try {
        const current = (await insertedNode(handle.qmp, id))?.image['virtual-size'];
        if (current === undefined)
          throw new DriverError('invalid-state', `disk ${id} is not plugged into vm ${vmId}`);
        if (sizeBytes < current)
          throw new DriverError(
            'invalid-spec',
            `sizeBytes: ${sizeBytes} is below the disk's ${current} bytes: shrinking would cut off guest data`,
          );
        if (sizeBytes === current) return;
        await handle.qmp.execute('block_resize', { 'node-name': diskNodeName(id, topPath), size: sizeBytes });
      } catch (e) {
        throw asDriverError(e, `vm ${vmId}: resize of ${topPath} failed`);
      }
    });
  }

  async streamDisk(vmId: string, topPath: string, baseFile: string | undefined): Promise<void> {
    validateVmId(vmId);
    validateHostPath('topPath', topPath);
    // A plain name is a sibling of the top (how headers name backing files); else an absolute path.
    const base =
      baseFile === undefined
        ? undefined
        : baseFile.includes('/')
          ? validateHostPath('baseFile', baseFile)
          : validateHostPath('baseFile', path.join(path.dirname(topPath), baseFile));
    return this.withLock(vmId, async () => {
      const handle = await this.requireRunning(vmId);
      const { at, id } = this.diskByTop(handle, topPath);
      const disk = handle.launch.vm.disks[at];
      // The headers are the truth about the chain: a stream that completed before a crash shows there.
      const chain = resolveBackingChain(topPath, disk.format);
      if (base !== undefined && !chain.includes(base))
        throw new DriverError('invalid-spec', `baseFile: ${base} is not in the backing chain of ${topPath}`);
      const merged = base === undefined ? chain : chain.slice(0, chain.indexOf(base));
      if (merged.length > 0) {
        try {
          await streamDevice(handle.qmp, {
            diskId: id,
            top: topPath,
            base,
            baseName: base && path.basename(base),
            timeoutMs: this.options.diskJobTimeoutMs ?? 3_600_000,
          });
          // Layers that were the top of a live snapshot are still held by the monitor: close them.
          for (const file of merged)
            await handle.qmp
              .execute('blockdev-del', { 'node-name': diskNodeName(id, file) })
              .catch(() => undefined);
        } catch (e) {
          throw asDriverError(e, `vm ${vmId}: block-stream of ${topPath} failed`);
        }
      }
      this.layoutOf(handle.launch)[at].backing = resolveBackingChain(topPath, disk.format);
      handle.dir.writeSpec(handle.launch);
    });
  }

  async consoleLog(vmId: string, maxBytes: number): Promise<Buffer> {
    validateVmId(vmId);
    const dir = this.existingDir(vmId);
    return tailFile(dir.serialLog, maxBytes);
  }

  async attachConsole(vmId: string): Promise<DriverConsole> {
    validateVmId(vmId);
    const handle = await this.requireRunning(vmId);
    handle.console ??= new SerialConsoleHub(handle.dir.consoleSocket);
    return handle.console.attach();
  }

  // ---- Live migration: qemu-migration.ts, with this driver's lock and QEMUs ----

  prepareIncoming(spec: DriverVmSpec, options: DriverIncomingOptions): Promise<DriverIncoming> {
    return this.migrations.prepareIncoming(spec, options);
  }
  deviceLayout(vmId: string): Promise<string> {
    return this.withLock(vmId, async () => {
      const handle = await this.requireRunning(vmId);
      return describeLayout(handle.launch.rootPorts ?? 0, this.layoutOf(handle.launch));
    });
  }
  startDiskMirror(
    vmId: string,
    migrationId: string,
    targets: DriverMirrorTarget[],
    bandwidthBytesPerSec: number,
  ): Promise<void> {
    return this.migrations.startDiskMirror(vmId, migrationId, targets, bandwidthBytesPerSec);
  }
  startOutgoing(
    vmId: string,
    migrationId: string,
    destinationAddress: string,
    parameters: DriverMigrationParameters,
  ): Promise<void> {
    return this.migrations.startOutgoing(vmId, migrationId, destinationAddress, parameters);
  }
  outgoingStatus(vmId: string, migrationId: string, waitMs: number): Promise<DriverOutgoingStatus> {
    return this.migrations.outgoingStatus(vmId, migrationId, waitMs);
  }
  tuneOutgoing(
    vmId: string,
    migrationId: string,
    tune: { bandwidthBytesPerSec?: number; startPostCopy?: boolean },
  ): Promise<void> {
    return this.migrations.tuneOutgoing(vmId, migrationId, tune);
  }
  switchOver(vmId: string, migrationId: string): Promise<void> {
    return this.migrations.switchOver(vmId, migrationId);
  }
  cancelOutgoing(vmId: string, migrationId: string): Promise<void> {
    return this.migrations.cancelOutgoing(vmId, migrationId);
  }
  finishIncoming(vmId: string, migrationId: string, timeoutMs: number): Promise<DriverVmStatus> {
    return this.migrations.finishIncoming(vmId, migrationId, timeoutMs);
  }
  abortIncoming(vmId: string, migrationId: string): Promise<void> {
    return this.migrations.abortIncoming(vmId, migrationId);
  }
  finishOutgoing(vmId: string, migrationId: string): Promise<void> {
    return this.migrations.finishOutgoing(vmId, migrationId);
  }

  /** Why this host takes no part in post-copy migrations, or undefined when it may. */
  private postCopyRefusal(): string | undefined {
    if (!this.userfaultfd) return 'this host has no usable userfaultfd';
    // Computed at each call, as the accelerator may settle after a late probe.
    if (!postCopySafe(this.accel.accelerator))
      return "this host runs its guests under TCG, where QEMU's post-copy corrupts the memory of some guests";
    return undefined;
  }

  /** What the migration methods may use of this driver. */
  private migrationHost(): MigrationHost<VmHandle> {
    return {
      stateDir: this.options.stateDir,
      postCopyRefusal: () => this.postCopyRefusal(),
      log: (line) => this.log(line),
      withLock: (vmId, fn) => this.withLock(vmId, fn),
      handle: async (dir) => this.handles.get(dir.vmId) ?? (await this.adoptLive(dir)),
      requireRunning: (vmId) => this.requireRunning(vmId),
      launchIncoming: async (dir, spec, sourceLayout) => {
        await this.probeIfGuestArrived();
        const launch = withSourceLayout(await this.newLaunch(spec), sourceLayout);
        dir.writeSpec(launch);
        dir.writeState('PAUSED');
        return this.launch(dir, launch, buildQemuArgv(launch, dir.runtimePaths, { incoming: true }));
      },
      stopQemu: (handle) => this.stopQemu(handle),
      removeVm: (dir) => this.removeVmHere(dir),
      statusOf: (handle) => this.statusOf(handle),
    };
  }

  /** Stops the VM's QEMU (a planned exit) and removes its directory; disk files are not in it. */
  private async removeVmHere(dir: VmDirectory): Promise<void> {
    const handle = this.handles.get(dir.vmId) ?? (await this.adoptLive(dir).catch(() => undefined));
    if (handle) await this.stopQemu(handle);
    // A QEMU that would not even answer QMP (adoptLive failed) is still found by its pidfile.
    const launch = dir.readSpec();
    const pid = launch && findLiveQemu(dir, launch.uuid);
    if (pid && launch) {
      signalQemu(pid, launch.uuid, 'SIGKILL');
      await waitForProcessExit(pid, 5000);
    }
    dir.remove();
  }

  async close(): Promise<void> {
    this.closed = true;
    // Let operations in flight finish, then drop connections: the VMs keep running.
    await Promise.allSettled([...this.locks.values()]);
    for (const handle of this.handles.values()) {
      handle.console?.close();
      handle.qmp.close();
    }
    this.handles.clear();
  }

  // --- internals ----------------------------------------------------------------------------------------

  /** Serialises operations per VM; a failed operation does not block the next one. */
  private withLock<T>(vmId: string, fn: () => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(new DriverError('failed', 'the qemu driver is closed'));
    const previous = this.locks.get(vmId) ?? Promise.resolve();
    const next = previous.then(fn, fn);
    const settled = next.catch(() => undefined);
    this.locks.set(vmId, settled);
    void settled.then(() => {
      if (this.locks.get(vmId) === settled) this.locks.delete(vmId);
    });
    return next;
  }

  private existingDir(vmId: string): VmDirectory {
    const dir = new VmDirectory(this.options.stateDir, vmId);
    if (!dir.exists()) throw new DriverError('not-found', `vm ${vmId} is not defined on this host`);
    return dir;
  }

  /** Attaches to a live QEMU of this VM that this driver instance does not watch yet (no recover() call). */
  private async adoptLive(dir: VmDirectory): Promise<VmHandle | undefined> {
    const launch = dir.readSpec();
    if (!launch) return undefined;
    const pid = findLiveQemu(dir, launch.uuid);
    if (pid === undefined) return undefined;
    try {
      const qmp = await QmpClient.connect({ socketPath: dir.qmpSocket, timeoutMs: 5000 });
      return this.watch({ dir, launch, process: adoptQemu(pid), qmp });
    } catch (e) {
      throw new DriverError(
        'failed',
        `vm ${dir.vmId}: QEMU pid ${pid} runs but does not answer QMP: ${(e as Error).message}`,
      );
    }
  }

  private async requireRunning(vmId: string): Promise<VmHandle> {
    const dir = this.existingDir(vmId);
    const handle = this.handles.get(vmId) ?? (await this.adoptLive(dir));
    if (!handle)
      throw new DriverError('invalid-state', `vm ${vmId} is ${dir.hasSavedState() ? 'SUSPENDED' : 'HALTED'}`);
    return handle;
  }

  /** The files of a disk as they are now: its backing chain read from the headers, and its cache mode. */
  private diskFiles(disk: DriverDisk): Pick<QemuLaunchDisk, 'backing' | 'cacheDirect'> {
    const backing = resolveBackingChain(disk.path, disk.format);
    const mode = this.options.diskCache ?? 'auto';
    return { backing, cacheDirect: mode === 'direct' || (mode === 'auto' && supportsDirectIo(disk.path)) };
  }

  /** launch.disks, filled in for a spec.json written before disks had placements. */
  private layoutOf(launch: QemuLaunchSpec): QemuLaunchDisk[] {
    launch.vm.disks = launch.vm.disks.map((d, i) => ({ ...d, id: d.id ?? `disk${i}` }));
    launch.rootPorts ??= initialRootPorts(launch.vm, 0);
    launch.disks ??= initialDiskLayout(launch.vm);
    return launch.disks;
  }

  private diskByTop(handle: VmHandle, topPath: string): { at: number; id: string } {
    const at = handle.launch.vm.disks.findIndex((d) => d.path === topPath);
    if (at < 0)
      throw new DriverError('not-found', `vm ${handle.dir.vmId} has no disk whose top file is ${topPath}`);
    return { at, id: this.layoutOf(handle.launch)[at].id };
  }

  /** Removes a disk from spec.json (it is no longer plugged). */
  private dropDisk(handle: VmHandle, diskId: string): void {
    const layout = this.layoutOf(handle.launch);
    const at = layout.findIndex((d) => d.id === diskId);
    if (at < 0) return;
    layout.splice(at, 1);
    handle.launch.vm.disks.splice(at, 1);
    handle.dir.writeSpec(handle.launch);
  }

  /** Disks spec.json lists whose device QEMU no longer has (a guest released it late): closed and forgotten. */
  private async forgetReleasedDisks(handle: VmHandle): Promise<void> {
    const devices = await peripheralIds(handle.qmp);
    for (const place of [...this.layoutOf(handle.launch)]) {
      if (devices.has(diskDeviceId(place.id))) continue;
      await this.releaseDisk(handle, place.id);
      this.dropDisk(handle, place.id);
      this.log(`vm ${handle.dir.vmId}: disk ${place.id} was released by the guest`);
    }
  }

  /**
   * Closes the block nodes of a disk whose device is gone. QEMU frees a removed device's drive only after an
   * RCU grace period, which a loaded TCG host can stretch to many seconds: what it still holds after
   * releaseDiskNodes' patience is released in the background (releaseLater) rather than kept open for the
   * VM's lifetime.
   */
  private async releaseDisk(
    handle: VmHandle,
    diskId: string,
    patienceMs = RELEASE_PATIENCE_MS,
  ): Promise<{ held: string[]; reason: string }> {
    const left = await releaseDiskNodes(handle.qmp, diskId, patienceMs);
    if (!left.held.length) return left;
    this.log(
      `vm ${handle.dir.vmId}: disk ${diskId}: QEMU keeps ${left.held.join(', ')} open: ${left.reason}`,
    );
    this.releaseLater(handle, diskId, RELEASE_RETRIES);
    return left;
  }

  /**
   * Block nodes QEMU still kept after the guest released their disk (a loaded host lets go late): released
   * in the background, a few more times, so that the file is not held open for the VM's lifetime.
   */
  private releaseLater(handle: VmHandle, diskId: string, triesLeft: number): void {
    if (triesLeft <= 0) return;
    const vmId = handle.dir.vmId;
    setTimeout(() => {
      void this.withLock(vmId, async () => {
        if (this.handles.get(vmId) !== handle || handle.expectExit) return;
        const left = await releaseDiskNodes(handle.qmp, diskId, 0);
        if (left.held.length) this.releaseLater(handle, diskId, triesLeft - 1);
        else this.log(`vm ${vmId}: QEMU let go of disk ${diskId} at last`);
      }).catch((err: unknown) => this.log(`vm ${vmId}: releasing disk ${diskId}: ${(err as Error).message}`));
    }, 1000).unref();
  }

  /** A first launch of a validated spec: disk ids, host ports, PCIe ports and chains fixed now, once. */
  private async newLaunch(valid: DriverVmSpec): Promise<QemuLaunchSpec> {
    // Disks without an id are named by their position now, once: later plugs and unplugs shift positions.
    const vm: DriverVmSpec = {
      ...valid,
      disks: valid.disks.map((d, i) => ({ ...d, id: d.id ?? `disk${i}` })),
      nics: await this.resolveHostPorts(valid.nics),
    };
    return {
      vm,
      uuid: vmUuid(valid.vmId),
      accelerator: this.accel.accelerator,
      rootPorts: initialRootPorts(vm, this.options.spareDiskPorts ?? SPARE_DISK_PORTS),
      disks: initialDiskLayout(vm, (d) => this.diskFiles(d)),
    };
  }

  private async resolveHostPorts(nics: DriverVmSpec['nics']): Promise<DriverVmSpec['nics']> {
    const out: DriverVmSpec['nics'] = [];
    for (const nic of nics) {
      const forwards = [];
      for (const f of nic.forwards)
        forwards.push({
          guestPort: f.guestPort,
          hostPort: f.hostPort || (await (this.options.pickHostPort ?? freeLoopbackPort)()),
        });
      out.push({ mac: nic.mac, forwards });
    }
    return out;
  }

  private async launch(dir: VmDirectory, launch: QemuLaunchSpec, argv: string[]): Promise<VmHandle> {
    // Console history survives restarts, within bounds (a chatty guest must not fill the host's disk
    // across boots; within one boot QEMU has no cap).
    trimLogFile(dir.serialLog, 16 * 1024 * 1024, 1024 * 1024);
    trimLogFile(dir.qemuLog, 4 * 1024 * 1024, 256 * 1024);
    // A short socket directory lives on a tmpfs: gone after a host reboot, while a suspended VM is not.
    dir.create();
    const proc = await spawnQemu({ dir, uuid: launch.uuid, argv, binary: this.binary });
    let qmp: QmpClient;
    try {
      qmp = await QmpClient.connect({ socketPath: dir.qmpSocket, timeoutMs: 5000 });
    } catch (e) {
      // QEMU opens its QMP socket before it sets up, e.g., port forwards: when those fail it exits right
      // after, and its log says why.
      const exitedByItself = await Promise.race([
        proc.exited.then(() => true),
        sleep(1000).then(() => false),
      ]);
      if (!exitedByItself) proc.child?.kill('SIGKILL');
      await proc.exited;
      dir.removeRuntimeFiles();
      const why = exitedByItself
        ? qemuLogTail(dir) || (e as Error).message
        : `QMP failed: ${(e as Error).message}`;
      throw new DriverError('failed', `vm ${dir.vmId}: QEMU exited at start: ${why}`);
    }
    this.log(`vm ${dir.vmId}: QEMU pid ${proc.pid} (${launch.accelerator})`);
    return this.watch({ dir, launch, process: proc, qmp });
  }

  /** Registers the handle and reacts to what happens without being asked: poweroff, panic, QEMU dying. */
  private watch(h: Omit<VmHandle, 'expectShutdown' | 'expectExit'>): VmHandle {
    const handle: VmHandle = { ...h, expectShutdown: false, expectExit: false };
    const vmId = handle.dir.vmId;
    this.handles.set(vmId, handle);
    handle.qmp.on('SHUTDOWN', (e) => {
      if (e.data.guest && !handle.expectShutdown && !handle.expectExit)
        this.unrequested(handle, REASON_GUEST_SHUTDOWN, true);
    });
    handle.qmp.on('GUEST_PANICKED', () => {
      if (!handle.expectExit) this.unrequested(handle, panicReason(handle.dir.serialLog), true);
    });
    // A disk the guest released on its own, or after an unplug that timed out: finish the unplug.
    handle.qmp.on('DEVICE_DELETED', (e) => {
      const device = e.data.device;
      if (!device || !(handle.launch.disks ?? []).some((d) => diskDeviceId(d.id) === device)) return;
      void this.withLock(vmId, async () => {
        if (this.handles.get(vmId) === handle && !handle.expectExit) await this.forgetReleasedDisks(handle);
      }).catch((err: unknown) =>
        this.log(`vm ${vmId}: cleaning up after ${device}: ${(err as Error).message}`),
      );
    });
    void handle.process.exited.then((exit) => {
      if (!handle.expectExit) this.unrequested(handle, describeExit(exit), false);
    });
    return handle;
  }

  private unrequested(handle: VmHandle, reason: string, qemuStillRuns: boolean): void {
    const vmId = handle.dir.vmId;
    if (this.closed) return;
    void this.withLock(vmId, async () => {
      // Another operation (destroy, shutdown) may have dealt with this VM while we waited for the lock.
      if (this.handles.get(vmId) !== handle || handle.expectExit) return;
      this.log(`vm ${vmId}: ${reason}`);
      if (qemuStillRuns) await this.stopQemu(handle);
      else this.forget(handle);
      // The source still runs the VM when an incoming QEMU ends (QEMU exits when the source cancels or
      // the stream breaks): the migration failed, not the VM; abortIncoming cleans up.
      if (handle.dir.readMigration()?.role === 'incoming') {
        this.record(handle.dir, 'HALTED', `incoming migration ended: ${reason}`);
        return;
      }
      const status = this.record(handle.dir, 'HALTED', reason);
      for (const l of this.listeners) l(status);
    }).catch((e: unknown) => this.log(`vm ${vmId}: handling "${reason}" failed: ${(e as Error).message}`));
  }

  /** The guest's power button, then wait for the guest to power off. False when it did not in time. */
  private async powerButtonAndWait(handle: VmHandle, timeoutMs: number): Promise<boolean> {
    handle.expectShutdown = true;
    const { status } = await handle.qmp.execute('query-status');
    if (status === 'shutdown') return true;
    // A paused guest cannot act on the button: it runs again for its own shutdown.
    if (status !== 'running') await handle.qmp.execute('cont').catch(() => undefined);
    const off = handle.qmp.waitForEvent('SHUTDOWN', { timeoutMs, predicate: (e) => e.data.guest });
    off.catch(() => undefined);
    await handle.qmp.execute('system_powerdown');
    try {
      await off;
      return true;
    } catch (e) {
      if (e instanceof QmpConnectionError && e.kind !== 'timeout') throw e;
      return false;
    }
  }

  /** Ends the VM's QEMU: `quit`, then SIGKILL if it has not exited in a few seconds. Idempotent. */
  private async stopQemu(handle: VmHandle): Promise<void> {
    handle.expectExit = true;
    const { pid } = handle.process;
    await handle.qmp.execute('quit', undefined, { timeoutMs: 2000 }).catch((e: unknown) => {
      // The connection dropping is what a successful quit looks like.
      if (!(e instanceof QmpConnectionError || e instanceof QmpError)) throw e;
    });
    if (!(await waitForProcessExit(pid, 5000))) {
      this.log(`vm ${handle.dir.vmId}: QEMU pid ${pid} ignored quit: SIGKILL`);
      signalQemu(pid, handle.launch.uuid, 'SIGKILL');
      if (!(await waitForProcessExit(pid, 5000)))
        throw new DriverError('failed', `vm ${handle.dir.vmId}: QEMU pid ${pid} survives SIGKILL`);
    }
    this.forget(handle);
  }

  private forget(handle: VmHandle): void {
    handle.expectExit = true;
    handle.console?.close();
    handle.qmp.close();
    handle.dir.removeRuntimeFiles();
    if (this.handles.get(handle.dir.vmId) === handle) this.handles.delete(handle.dir.vmId);
  }

  private record(
    dir: VmDirectory,
    powerState: DriverVmStatus['powerState'],
    reason?: string,
  ): DriverVmStatus {
    dir.writeState(powerState, reason);
    return { vmId: dir.vmId, powerState, ...(reason ? { reason } : {}) };
  }

  private async statusOf(handle: VmHandle): Promise<DriverVmStatus> {
    const vmId = handle.dir.vmId;
    let runState: QemuRunState;
    try {
      runState = (await handle.qmp.execute('query-status', undefined, { timeoutMs: 5000 })).status;
    } catch {
      // Going away right now: the exit watcher records why.
      return { vmId, powerState: 'HALTED', reason: 'QEMU is not answering' };
    }
    if (runState === 'shutdown') return { vmId, powerState: 'HALTED', reason: REASON_GUEST_SHUTDOWN };
    if (runState === 'guest-panicked')
      return { vmId, powerState: 'HALTED', reason: panicReason(handle.dir.serialLog) };
    const powerState = runState === 'running' ? 'RUNNING' : 'PAUSED';
    const forwards = handle.launch.vm.nics.flatMap((nic) =>
      nic.forwards.map((f) => ({ guestPort: f.guestPort, hostAddress: `127.0.0.1:${f.hostPort}` })),
    );
    return { vmId, powerState, ...(forwards.length ? { forwards } : {}) };
  }
}

/** Where a VM's files live, for tools and tests that clean up after a driver: `<stateDir>/<vmId>`. */
export function qemuVmDir(stateDir: string, vmId: string): string {
  return path.join(stateDir, validateVmId(vmId));
}
