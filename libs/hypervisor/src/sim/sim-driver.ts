import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  DriverCapabilities,
  DriverConsole,
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
import { simGuestMemoryLoad } from './sim-guest-load';
import { realSimTimers, SimOutgoing, SimTimers } from './sim-outgoing';

export interface SimDriverOptions {
  /** Where the simulated VMs are recorded, so they "keep running" across agent restarts. */
  stateDir: string;
  capacity: HostCapacity;
  /** Simulated latency of power operations, in ms (boot, shutdown…). 0 for scale tests. */
  operationLatencyMs?: number;
  sleep?: (ms: number) => Promise<void>;
  /**
   * Real ms per modelled ms of a live migration: 1 (default) runs the pre-copy model in real time; 0.001
   * makes a 4 s round take 4 ms, for scale tests. > 0.
   */
  migrationTimeScale?: number;
  /** Clock and timers of the migration model. */
  timers?: SimTimers;
}

interface SimVm {
  spec: DriverVmSpec;
  powerState: DriverStatusState;
  bootCount: number;
  /** Set while the VM waits here, paused, for this incoming migration (persisted, like the VM). */
  incomingMigrationId?: string;
}

const DOWNTIME_LIMIT_MS = { min: 1, max: 60_000 };
/**
 * The sim's migration and NBD "addresses": `sim:<listen host>/<migration id>` and the same with `/nbd`. No
 * socket stands behind them (two sim agents share no link; the model needs none), so they say so instead
 * of posing as host:port. The source checks that an address names its migration.
 */
const SIM_ADDRESS = /^sim:[^/\s]+\/([^/\s]+)$/;
const SIM_NBD_ADDRESS = /^sim:[^/\s]+\/([^/\s]+)\/nbd$/;

type DriverStatusState = DriverVmStatus['powerState'];

/**
 * A faithful simulated host: real capacity accounting and state transitions, persisted to the agent's state
 * directory; no guest runs. For scale tests and machines without QEMU — never to make a test of real
 * behaviour pass. Live migration runs the pre-copy model in scaled real time (see the migration section).
 */
export class SimDriver implements HypervisorDriver {
  readonly name = 'sim' as const;
  private readonly vms = new Map<string, SimVm>();
  private readonly file: string;
  private readonly sleep: (ms: number) => Promise<void>;
  /** Outgoing migrations by VM id; in memory only: an agent restart forgets them (the VM runs on here). */
  private readonly outgoing = new Map<string, SimOutgoing>();
  private readonly timeScale: number;

  constructor(private readonly options: SimDriverOptions) {
    this.file = path.join(options.stateDir, 'sim-vms.json');
    this.sleep = options.sleep ?? ((ms) => new Promise((r) => setTimeout(r, ms)));
    this.timeScale = options.migrationTimeScale ?? 1;
    if (!(this.timeScale > 0))
      throw new Error(
        `SimDriver migrationTimeScale ${this.timeScale} is not allowed: give a number > 0 (1 = real time)`,
      );
  }

  capabilities(): DriverCapabilities {
    return {
      accelerator: 'sim',
      acceleratorReason: 'sim driver: no guest runs',
      cpuModel: 'sim',
      cpuFlags: [],
      pause: true,
      suspend: true,
      liveMigration: true,
      postCopy: true,
      hotplugDisks: false,
      console: false,
    };
  }

  capacity(): HostCapacity {
    return this.options.capacity;
  }

  async recover(): Promise<DriverVmStatus[]> {
    fs.mkdirSync(this.options.stateDir, { recursive: true });
    this.vms.clear();
    for (const migration of this.outgoing.values()) migration.close();
    this.outgoing.clear();
    if (fs.existsSync(this.file)) {
      const saved = JSON.parse(fs.readFileSync(this.file, 'utf8')) as SimVm[];
      for (const vm of saved) this.vms.set(vm.spec.vmId, vm);
    }
    return this.list();
  }

  async start(spec: DriverVmSpec): Promise<DriverVmStatus> {
    const existing = this.vms.get(spec.vmId);
    if (existing?.powerState === 'SUSPENDED') return this.resume(spec.vmId);
    if (existing && existing.powerState !== 'HALTED') {
      if (existing.powerState === 'RUNNING') return this.statusOf(existing);
      throw new DriverError('invalid-state', `vm ${spec.vmId} is ${existing.powerState}, not HALTED`);
    }
    await this.latency();
    const vm: SimVm = { spec, powerState: 'RUNNING', bootCount: (existing?.bootCount ?? 0) + 1 };
    this.vms.set(spec.vmId, vm);
    this.save();
    return this.statusOf(vm);
  }

  async shutdown(vmId: string, _options: ShutdownOptions): Promise<DriverVmStatus> {
    const vm = this.get(vmId);
    if (vm.powerState === 'HALTED') return this.statusOf(vm);
    await this.latency();
    vm.powerState = 'HALTED';
    this.save();
    return this.statusOf(vm);
  }

  async reboot(vmId: string, _options: { hard: boolean }): Promise<DriverVmStatus> {
    const vm = this.get(vmId);
    if (vm.powerState === 'HALTED') throw new DriverError('invalid-state', `vm ${vmId} is HALTED`);
    this.refuseWhileHandedOver(vm);
    await this.latency();
    vm.powerState = 'RUNNING';
    vm.bootCount++;
    this.save();
    return this.statusOf(vm);
  }

  async pause(vmId: string): Promise<DriverVmStatus> {
    return this.transition(vmId, 'RUNNING', 'PAUSED');
  }

  async unpause(vmId: string): Promise<DriverVmStatus> {
    return this.transition(vmId, 'PAUSED', 'RUNNING');
  }

  async suspend(vmId: string): Promise<DriverVmStatus> {
    return this.transition(vmId, 'RUNNING', 'SUSPENDED');
  }

  async resume(vmId: string): Promise<DriverVmStatus> {
    return this.transition(vmId, 'SUSPENDED', 'RUNNING');
  }

  /** Simulated VMs never change state on their own. */
  onUnrequestedChange(): void {
    // nothing to subscribe to
  }

  async metrics(vmId: string): Promise<DriverVmMetrics> {
    this.get(vmId);
    throw new DriverError('unsupported', 'the sim driver runs no guest: it has no metrics');
  }

  // The sim driver models no disks: disk work answers 'unsupported' (UNIMPLEMENTED at the API), never a
  // pretend success.
  async plugDisk(): Promise<{ device: string }> {
    throw new DriverError('unsupported', 'the sim driver has no disks: hot-plug needs the qemu driver');
  }

  async unplugDisk(): Promise<void> {
    throw new DriverError('unsupported', 'the sim driver has no disks: hot-unplug needs the qemu driver');
  }

  async openDiskFiles(): Promise<string[]> {
    return [];
  }

  async snapshotDisk(): Promise<void> {
    throw new DriverError('unsupported', 'the sim driver has no disks: live snapshots need the qemu driver');
  }

  async resizeDisk(): Promise<void> {
    throw new DriverError('unsupported', 'the sim driver has no disks: online resize needs the qemu driver');
  }

  async streamDisk(): Promise<void> {
    throw new DriverError(
      'unsupported',
      'the sim driver has no disks: live coalescing needs the qemu driver',
    );
  }

  async consoleLog(vmId: string): Promise<Buffer> {
    this.get(vmId);
    throw new DriverError('unsupported', 'the sim driver runs no guest: it has no console');
  }

  async attachConsole(vmId: string): Promise<DriverConsole> {
    this.get(vmId);
    throw new DriverError('unsupported', 'the sim driver runs no guest: it has no console');
  }

  // ---- Live migration with the pre-copy model (sim-outgoing.ts) ----
  // No guest runs and no byte moves: the source runs the model of @flotilla/domain in (scaled) real time
  // with the guest's memory load read from its kernel command line (sim-guest-load.ts). The two agents are
  // separate processes with no link between them, so the destination trusts the caller: the migration
  // service calls finishIncoming only after the source reported 'completed' (or 'postcopy-active').

  /** A simulated VM's devices are its spec: nothing to hand over. */
  async deviceLayout(vmId: string): Promise<string> {
    if (!this.vms.has(vmId)) throw new DriverError('not-found', `vm ${vmId} is not defined on this host`);
    return '';
  }

  async prepareIncoming(spec: DriverVmSpec, options: DriverIncomingOptions): Promise<DriverIncoming> {
    const existing = this.vms.get(spec.vmId);
    if (existing?.incomingMigrationId === options.migrationId) return this.incomingOf(existing, options);
    if (existing)
      throw new DriverError(
        'invalid-state',
        existing.incomingMigrationId
          ? `vm ${spec.vmId} is already arriving here by migration ${existing.incomingMigrationId}`
          : `vm ${spec.vmId} is defined on this host (${existing.powerState}), not as the incoming VM of migration ${options.migrationId}`,
      );
    if (!options.listenHost)
      throw new DriverError('invalid-spec', 'listenHost is required: the migration address');
    const diskIds = new Set(spec.disks.map((d, i) => d.id ?? `disk${i}`));
    const unknown = options.receiveDiskIds.filter((id) => !diskIds.has(id));
    if (unknown.length > 0)
      throw new DriverError(
        'invalid-spec',
        `receiveDiskIds ${unknown.join(', ')} are not disks of vm ${spec.vmId}`,
      );
    this.checkMemoryFits(spec);
    // Recorded before any await: concurrent arrivals see each other's memory.
    const vm: SimVm = { spec, powerState: 'PAUSED', bootCount: 0, incomingMigrationId: options.migrationId };
    this.vms.set(spec.vmId, vm);
    this.save();
    await this.latency();
    return this.incomingOf(vm, options);
  }

  /**
   * The sim has no disk contents: a mirror models a full copy, at the bandwidth, of the bytes the disk's
   * file allocates on this host (0 when there is no such file), after which the disk is READY.
   */
  async startDiskMirror(
    vmId: string,
    migrationId: string,
    targets: DriverMirrorTarget[],
    bandwidthBytesPerSec: number,
  ): Promise<void> {
    const vm = this.migratable(vmId);
    const existing = this.outgoing.get(vmId);
    if (existing?.migrationId === migrationId) return;
    this.refuseOtherMigration(vmId, migrationId);
    if (!(bandwidthBytesPerSec > 0))
      throw new DriverError(
        'invalid-spec',
        `bandwidthBytesPerSec ${bandwidthBytesPerSec} is not allowed: must be > 0`,
      );
    const disks = targets.map((t) => {
      const disk = vm.spec.disks.find((d, i) => (d.id ?? `disk${i}`) === t.diskId);
      if (!disk) throw new DriverError('not-found', `vm ${vmId} has no disk ${t.diskId}`);
      if (SIM_NBD_ADDRESS.exec(t.nbdAddress)?.[1] !== migrationId)
        throw new DriverError(
          'invalid-spec',
          `nbdAddress ${t.nbdAddress} is not a sim host's NBD address for migration ${migrationId} (sim:<host>/${migrationId}/nbd)`,
        );
      return { diskId: t.diskId, totalBytes: allocatedBytes(disk.path) };
    });
    const migration = this.newOutgoing(vm, migrationId);
    migration.startMirror(disks, bandwidthBytesPerSec);
  }

  async startOutgoing(
    vmId: string,
    migrationId: string,
    destinationAddress: string,
    parameters: DriverMigrationParameters,
  ): Promise<void> {
    const vm = this.migratable(vmId);
    const existing = this.outgoing.get(vmId);
    if (existing?.migrationId === migrationId && existing.state !== 'mirroring') {
      if (existing.inFlight || existing.state === 'completed') return;
      throw new DriverError(
        'invalid-state',
        `migration ${migrationId} of vm ${vmId} ended ${existing.state}`,
      );
    }
    this.refuseOtherMigration(vmId, migrationId);
    checkParameters(parameters);
    const target = SIM_ADDRESS.exec(destinationAddress);
    if (!target || target[1] !== migrationId)
      throw new DriverError(
        'invalid-spec',
        `destination ${destinationAddress} is not a sim host's address for migration ${migrationId} (sim:<host>/${migrationId}): the sim migrates only to sim hosts`,
      );
    const migration = existing?.migrationId === migrationId ? existing : this.newOutgoing(vm, migrationId);
    migration.startMemory(parameters);
  }

  async outgoingStatus(vmId: string, migrationId: string, waitMs: number): Promise<DriverOutgoingStatus> {
    const migration = this.outgoingOf(vmId, migrationId);
    await migration.waitForChange(waitMs);
    return migration.status();
  }

  async tuneOutgoing(
    vmId: string,
    migrationId: string,
    tune: { bandwidthBytesPerSec?: number; startPostCopy?: boolean },
  ): Promise<void> {
    this.outgoingOf(vmId, migrationId).tune(tune);
  }

  async switchOver(vmId: string, migrationId: string): Promise<void> {
    this.outgoingOf(vmId, migrationId).switchOver();
  }

  async cancelOutgoing(vmId: string, migrationId: string): Promise<void> {
    const migration = this.outgoing.get(vmId);
    if (migration?.migrationId === migrationId) migration.cancel();
  }

  async finishIncoming(vmId: string, migrationId: string, _timeoutMs: number): Promise<DriverVmStatus> {
    const vm = this.vms.get(vmId);
    if (vm?.incomingMigrationId === migrationId) {
      delete vm.incomingMigrationId;
      vm.powerState = 'RUNNING';
      vm.bootCount = Math.max(1, vm.bootCount);
      this.save();
      return this.statusOf(vm);
    }
    if (vm && !vm.incomingMigrationId && (vm.powerState === 'RUNNING' || vm.powerState === 'PAUSED'))
      return this.statusOf(vm);
    throw new DriverError(
      'invalid-state',
      vm?.incomingMigrationId
        ? `vm ${vmId} is arriving by migration ${vm.incomingMigrationId}, not ${migrationId}`
        : `vm ${vmId} has no incoming migration ${migrationId} here and does not run here`,
    );
  }

  async abortIncoming(vmId: string, migrationId: string): Promise<void> {
    const vm = this.vms.get(vmId);
    if (!vm) return;
    if (vm.incomingMigrationId !== migrationId)
      throw new DriverError(
        'invalid-state',
        vm.incomingMigrationId
          ? `vm ${vmId} is arriving by migration ${vm.incomingMigrationId}, not ${migrationId}: not aborted`
          : `vm ${vmId} runs here as an ordinary VM (${vm.powerState}): not aborted`,
      );
    this.vms.delete(vmId);
    this.save();
  }

  async finishOutgoing(vmId: string, migrationId: string): Promise<void> {
    const migration = this.outgoing.get(vmId);
    const completed = migration?.migrationId === migrationId && migration.state === 'completed';
    if (!completed && !this.vms.has(vmId)) return;
    if (!completed)
      throw new DriverError(
        'invalid-state',
        migration?.migrationId === migrationId
          ? `migration ${migrationId} is ${migration.state}, not completed: the VM still needs the source`
          : `vm ${vmId} has no completed migration ${migrationId} here: the VM still needs the source`,
      );
    this.outgoing.delete(vmId);
    this.vms.delete(vmId);
    this.save();
  }

  async close(): Promise<void> {
    // No processes or sockets; migrations stop where they are.
    for (const migration of this.outgoing.values()) migration.close();
  }

  async destroy(vmId: string): Promise<void> {
    if (!this.vms.has(vmId)) return;
    await this.latency();
    this.outgoing.get(vmId)?.fail('the VM was destroyed on the source');
    this.vms.delete(vmId);
    this.save();
  }

  async status(vmId: string): Promise<DriverVmStatus | undefined> {
    const vm = this.vms.get(vmId);
    return vm && this.statusOf(vm);
  }

  async list(): Promise<DriverVmStatus[]> {
    return [...this.vms.values()].map((vm) => this.statusOf(vm));
  }

  private async transition(
    vmId: string,
    from: DriverStatusState,
    to: DriverStatusState,
  ): Promise<DriverVmStatus> {
    const vm = this.get(vmId);
    this.refuseWhileHandedOver(vm);
    if (vm.powerState === to) return this.statusOf(vm);
    if (vm.powerState !== from)
      throw new DriverError('invalid-state', `vm ${vmId} is ${vm.powerState}; expected ${from}`);
    await this.latency();
    vm.powerState = to;
    this.save();
    return this.statusOf(vm);
  }

  private get(vmId: string): SimVm {
    const vm = this.vms.get(vmId);
    if (!vm) throw new DriverError('not-found', `vm ${vmId} is not defined on this host`);
    return vm;
  }

  private statusOf(vm: SimVm): DriverVmStatus {
    // A source paused for the switchover, or whose guest now runs on the destination, is not running here.
    const handedOver = this.outgoing.get(vm.spec.vmId)?.holdsVm && vm.powerState === 'RUNNING';
    return { vmId: vm.spec.vmId, powerState: handedOver ? 'PAUSED' : vm.powerState };
  }

  /** The migration owns a source it paused for the switchover or handed over: no power operation may touch it. */
  private refuseWhileHandedOver(vm: SimVm): void {
    const migration = this.outgoing.get(vm.spec.vmId);
    if (migration?.holdsVm)
      throw new DriverError(
        'invalid-state',
        `vm ${vm.spec.vmId} is held by migration ${migration.migrationId} (${migration.state})`,
      );
  }

  private incomingOf(vm: SimVm, options: DriverIncomingOptions): DriverIncoming {
    const migrationAddress = `sim:${options.listenHost}/${options.migrationId}`;
    return {
      migrationAddress,
      ...(options.receiveDiskIds.length > 0 ? { nbdAddress: `${migrationAddress}/nbd` } : {}),
      nbdExports: Object.fromEntries(options.receiveDiskIds.map((id) => [id, `sim-${id}`])),
      status: this.statusOf(vm),
    };
  }

  /** Memory is not overcommitted: every VM that is not HALTED or SUSPENDED holds its memory. */
  private checkMemoryFits(spec: DriverVmSpec): void {
    const usedMib = [...this.vms.values()]
      .filter((v) => v.powerState === 'RUNNING' || v.powerState === 'PAUSED')
      .reduce((sum, v) => sum + v.spec.memoryMib, 0);
    const freeMib = this.options.capacity.memoryMib - usedMib;
    if (spec.memoryMib > freeMib)
      throw new DriverError(
        'capacity',
        `this host has ${Math.max(0, freeMib)} MiB of memory free (${this.options.capacity.memoryMib} MiB, ${usedMib} MiB in use); vm ${spec.vmId} needs ${spec.memoryMib} MiB`,
      );
  }

  /** A VM that runs here as an ordinary VM (not one arriving). */
  private migratable(vmId: string): SimVm {
    const vm = this.get(vmId);
    if (vm.incomingMigrationId)
      throw new DriverError(
        'invalid-state',
        `vm ${vmId} is arriving here by migration ${vm.incomingMigrationId}`,
      );
    if (vm.powerState !== 'RUNNING' && vm.powerState !== 'PAUSED')
      throw new DriverError(
        'invalid-state',
        `vm ${vmId} is ${vm.powerState}; live migration needs RUNNING or PAUSED`,
      );
    return vm;
  }

  private refuseOtherMigration(vmId: string, migrationId: string): void {
    const other = this.outgoing.get(vmId);
    if (other && other.migrationId !== migrationId && (other.inFlight || other.state === 'completed'))
      throw new DriverError(
        'invalid-state',
        `vm ${vmId} is in migration ${other.migrationId} (${other.state}); one migration at a time`,
      );
  }

  private newOutgoing(vm: SimVm, migrationId: string): SimOutgoing {
    const vmId = vm.spec.vmId;
    const migration = new SimOutgoing({
      vmId,
      migrationId,
      timers: this.options.timers ?? realSimTimers,
      timeScale: this.timeScale,
      load: () => {
        const current = this.vms.get(vmId);
        const load = simGuestMemoryLoad(vm.spec);
        return current?.powerState === 'PAUSED' ? { ...load, dirtyRateBytesPerSec: 0 } : load;
      },
      vmRuns: () => {
        const current = this.vms.get(vmId);
        return current === vm && (current.powerState === 'RUNNING' || current.powerState === 'PAUSED');
      },
    });
    this.outgoing.get(vmId)?.close();
    this.outgoing.set(vmId, migration);
    return migration;
  }

  private outgoingOf(vmId: string, migrationId: string): SimOutgoing {
    const migration = this.outgoing.get(vmId);
    if (migration?.migrationId !== migrationId)
      throw new DriverError('not-found', `no migration ${migrationId} of vm ${vmId} on this host`);
    return migration;
  }

  private latency(): Promise<void> {
    const ms = this.options.operationLatencyMs ?? 0;
    return ms > 0 ? this.sleep(ms) : Promise.resolve();
  }

  /** Write-then-rename: a crash leaves the old file or the new one, never half of one. */
  private save(): void {
    const tmp = `${this.file}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify([...this.vms.values()]));
    fs.renameSync(tmp, this.file);
  }
}

function checkParameters(p: DriverMigrationParameters): void {
  if (
    !Number.isInteger(p.downtimeLimitMs) ||
    p.downtimeLimitMs < DOWNTIME_LIMIT_MS.min ||
    p.downtimeLimitMs > DOWNTIME_LIMIT_MS.max
  )
    throw new DriverError(
      'invalid-spec',
      `downtimeLimitMs ${p.downtimeLimitMs} is out of range ${DOWNTIME_LIMIT_MS.min}..${DOWNTIME_LIMIT_MS.max}`,
    );
  if (!(p.bandwidthBytesPerSec > 0))
    throw new DriverError(
      'invalid-spec',
      `bandwidthBytesPerSec ${p.bandwidthBytesPerSec} is not allowed: must be > 0`,
    );
}

/** What a full mirror of the file copies: its allocated bytes (a sparse image copies little). */
function allocatedBytes(file: string): number {
  try {
    return fs.statSync(file).blocks * 512;
  } catch {
    return 0;
  }
}
