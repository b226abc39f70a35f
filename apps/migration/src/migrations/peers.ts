import { status } from '@grpc/grpc-js';
import { computeV1, migrationV1, storageV1 } from '@flotilla/contracts';
import { DomainError, ErrorCode } from '@flotilla/domain';
import { domainErrorFromGrpc, GrpcClient, isGrpcStatus, md } from '@flotilla/platform';
import type { HostRef } from '../persistence/entities';

type Call<C> = GrpcClient<C>['call'];
export type ComputeCall = Call<computeV1.VmMigrationServiceClient>;
export type StorageCall = Call<storageV1.VmDiskServiceClient>;
export type AgentCall = Call<migrationV1.MigrationAgentServiceClient>;

/** A status from another service as a domain error naming who answered (UNAVAILABLE when unreachable). */
export function peerError(who: string, e: unknown, hint = ''): DomainError {
  if (e instanceof DomainError) return e;
  if (isGrpcStatus(e, status.UNAVAILABLE) || isGrpcStatus(e, status.DEADLINE_EXCEEDED))
    return new DomainError(
      ErrorCode.Unavailable,
      `${who} did not answer: ${(e as Error).message.replace(/^\d+ [A-Z_]+: /, '')}${hint}`,
      { resource: who },
    );
  const err = domainErrorFromGrpc(e);
  return new DomainError(err.code, `${who}: ${err.message.replace(/^\d+ [A-Z_]+: /, '')}`, err.fields);
}

/** An agent's refusal of a command carrying an epoch older than its current registration. */
const isStaleEpoch = (e: unknown): boolean =>
  isGrpcStatus(e) && e.code === status.FAILED_PRECONDITION && /stale host epoch/.test(e.details ?? e.message);

export const isUnavailable = (e: unknown): boolean =>
  e instanceof DomainError && (e.code === ErrorCode.Unavailable || e.code === ErrorCode.DeadlineExceeded);

/**
 * The services a migration talks to, with the service identity: compute (VmMigrationService for locks and
 * placement, HostService for host states), storage (VmDiskService's disk-migration RPCs) and each host's
 * agent (MigrationAgentService, one client per address). Every call is idempotent by migration id on the
 * other side, so a caller that lost an answer repeats the call.
 */
export class MigrationPeers {
  private readonly computeClient: GrpcClient<computeV1.VmMigrationServiceClient>;
  private readonly hostClient: GrpcClient<computeV1.HostServiceClient>;
  private readonly storageClient: GrpcClient<storageV1.VmDiskServiceClient>;
  private readonly agents = new Map<string, GrpcClient<migrationV1.MigrationAgentServiceClient>>();
  /** Epochs of hosts whose agents registered again since a migration recorded them. */
  private readonly epochs = new Map<string, number>();

  constructor(
    private readonly urls: { compute: string; storage: string },
    private readonly serviceToken: string,
    private readonly deadlineMs = 30_000,
  ) {
    const meta = { [md.serviceToken]: serviceToken };
    this.computeClient = new GrpcClient({
      address: urls.compute,
      service: 'flotilla.compute.v1.VmMigrationService',
      defaultDeadlineMs: deadlineMs,
      staticMetadata: meta,
    });
    this.hostClient = new GrpcClient({
      address: urls.compute,
      service: 'flotilla.compute.v1.HostService',
      defaultDeadlineMs: 10_000,
      staticMetadata: meta,
    });
    this.storageClient = new GrpcClient({
      address: urls.storage,
      service: 'flotilla.storage.v1.VmDiskService',
      defaultDeadlineMs: deadlineMs,
      staticMetadata: meta,
    });
  }

  async compute<T>(fn: (c: ComputeCall) => Promise<T>): Promise<T> {
    try {
      return await fn(this.computeClient.call);
    } catch (e) {
      throw peerError(`compute (${this.urls.compute})`, e);
    }
  }

  async storage<T>(fn: (c: StorageCall) => Promise<T>): Promise<T> {
    try {
      return await fn(this.storageClient.call);
    } catch (e) {
      throw peerError(`storage (${this.urls.storage})`, e);
    }
  }

  /** The host's state as compute sees it now ("DOWN", "ENABLED", …); undefined when compute cannot say. */
  async hostState(hostId: string): Promise<string | undefined> {
    try {
      const { host } = await this.hostClient.call.getHost({ id: hostId });
      return host ? String(host.state).replace('HOST_STATE_', '') : undefined;
    } catch {
      return undefined;
    }
  }

  /**
   * One call to a host's agent. The request's `epoch` is the host's latest known epoch: an agent that restarted
   * registered again at a new epoch and refuses the old one, which only says this record is stale — so on
   * that refusal the host is re-read from compute and the call made once more.
   */
  async agent<T>(host: HostRef, fn: (a: AgentCall) => Promise<T>): Promise<T> {
    const attempt = () => fn(this.withEpoch(this.agentClient(host.address).call, host));
    try {
      try {
        return await attempt();
      } catch (e) {
        if (!isStaleEpoch(e) || !(await this.refreshEpoch(host))) throw e;
        return await attempt();
      }
    } catch (e) {
      throw peerError(`host ${host.name} (${host.address})`, e, '; check that its host agent runs');
    }
  }

  /** The agent's calls with every request's epoch replaced by the host's latest known one. */
  private withEpoch(call: AgentCall, host: HostRef): AgentCall {
    const epoch = () => Math.max(host.epoch, this.epochs.get(host.id) ?? 0);
    return new Proxy(call, {
      get: (target, method: string) => {
        const original = (target as unknown as Record<string, (req: object, ...rest: unknown[]) => unknown>)[
          method
        ];
        return typeof original === 'function'
          ? (req: object, ...rest: unknown[]) => original.call(target, { ...req, epoch: epoch() }, ...rest)
          : original;
      },
    });
  }

  /** Re-reads the host's epoch from compute; false when compute cannot say or it did not change. */
  private async refreshEpoch(host: HostRef): Promise<boolean> {
    try {
      const { host: now } = await this.hostClient.call.getHost({ id: host.id });
      const epoch = Number(now?.epoch ?? 0);
      if (epoch <= Math.max(host.epoch, this.epochs.get(host.id) ?? 0)) return false;
      this.epochs.set(host.id, epoch);
      return true;
    } catch {
      return false;
    }
  }

  close(): void {
    this.computeClient.close();
    this.hostClient.close();
    this.storageClient.close();
    for (const c of this.agents.values()) c.close();
    this.agents.clear();
  }

  private agentClient(address: string): GrpcClient<migrationV1.MigrationAgentServiceClient> {
    let c = this.agents.get(address);
    if (!c) {
      c = new GrpcClient({
        address,
        service: 'flotilla.migration.v1.MigrationAgentService',
        // Long polls of GetOutgoingStatus wait up to 10 s on the agent.
        defaultDeadlineMs: this.deadlineMs,
        staticMetadata: { [md.serviceToken]: this.serviceToken },
      });
      this.agents.set(address, c);
    }
    return c;
  }
}
