import { commonV1, computeV1 } from '@flotilla/contracts';
import { DomainError, ErrorCode, type HostState } from '@flotilla/domain';
import { domainErrorFromGrpc, GrpcClient, md } from '@flotilla/platform';
import { peerError } from '../migrations/peers';

/** A host as an evacuation sees it: its state and the room it has for VMs from elsewhere. */
export interface HostView {
  id: string;
  name: string;
  state: HostState;
  driver: string;
  /** Free capacity under the host's overcommit ratios; negative when overcommitted beyond them. */
  freeMemoryMib: number;
  freeVcpus: number;
}

/** A VM resident on a host (RUNNING or PAUSED there). */
export interface ResidentVmView {
  id: string;
  name: string;
  tenantId: string;
  memoryMib: number;
  vcpus: number;
}

/**
 * What an evacuation needs of compute. Errors are domain errors: NOT_FOUND (host), FAILED_PRECONDITION,
 * UNAVAILABLE (compute or the host's agent unreachable).
 */
export interface HostControl {
  /** By id or name. */
  host(idOrName: string): Promise<HostView>;
  /** Every host of the pool. */
  hosts(): Promise<HostView[]>;
  residentVms(hostId: string): Promise<ResidentVmView[]>;
  /** DISABLED, or MAINTENANCE with `maintenance`: the scheduler keeps away; resident VMs keep running. */
  disable(hostId: string, o: { maintenance: boolean; reason: string }): Promise<HostView>;
  enable(hostId: string): Promise<HostView>;
  /**
   * Shuts the VM down cleanly, hard after timeoutMs, and resolves when it is HALTED. The same requestId
   * repeated (after a restart) follows the same shutdown instead of starting another.
   */
  shutdownVm(o: { vmId: string; requestId: string; timeoutMs: number; signal?: AbortSignal }): Promise<void>;
}

const pageSize = 500;
/** WaitOperation blocks at most this long per call; the loop asks again until the shutdown is done. */
const waitSliceMs = 10_000;

/** HostControl over compute's gRPC API with the service identity (compute answers it as pool-admin). */
export class ComputeHostControl implements HostControl {
  private readonly hostClient: GrpcClient<computeV1.HostServiceClient>;
  private readonly vmClient: GrpcClient<computeV1.VmServiceClient>;
  private readonly operationClient: GrpcClient<commonV1.OperationServiceClient>;
  private readonly who: string;

  constructor(computeUrl: string, serviceToken: string) {
    const client = <C>(service: string) =>
      new GrpcClient<C>({
        address: computeUrl,
        service,
        defaultDeadlineMs: 10_000,
        staticMetadata: { [md.serviceToken]: serviceToken },
      });
    this.hostClient = client('flotilla.compute.v1.HostService');
    this.vmClient = client('flotilla.compute.v1.VmService');
    this.operationClient = client('flotilla.common.v1.OperationService');
    this.who = `compute (${computeUrl})`;
  }

  async host(idOrName: string): Promise<HostView> {
    const { host } = await this.call(() => this.hostClient.call.getHost({ id: idOrName }));
    return hostView(host);
  }

  async hosts(): Promise<HostView[]> {
    const out: HostView[] = [];
    let pageToken = '';
    do {
      const page = await this.call(() =>
        this.hostClient.call.listHosts({ page: { pageSize, pageToken, filter: '' } }),
      );
      out.push(...page.hosts.map(hostView));
      pageToken = page.nextPageToken;
    } while (pageToken);
    return out;
  }

  async residentVms(hostId: string): Promise<ResidentVmView[]> {
    const out: ResidentVmView[] = [];
    for (const power of ['RUNNING', 'PAUSED']) {
      let pageToken = '';
      do {
        const page = await this.call(() =>
          this.vmClient.call.listVms({
            page: { pageSize, pageToken, filter: `host_id=${hostId},power_state=${power}` },
          }),
        );
        out.push(
          ...page.vms.map((vm) => ({
            id: vm.id,
            name: vm.name,
            tenantId: vm.tenantId,
            memoryMib: vm.memoryMib,
            vcpus: vm.vcpus,
          })),
        );
        pageToken = page.nextPageToken;
      } while (pageToken);
    }
    return out;
  }

  async disable(hostId: string, o: { maintenance: boolean; reason: string }): Promise<HostView> {
    const { host } = await this.call(() => this.hostClient.call.disableHost({ id: hostId, ...o }));
    return hostView(host);
  }

  async enable(hostId: string): Promise<HostView> {
    const { host } = await this.call(() => this.hostClient.call.enableHost({ id: hostId }));
    return hostView(host);
  }

  async shutdownVm(o: {
    vmId: string;
    requestId: string;
    timeoutMs: number;
    signal?: AbortSignal;
  }): Promise<void> {
    const { operation } = await this.call(() =>
      this.vmClient.call.shutdownVm({
        id: o.vmId,
        requestId: o.requestId,
        mode: computeV1.ShutdownMode.SHUTDOWN_MODE_CLEAN,
        timeoutMs: o.timeoutMs,
      }),
    );
    let op = operation;
    while (op && !isFinished(op)) {
      if (o.signal?.aborted) throw new DomainError(ErrorCode.Cancelled, 'stopped waiting for the shutdown');
      const id = op.id;
      ({ operation: op } = await this.call(() =>
        this.operationClient.call.waitOperation(
          { id, timeoutMs: waitSliceMs },
          { deadlineMs: waitSliceMs + 5000, signal: o.signal },
        ),
      ));
    }
    if (op?.state !== commonV1.OperationState.OPERATION_STATE_SUCCEEDED) {
      const err = domainErrorFromGrpc({ code: op?.error?.code, details: op?.error?.message });
      throw new DomainError(err.code, `the shutdown of vm ${o.vmId} ended ${op?.state}: ${err.message}`);
    }
  }

  close(): void {
    this.hostClient.close();
    this.vmClient.close();
    this.operationClient.close();
  }

  private async call<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      throw peerError(this.who, e);
    }
  }
}

function isFinished(op: commonV1.Operation): boolean {
  return (
    op.state === commonV1.OperationState.OPERATION_STATE_SUCCEEDED ||
    op.state === commonV1.OperationState.OPERATION_STATE_FAILED ||
    op.state === commonV1.OperationState.OPERATION_STATE_CANCELLED
  );
}

function hostView(host: computeV1.Host | undefined): HostView {
  if (!host) throw new DomainError(ErrorCode.Internal, 'compute answered without its host');
  const ratio = (r: number) => (r > 0 ? r : 1);
  return {
    id: host.id,
    name: host.name,
    state: String(host.state).replace(/^HOST_STATE_/, '') as HostState,
    driver: host.driver,
    freeMemoryMib: Math.floor(host.memoryMib * ratio(host.memoryOvercommitRatio)) - host.memoryMibAllocated,
    freeVcpus: Math.floor(host.cpus * ratio(host.cpuOvercommitRatio)) - host.vcpusAllocated,
  };
}
