import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  DriverCapabilities,
  DriverConsole,
  DriverError,
  DriverIncoming,
  DriverOutgoingStatus,
  DriverVmMetrics,
  DriverVmSpec,
  DriverVmStatus,
  HostCapacity,
  HypervisorDriver,
  ShutdownOptions,
} from '../driver';

export interface SimDriverOptions {
  /** Where the simulated VMs are recorded, so they "keep running" across agent restarts. */
  stateDir: string;
  capacity: HostCapacity;
  /** Simulated latency of power operations, in ms (boot, shutdown…). 0 for scale tests. */
  operationLatencyMs?: number;
  sleep?: (ms: number) => Promise<void>;
}

interface SimVm {
  spec: DriverVmSpec;
  powerState: DriverStatusState;
  bootCount: number;
}

type DriverStatusState = DriverVmStatus['powerState'];

/**
 * A faithful simulated host: real capacity accounting and state transitions, persisted to the agent's state
 * directory; no guest runs. For scale tests and machines without QEMU — never to make a test of real
 * behaviour pass.
 */
export class SimDriver implements HypervisorDriver {
  readonly name = 'sim' as const;
  private readonly vms = new Map<string, SimVm>();
  private readonly file: string;
  private readonly sleep: (ms: number) => Promise<void>;

  constructor(private readonly options: SimDriverOptions) {
    this.file = path.join(options.stateDir, 'sim-vms.json');
    this.sleep = options.sleep ?? ((ms) => new Promise((r) => setTimeout(r, ms)));
  }

  capabilities(): DriverCapabilities {
    return {
      accelerator: 'sim',
      acceleratorReason: 'sim driver: no guest runs',
      pause: true,
      suspend: true,
      liveMigration: false,
      postCopy: false,
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

  // ---- Live migration: not built in this driver yet ----
  prepareIncoming(): Promise<DriverIncoming> {
    return Promise.reject(new DriverError('unsupported', 'live migration is not built yet'));
  }
  startDiskMirror(): Promise<void> {
    return Promise.reject(new DriverError('unsupported', 'live migration is not built yet'));
  }
  startOutgoing(): Promise<void> {
    return Promise.reject(new DriverError('unsupported', 'live migration is not built yet'));
  }
  outgoingStatus(): Promise<DriverOutgoingStatus> {
    return Promise.reject(new DriverError('unsupported', 'live migration is not built yet'));
  }
  tuneOutgoing(): Promise<void> {
    return Promise.reject(new DriverError('unsupported', 'live migration is not built yet'));
  }
  switchOver(): Promise<void> {
    return Promise.reject(new DriverError('unsupported', 'live migration is not built yet'));
  }
  cancelOutgoing(): Promise<void> {
    return Promise.reject(new DriverError('unsupported', 'live migration is not built yet'));
  }
  finishIncoming(): Promise<DriverVmStatus> {
    return Promise.reject(new DriverError('unsupported', 'live migration is not built yet'));
  }
  abortIncoming(): Promise<void> {
    return Promise.reject(new DriverError('unsupported', 'live migration is not built yet'));
  }
  finishOutgoing(): Promise<void> {
    return Promise.reject(new DriverError('unsupported', 'live migration is not built yet'));
  }

  async close(): Promise<void> {
    // no processes or sockets to release
  }

  async destroy(vmId: string): Promise<void> {
    if (!this.vms.has(vmId)) return;
    await this.latency();
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
    return { vmId: vm.spec.vmId, powerState: vm.powerState };
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
