import { status } from '@grpc/grpc-js';
import { computeV1, storageV1 } from '@flotilla/contracts';
import { DomainError, ErrorCode, notFound, type PowerState } from '@flotilla/domain';
import { Caller, domainErrorFromGrpc, GrpcClient, isGrpcStatus, md } from '@flotilla/platform';

/** A VM as storage needs it: whose it is, whether it runs, and where. */
export interface ComputeVm {
  id: string;
  name: string;
  tenantId: string;
  powerState: PowerState;
  /** Set while the VM runs, is paused or suspended. */
  hostId: string;
  /** The compute operation in flight on the VM; empty if none. */
  currentOperationId: string;
}

export interface ComputeHost {
  id: string;
  name: string;
  address: string;
  epoch: number;
  state: string;
}

/**
 * Storage's view of compute: the VMs VBDs attach to, their hosts, and the host agents' disk hot-plug.
 * Calls carry the service identity (compute answers a service as pool-admin); the caller's tenant is
 * checked here, so another tenant's VM is NOT_FOUND as if it did not exist.
 */
export class ComputeLink {
  private readonly vms: GrpcClient<computeV1.VmServiceClient>;
  private readonly hosts: GrpcClient<computeV1.HostServiceClient>;
  private readonly agents = new Map<string, GrpcClient<computeV1.AgentServiceClient>>();

  constructor(
    computeUrl: string,
    private readonly serviceToken: string,
    private readonly agentDeadlineMs = 120_000,
  ) {
    const options = (service: string) => ({
      address: computeUrl,
      service: `flotilla.compute.v1.${service}`,
      defaultDeadlineMs: 10_000,
      staticMetadata: { [md.serviceToken]: serviceToken },
    });
    this.vms = new GrpcClient(options('VmService'));
    this.hosts = new GrpcClient(options('HostService'));
  }

  /** The VM if the caller may see it: NOT_FOUND (field vm_id) otherwise. */
  async vm(caller: Pick<Caller, 'tenantId' | 'crossTenant'>, id: string): Promise<ComputeVm> {
    let vm: computeV1.Vm | undefined;
    try {
      ({ vm } = await this.vms.call.getVm({ id }));
    } catch (e) {
      if (isGrpcStatus(e, status.NOT_FOUND)) throw vmNotFound(id);
      throw fromCompute(e);
    }
    if (!vm || (!caller.crossTenant && vm.tenantId !== caller.tenantId)) throw vmNotFound(id);
    return {
      id: vm.id,
      name: vm.name,
      tenantId: vm.tenantId,
      powerState: String(vm.powerState).replace('POWER_STATE_', '') as PowerState,
      hostId: vm.hostId,
      currentOperationId: vm.currentOperationId,
    };
  }

  async host(id: string): Promise<ComputeHost> {
    try {
      const { host } = await this.hosts.call.getHost({ id });
      if (!host) throw new DomainError(ErrorCode.Internal, `compute answered without host ${id}`);
      return {
        id: host.id,
        name: host.name,
        address: host.address,
        epoch: host.epoch,
        state: String(host.state).replace('HOST_STATE_', ''),
      };
    } catch (e) {
      throw e instanceof DomainError ? e : fromCompute(e);
    }
  }

  /** Returns the guest device name, e.g. "vdb". */
  async plugDisk(host: ComputeHost, vmId: string, disk: storageV1.VmDisk): Promise<string> {
    const { device } = await this.agent(host, (a) => a.plugVmDisk({ epoch: host.epoch, vmId, disk }));
    return device;
  }

  async unplugDisk(
    host: ComputeHost,
    vmId: string,
    vbdId: string,
    options: { timeoutMs: number; force: boolean },
  ): Promise<void> {
    await this.agent(host, (a) =>
      a.unplugVmDisk(
        { epoch: host.epoch, vmId, vbdId, ...options },
        { deadlineMs: options.timeoutMs + this.agentDeadlineMs },
      ),
    );
  }

  close(): void {
    this.vms.close();
    this.hosts.close();
    for (const a of this.agents.values()) a.close();
  }

  /** Agent errors keep their code and name the host; an agent that cannot be reached is UNAVAILABLE. */
  private async agent<T>(
    host: ComputeHost,
    fn: (agent: GrpcClient<computeV1.AgentServiceClient>['call']) => Promise<T>,
  ): Promise<T> {
    let client = this.agents.get(host.address);
    if (!client) {
      client = new GrpcClient<computeV1.AgentServiceClient>({
        address: host.address,
        service: 'flotilla.compute.v1.AgentService',
        defaultDeadlineMs: this.agentDeadlineMs,
        staticMetadata: { [md.serviceToken]: this.serviceToken },
      });
      this.agents.set(host.address, client);
    }
    try {
      return await fn(client.call);
    } catch (e) {
      if (isGrpcStatus(e, status.UNAVAILABLE))
        throw new DomainError(
          ErrorCode.Unavailable,
          `host ${host.name} (${host.address}) did not answer: ${(e as Error).message.replace(/^\d+ [A-Z_]+: /, '')}`,
          { resource: `host ${host.name}` },
        );
      const err = domainErrorFromGrpc(e);
      throw new DomainError(err.code, `host ${host.name}: ${err.message}`, err.fields);
    }
  }
}

function vmNotFound(id: string): DomainError {
  const e = notFound('vm', id);
  return new DomainError(e.code, e.message, { ...e.fields, field: 'vm_id' });
}

function fromCompute(e: unknown): DomainError {
  if (isGrpcStatus(e, status.UNAVAILABLE))
    return new DomainError(
      ErrorCode.Unavailable,
      `the compute service did not answer: ${(e as Error).message.replace(/^\d+ [A-Z_]+: /, '')}`,
    );
  const err = domainErrorFromGrpc(e);
  return new DomainError(err.code, `compute: ${err.message}`, err.fields);
}
