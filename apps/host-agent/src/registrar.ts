import { status } from '@grpc/grpc-js';
import { computeV1 } from '@flotilla/contracts';
import { HypervisorDriver } from '@flotilla/hypervisor';
import { GrpcClient, isGrpcStatus, Logger, md } from '@flotilla/platform';
import { toProto } from './agent.grpc';
import { HostRegistration } from './host-state';

export interface RegistrarOptions {
  name: string;
  address: string;
  computeUrl: string;
  serviceToken: string;
  labels: Record<string, string>;
  /** Memory not offered to VMs. */
  reservedMemoryMib: number;
}

/**
 * Keeps this host registered with its pool: registers (retrying while compute is away), heartbeats with
 * the VM states, re-registers when compute says the epoch is stale, and destroys VMs the pool placed
 * elsewhere.
 */
export class Registrar {
  private readonly compute: GrpcClient<computeV1.HostRegistryServiceClient>;
  private timer?: NodeJS.Timeout;
  private stopped = false;
  private intervalMs = 2000;
  private failures = 0;
  private busy = false;

  constructor(
    private readonly options: RegistrarOptions,
    private readonly registration: HostRegistration,
    private readonly driver: HypervisorDriver,
    private readonly logger: Logger,
  ) {
    this.compute = new GrpcClient({
      address: options.computeUrl,
      service: 'flotilla.compute.v1.HostRegistryService',
      defaultDeadlineMs: 5000,
      staticMetadata: { [md.serviceToken]: options.serviceToken },
    });
  }

  start(): void {
    this.schedule(0);
  }

  /** Heartbeats at once (a VM changed state on its own), unless a report is already under way. */
  reportNow(): void {
    if (this.stopped || this.busy || !this.registration.registered) return;
    clearTimeout(this.timer);
    this.schedule(0);
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.compute.close();
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.tick(), ms);
  }

  private async tick(): Promise<void> {
    this.busy = true;
    try {
      if (!this.registration.registered) await this.register();
      else await this.heartbeat();
      this.failures = 0;
      this.schedule(this.intervalMs);
    } catch (e) {
      this.failures++;
      if (isGrpcStatus(e, status.FAILED_PRECONDITION) || isGrpcStatus(e, status.NOT_FOUND)) {
        this.logger.warn(
          { reason: (e as Error).message },
          'compute refused the heartbeat: registering again',
        );
        this.registration.epoch = 0;
        return this.schedule(0);
      }
      // Rate-limited: one line per streak of failures, then every 30th.
      if (this.failures === 1 || this.failures % 30 === 0)
        this.logger.warn(
          { err: (e as Error).message, failures: this.failures },
          'cannot reach compute; retrying',
        );
      this.schedule(Math.min(10_000, 500 * 2 ** Math.min(this.failures, 5)));
    } finally {
      this.busy = false;
    }
  }

  private async register(): Promise<void> {
    const capacity = this.driver.capacity();
    const res = await this.compute.call.registerHost({
      name: this.options.name,
      address: this.options.address,
      driver: this.driver.name,
      ...this.hypervisor(),
      cpus: capacity.cpus,
      memoryMib: Math.max(0, capacity.memoryMib - this.options.reservedMemoryMib),
      labels: this.options.labels,
      vms: (await this.driver.list()).map(toProto),
    });
    this.registration.hostId = res.hostId;
    this.registration.epoch = res.epoch;
    this.intervalMs = res.heartbeatIntervalMs || this.intervalMs;
    this.logger.info({ hostId: res.hostId, epoch: res.epoch }, 'registered with compute');
    await this.destroy(res.destroyVmIds);
  }

  /** The accelerator and the CPU guests get with it: a late probe may change both (compute follows). */
  private hypervisor(): Pick<computeV1.RegisterHostRequest, 'accelerator' | 'cpuModel' | 'cpuFlags'> {
    const caps = this.driver.capabilities();
    return {
      accelerator: `${caps.accelerator} (${caps.acceleratorReason})`,
      cpuModel: caps.cpuModel,
      cpuFlags: caps.cpuFlags,
    };
  }

  private async heartbeat(): Promise<void> {
    const res = await this.compute.call.heartbeat({
      hostId: this.registration.hostId,
      epoch: this.registration.epoch,
      vms: (await this.driver.list()).map(toProto),
      ...this.hypervisor(),
    });
    this.intervalMs = res.heartbeatIntervalMs || this.intervalMs;
    await this.destroy(res.destroyVmIds);
  }

  private async destroy(vmIds: string[]): Promise<void> {
    for (const id of vmIds) {
      const running = (await this.driver.status(id))?.powerState !== 'HALTED';
      if (running) this.logger.warn({ vmId: id }, 'the pool places this VM elsewhere: destroying it here');
      else
        this.logger.info(
          { vmId: id },
          'removing the definition of a halted VM the pool no longer places here',
        );
      await this.driver.destroy(id);
    }
  }
}
