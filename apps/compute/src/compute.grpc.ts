import { Metadata } from '@grpc/grpc-js';
import { Controller, Inject } from '@nestjs/common';
import { GrpcMethod, GrpcStreamMethod } from '@nestjs/microservices';
import { Observable } from 'rxjs';
import { commonV1, computeV1 } from '@flotilla/contracts';
import { DomainError, ErrorCode, invalidArgument, type VmOperation } from '@flotilla/domain';
import { ServiceIdentity, operationToProto, watchController, type OnCancelled } from '@flotilla/platform';
import { EventStream } from './events/event-stream';
import { FlavorService } from './flavors/flavor.service';
import { HostRegistryService } from './hosts/host-registry.service';
import { HostService } from './hosts/host.service';
import { vmToProto } from './mappers';
import { VmConsole } from './vms/vm-console';
import { VmService } from './vms/vm.service';
import { dropCancelledSnapshotVm } from './vms/vm-snapshots';
import { writeVm } from './persistence/compute-store';
import { VmRow } from './persistence/entities';

/** The gRPC edge of compute: caller identity in, domain calls, contract messages out. */
@Controller()
export class VmGrpc implements computeV1.VmServiceController {
  constructor(
    @Inject(ServiceIdentity) private readonly identity: ServiceIdentity,
    @Inject(VmService) private readonly vms: VmService,
    @Inject(VmConsole) private readonly consoles: VmConsole,
  ) {}

  @GrpcMethod('VmService', 'CreateVm')
  async createVm(req: computeV1.CreateVmRequest, md: Metadata): Promise<computeV1.CreateVmResponse> {
    const { vm, operation } = await this.vms.create(this.identity.caller(md), req);
    return { vm: vmToProto(vm), operation: operationToProto(operation) };
  }

  @GrpcMethod('VmService', 'GetVm')
  async getVm(req: computeV1.GetVmRequest, md: Metadata): Promise<computeV1.GetVmResponse> {
    return { vm: vmToProto(await this.vms.get(this.identity.caller(md), req.id)) };
  }

  @GrpcMethod('VmService', 'ListVms')
  async listVms(req: computeV1.ListVmsRequest, md: Metadata): Promise<computeV1.ListVmsResponse> {
    const { vms, nextPageToken } = await this.vms.list(this.identity.caller(md), req.page);
    return { vms: vms.map(vmToProto), nextPageToken };
  }

  @GrpcMethod('VmService', 'StartVm')
  async startVm(req: computeV1.StartVmRequest, md: Metadata): Promise<computeV1.StartVmResponse> {
    const caller = this.identity.caller(md);
    if (req.hostId && !caller.crossTenant)
      throw new DomainError(
        ErrorCode.PermissionDenied,
        'host_id: pinning a VM to a host needs role pool-operator or above',
      );
    return this.op(caller, req.id, 'START', req.requestId, req.hostId ? { hostId: req.hostId } : {});
  }

  @GrpcMethod('VmService', 'ShutdownVm')
  async shutdownVm(req: computeV1.ShutdownVmRequest, md: Metadata): Promise<computeV1.ShutdownVmResponse> {
    const hard = shutdownMode(req.mode) === 'HARD';
    if (req.timeoutMs < 0 || req.timeoutMs > 3_600_000)
      throw invalidArgument('timeout_ms', `must be from 0 to 3600000 ms; got ${req.timeoutMs}`);
    return this.op(
      this.identity.caller(md),
      req.id,
      hard ? 'HARD_SHUTDOWN' : 'CLEAN_SHUTDOWN',
      req.requestId,
      {
        timeoutMs: req.timeoutMs || 60_000,
      },
    );
  }

  @GrpcMethod('VmService', 'RebootVm')
  async rebootVm(req: computeV1.RebootVmRequest, md: Metadata): Promise<computeV1.RebootVmResponse> {
    const hard = shutdownMode(req.mode) === 'HARD';
    return this.op(this.identity.caller(md), req.id, hard ? 'HARD_REBOOT' : 'CLEAN_REBOOT', req.requestId);
  }

  @GrpcMethod('VmService', 'PauseVm')
  async pauseVm(req: computeV1.PauseVmRequest, md: Metadata): Promise<computeV1.PauseVmResponse> {
    return this.op(this.identity.caller(md), req.id, 'PAUSE', req.requestId);
  }

  @GrpcMethod('VmService', 'UnpauseVm')
  async unpauseVm(req: computeV1.UnpauseVmRequest, md: Metadata): Promise<computeV1.UnpauseVmResponse> {
    return this.op(this.identity.caller(md), req.id, 'UNPAUSE', req.requestId);
  }

  @GrpcMethod('VmService', 'SuspendVm')
  async suspendVm(req: computeV1.SuspendVmRequest, md: Metadata): Promise<computeV1.SuspendVmResponse> {
    return this.op(this.identity.caller(md), req.id, 'SUSPEND', req.requestId);
  }

  @GrpcMethod('VmService', 'ResumeVm')
  async resumeVm(req: computeV1.ResumeVmRequest, md: Metadata): Promise<computeV1.ResumeVmResponse> {
    return this.op(this.identity.caller(md), req.id, 'RESUME', req.requestId);
  }

  @GrpcMethod('VmService', 'GetVmConsoleLog')
  async getVmConsoleLog(
    req: computeV1.GetVmConsoleLogRequest,
    md: Metadata,
  ): Promise<computeV1.GetVmConsoleLogResponse> {
    return { data: await this.consoles.log(this.identity.caller(md), req.id, req.maxBytes) };
  }

  @GrpcStreamMethod('VmService', 'AttachVmConsole')
  attachVmConsole(
    requests: Observable<computeV1.AttachVmConsoleRequest>,
    md: Metadata,
  ): Observable<computeV1.AttachVmConsoleResponse> {
    return this.consoles.attach(this.identity.caller(md), requests);
  }

  @GrpcMethod('VmService', 'GetVmMetrics')
  async getVmMetrics(
    req: computeV1.GetVmMetricsRequest,
    md: Metadata,
  ): Promise<computeV1.GetVmMetricsResponse> {
    return { metrics: await this.consoles.metrics(this.identity.caller(md), req.id) };
  }

  @GrpcMethod('VmService', 'SnapshotVm')
  async snapshotVm(req: computeV1.SnapshotVmRequest, md: Metadata): Promise<computeV1.SnapshotVmResponse> {
    const { snapshot, operation } = await this.vms.snapshots.snapshot(this.identity.caller(md), req);
    return { snapshot: vmToProto(snapshot), operation: operationToProto(operation) };
  }

  @GrpcMethod('VmService', 'CloneVm')
  async cloneVm(req: computeV1.CloneVmRequest, md: Metadata): Promise<computeV1.CloneVmResponse> {
    const { vm, operation } = await this.vms.snapshots.clone(this.identity.caller(md), req);
    return { vm: vmToProto(vm), operation: operationToProto(operation) };
  }

  @GrpcMethod('VmService', 'RevertVm')
  async revertVm(req: computeV1.RevertVmRequest, md: Metadata): Promise<computeV1.RevertVmResponse> {
    return { operation: operationToProto(await this.vms.snapshots.revert(this.identity.caller(md), req)) };
  }

  @GrpcMethod('VmService', 'DestroyVm')
  async destroyVm(req: computeV1.DestroyVmRequest, md: Metadata): Promise<computeV1.DestroyVmResponse> {
    return this.op(this.identity.caller(md), req.id, 'DESTROY', req.requestId);
  }

  private async op(
    caller: ReturnType<ServiceIdentity['caller']>,
    id: string,
    op: VmOperation,
    requestId: string,
    params: Record<string, string | number> = {},
  ): Promise<{ operation: commonV1.Operation }> {
    return { operation: operationToProto(await this.vms.request(caller, id, op, { requestId, params })) };
  }
}

function shutdownMode(mode: computeV1.ShutdownMode | string | number): 'CLEAN' | 'HARD' {
  switch (mode) {
    case computeV1.ShutdownMode.SHUTDOWN_MODE_UNSPECIFIED:
    case computeV1.ShutdownMode.SHUTDOWN_MODE_CLEAN:
      return 'CLEAN';
    case computeV1.ShutdownMode.SHUTDOWN_MODE_HARD:
      return 'HARD';
    default:
      throw invalidArgument(
        'mode',
        `unknown shutdown mode ${String(mode)}: use SHUTDOWN_MODE_CLEAN or SHUTDOWN_MODE_HARD`,
      );
  }
}

@Controller()
export class HostGrpc implements computeV1.HostServiceController {
  constructor(
    @Inject(ServiceIdentity) private readonly identity: ServiceIdentity,
    @Inject(HostService) private readonly hosts: HostService,
  ) {}

  @GrpcMethod('HostService', 'GetHost')
  async getHost(req: computeV1.GetHostRequest, md: Metadata): Promise<computeV1.GetHostResponse> {
    return { host: await this.hosts.get(this.identity.caller(md), req.id) };
  }

  @GrpcMethod('HostService', 'ListHosts')
  listHosts(req: computeV1.ListHostsRequest, md: Metadata): Promise<computeV1.ListHostsResponse> {
    return this.hosts.list(this.identity.caller(md), req.page);
  }

  @GrpcMethod('HostService', 'EnableHost')
  async enableHost(req: computeV1.EnableHostRequest, md: Metadata): Promise<computeV1.EnableHostResponse> {
    return { host: await this.hosts.setAdminState(this.identity.caller(md), req.id, 'ENABLED') };
  }

  @GrpcMethod('HostService', 'DisableHost')
  async disableHost(req: computeV1.DisableHostRequest, md: Metadata): Promise<computeV1.DisableHostResponse> {
    return {
      host: await this.hosts.setAdminState(
        this.identity.caller(md),
        req.id,
        req.maintenance ? 'MAINTENANCE' : 'DISABLED',
        req.reason,
      ),
    };
  }
}

@Controller()
export class HostRegistryGrpc implements computeV1.HostRegistryServiceController {
  constructor(
    @Inject(ServiceIdentity) private readonly identity: ServiceIdentity,
    @Inject(HostRegistryService) private readonly registry: HostRegistryService,
  ) {}

  @GrpcMethod('HostRegistryService', 'RegisterHost')
  registerHost(req: computeV1.RegisterHostRequest, md: Metadata): Promise<computeV1.RegisterHostResponse> {
    this.identity.verify(md);
    return this.registry.register(req);
  }

  @GrpcMethod('HostRegistryService', 'Heartbeat')
  heartbeat(req: computeV1.HeartbeatRequest, md: Metadata): Promise<computeV1.HeartbeatResponse> {
    this.identity.verify(md);
    return this.registry.heartbeat(req);
  }
}

@Controller()
export class FlavorGrpc implements computeV1.FlavorServiceController {
  constructor(
    @Inject(ServiceIdentity) private readonly identity: ServiceIdentity,
    @Inject(FlavorService) private readonly flavors: FlavorService,
  ) {}

  @GrpcMethod('FlavorService', 'GetFlavor')
  async getFlavor(req: computeV1.GetFlavorRequest, md: Metadata): Promise<computeV1.GetFlavorResponse> {
    this.identity.caller(md);
    return { flavor: await this.flavors.get(req.id) };
  }

  @GrpcMethod('FlavorService', 'ListFlavors')
  listFlavors(req: computeV1.ListFlavorsRequest, md: Metadata): Promise<computeV1.ListFlavorsResponse> {
    this.identity.caller(md);
    return this.flavors.list(req.page);
  }

  @GrpcMethod('FlavorService', 'CreateFlavor')
  async createFlavor(
    req: computeV1.CreateFlavorRequest,
    md: Metadata,
  ): Promise<computeV1.CreateFlavorResponse> {
    return { flavor: await this.flavors.create(this.identity.caller(md), req) };
  }

  @GrpcMethod('FlavorService', 'DeleteFlavor')
  async deleteFlavor(
    req: computeV1.DeleteFlavorRequest,
    md: Metadata,
  ): Promise<computeV1.DeleteFlavorResponse> {
    await this.flavors.delete(this.identity.caller(md), req.id);
    return {};
  }
}

/** A cancelled VM operation gives the VM back its stable state (in the cancelling transaction). */
export const releaseCancelledVm: OnCancelled = async (m, emit, cancelled) => {
  await dropCancelledSnapshotVm(m, emit, cancelled);
  const vm = await m.findOneBy(VmRow, { id: cancelled.targetId });
  if (vm?.currentOperationId === cancelled.id) {
    await writeVm(m, emit, vm, { currentOperationId: null });
  }
};

export const EventGrpc = watchController('EventService', EventStream);
