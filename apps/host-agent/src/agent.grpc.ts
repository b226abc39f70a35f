import { Metadata } from '@grpc/grpc-js';
import { Controller, Inject, Optional } from '@nestjs/common';
import { GrpcMethod, GrpcStreamMethod } from '@nestjs/microservices';
import { Observable } from 'rxjs';
import { computeV1 } from '@flotilla/contracts';
import { DomainError, ErrorCode, invalidArgument, validateIntRange } from '@flotilla/domain';
import { DriverConsole, DriverVmStatus, HypervisorDriver } from '@flotilla/hypervisor';
import { ServiceIdentity } from '@flotilla/platform';
import { withDriverErrors } from './agent.errors';
import { HostRegistration, PerVmQueue } from './host-state';
import { HostImageCatalogue } from './image-catalogue';
import { SrPaths } from './sr-paths';
import { VmSpecResolver } from './vm-spec';

export const HYPERVISOR_DRIVER = 'HYPERVISOR_DRIVER';

/** Commands from compute, carried out by the driver one at a time per VM. */
@Controller()
export class AgentGrpc implements computeV1.AgentServiceController {
  private readonly queue: PerVmQueue;
  private readonly specs: VmSpecResolver;

  constructor(
    @Inject(ServiceIdentity) private readonly identity: ServiceIdentity,
    @Inject(HostRegistration) private readonly registration: HostRegistration,
    @Inject(HYPERVISOR_DRIVER) private readonly driver: HypervisorDriver,
    @Inject(HostImageCatalogue) catalogue: HostImageCatalogue,
    /** Checks every disk file against FLOTILLA_SR_ROOTS and the SR marker; absent: disks are refused. */
    @Inject(SrPaths) srPaths: SrPaths,
    /** Shared with MigrationAgentGrpc, so that a VM's migration steps never interleave with its commands. */
    @Optional() @Inject(PerVmQueue) queue?: PerVmQueue,
  ) {
    this.specs = new VmSpecResolver(catalogue, srPaths);
    this.queue = queue ?? new PerVmQueue();
  }

  @GrpcMethod('AgentService', 'StartVm')
  startVm(
    req: computeV1.AgentServiceStartVmRequest,
    md: Metadata,
  ): Promise<computeV1.AgentServiceStartVmResponse> {
    const spec = req.spec;
    if (!spec?.vmId)
      throw new DomainError(ErrorCode.InvalidArgument, 'spec.vm_id: is required', { field: 'spec.vm_id' });
    return this.command(md, req.epoch, spec.vmId, async () => ({
      status: toProto(await this.driver.start(this.specs.vmSpec(spec))),
    }));
  }

  @GrpcMethod('AgentService', 'ShutdownVm')
  shutdownVm(
    req: computeV1.AgentServiceShutdownVmRequest,
    md: Metadata,
  ): Promise<computeV1.AgentServiceShutdownVmResponse> {
    return this.command(md, req.epoch, req.vmId, async () => ({
      status: toProto(
        await this.driver.shutdown(req.vmId, { hard: req.hard, timeoutMs: req.timeoutMs || 60_000 }),
      ),
    }));
  }

  @GrpcMethod('AgentService', 'RebootVm')
  rebootVm(
    req: computeV1.AgentServiceRebootVmRequest,
    md: Metadata,
  ): Promise<computeV1.AgentServiceRebootVmResponse> {
    return this.command(md, req.epoch, req.vmId, async () => ({
      status: toProto(await this.driver.reboot(req.vmId, { hard: req.hard })),
    }));
  }

  @GrpcMethod('AgentService', 'PauseVm')
  pauseVm(
    req: computeV1.AgentServicePauseVmRequest,
    md: Metadata,
  ): Promise<computeV1.AgentServicePauseVmResponse> {
    return this.command(md, req.epoch, req.vmId, async () => ({
      status: toProto(await this.driver.pause(req.vmId)),
    }));
  }

  @GrpcMethod('AgentService', 'UnpauseVm')
  unpauseVm(
    req: computeV1.AgentServiceUnpauseVmRequest,
    md: Metadata,
  ): Promise<computeV1.AgentServiceUnpauseVmResponse> {
    return this.command(md, req.epoch, req.vmId, async () => ({
      status: toProto(await this.driver.unpause(req.vmId)),
    }));
  }

  @GrpcMethod('AgentService', 'DestroyVm')
  destroyVm(
    req: computeV1.AgentServiceDestroyVmRequest,
    md: Metadata,
  ): Promise<computeV1.AgentServiceDestroyVmResponse> {
    return this.command(md, req.epoch, req.vmId, async () => {
      await this.driver.destroy(req.vmId);
      return {};
    });
  }

  @GrpcMethod('AgentService', 'SuspendVm')
  suspendVm(
    req: computeV1.AgentServiceSuspendVmRequest,
    md: Metadata,
  ): Promise<computeV1.AgentServiceSuspendVmResponse> {
    return this.command(md, req.epoch, req.vmId, async () => ({
      status: toProto(await this.driver.suspend(req.vmId)),
    }));
  }

  @GrpcMethod('AgentService', 'ResumeVm')
  resumeVm(
    req: computeV1.AgentServiceResumeVmRequest,
    md: Metadata,
  ): Promise<computeV1.AgentServiceResumeVmResponse> {
    return this.command(md, req.epoch, req.vmId, async () => ({
      status: toProto(await this.driver.resume(req.vmId)),
    }));
  }

  @GrpcMethod('AgentService', 'GetVmConsoleLog')
  async getVmConsoleLog(
    req: computeV1.AgentServiceGetVmConsoleLogRequest,
    md: Metadata,
  ): Promise<computeV1.AgentServiceGetVmConsoleLogResponse> {
    this.identity.verify(md);
    const maxBytes = validateIntRange('max_bytes', req.maxBytes, 1, 16 * 1024 * 1024);
    return { data: await this.read(() => this.driver.consoleLog(req.vmId, maxBytes)) };
  }

  @GrpcMethod('AgentService', 'GetVmMetrics')
  async getVmMetrics(
    req: computeV1.AgentServiceGetVmMetricsRequest,
    md: Metadata,
  ): Promise<computeV1.AgentServiceGetVmMetricsResponse> {
    this.identity.verify(md);
    const m = await this.read(() => this.driver.metrics(req.vmId));
    return { metrics: { ...m, sampledAt: new Date() } };
  }

  @GrpcMethod('AgentService', 'PlugVmDisk')
  plugVmDisk(
    req: computeV1.AgentServicePlugVmDiskRequest,
    md: Metadata,
  ): Promise<computeV1.AgentServicePlugVmDiskResponse> {
    return this.command(md, req.epoch, req.vmId, async () => {
      if (!req.disk) throw invalidArgument('disk', 'is required');
      this.requireHotplug();
      const { device } = await this.driver.plugDisk(req.vmId, this.specs.disk(req.disk, 'disk'));
      return { device };
    });
  }

  @GrpcMethod('AgentService', 'UnplugVmDisk')
  unplugVmDisk(
    req: computeV1.AgentServiceUnplugVmDiskRequest,
    md: Metadata,
  ): Promise<computeV1.AgentServiceUnplugVmDiskResponse> {
    return this.command(md, req.epoch, req.vmId, async () => {
      if (!req.vbdId) throw invalidArgument('vbd_id', 'is required');
      this.requireHotplug();
      const timeoutMs = req.timeoutMs ? validateIntRange('timeout_ms', req.timeoutMs, 1, 3_600_000) : 30_000;
      await this.driver.unplugDisk(req.vmId, req.vbdId, { timeoutMs, force: req.force });
      return {};
    });
  }

  /** The first request names the VM; its data and every later request's data go to the guest. */
  @GrpcStreamMethod('AgentService', 'AttachVmConsole')
  attachVmConsole(
    requests: Observable<computeV1.AgentServiceAttachVmConsoleRequest>,
    md: Metadata,
  ): Observable<computeV1.AgentServiceAttachVmConsoleResponse> {
    this.identity.verify(md);
    return new Observable((subscriber) => {
      let console: DriverConsole | undefined;
      let opening: Promise<void> | undefined;
      let closed = false;
      const sub = requests.subscribe({
        next: (req) => {
          if (!opening) {
            // `opening` settles once the console is attached, not when its output ends: later keystrokes
            // wait on it, and would otherwise never reach the guest while the console stays open.
            opening = this.read(() => this.driver.attachConsole(req.vmId)).then(
              (c) => {
                if (closed) return c.close();
                console = c;
                if (req.data.length) c.write(Buffer.from(req.data));
                void (async () => {
                  for await (const data of c.output) subscriber.next({ data });
                  subscriber.complete();
                })().catch((e: unknown) => subscriber.error(e));
              },
              (e: unknown) => subscriber.error(e),
            );
          } else if (req.data.length) {
            void opening.then(() => console?.write(Buffer.from(req.data)));
          }
        },
        complete: () => void opening?.then(() => console?.close()),
        error: () => console?.close(),
      });
      return () => {
        closed = true;
        sub.unsubscribe();
        console?.close();
      };
    });
  }

  @GrpcMethod('AgentService', 'GetVmStatus')
  async getVmStatus(
    req: computeV1.AgentServiceGetVmStatusRequest,
    md: Metadata,
  ): Promise<computeV1.AgentServiceGetVmStatusResponse> {
    this.identity.verify(md);
    const status = await this.driver.status(req.vmId);
    if (!status) throw new DomainError(ErrorCode.NotFound, `vm ${req.vmId} is not on this host`);
    return { status: toProto(status) };
  }

  private requireHotplug(): void {
    if (!this.driver.capabilities().hotplugDisks)
      throw new DomainError(
        ErrorCode.FailedPrecondition,
        `the ${this.driver.name} driver of this host cannot hot-plug disks: attach the disk while the VM is halted`,
      );
  }

  /** Reads that need no epoch: driver errors become domain errors. */
  private read<T>(work: () => Promise<T>): Promise<T> {
    return withDriverErrors(work);
  }

  private async command<T>(md: Metadata, epoch: number, vmId: string, work: () => Promise<T>): Promise<T> {
    this.identity.verify(md);
    this.registration.checkEpoch(epoch);
    if (!vmId) throw new DomainError(ErrorCode.InvalidArgument, 'vm_id: is required', { field: 'vm_id' });
    return withDriverErrors(() => this.queue.run(vmId, work));
  }
}

/** Forwarded ports are reported on one NIC: user-mode NICs share the host's loopback. */
export function toProto(s: DriverVmStatus): computeV1.VmStatus {
  return {
    vmId: s.vmId,
    powerState: `POWER_STATE_${s.powerState}` as computeV1.PowerState,
    reason: s.reason ?? '',
    nics: s.forwards?.length
      ? [
          {
            mac: '',
            forwards: s.forwards.map((f) => ({ guestPort: f.guestPort, hostAddress: f.hostAddress })),
          },
        ]
      : [],
  };
}
