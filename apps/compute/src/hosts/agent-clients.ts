import { computeV1 } from '@flotilla/contracts';
import { DomainError, ErrorCode } from '@flotilla/domain';
import { domainErrorFromGrpc, GrpcClient, isGrpcStatus, md } from '@flotilla/platform';
import { ClientDuplexStream, status } from '@grpc/grpc-js';
import { HostRow } from '../persistence/entities';

type AgentCall = GrpcClient<computeV1.AgentServiceClient>['call'];

export type AgentConsoleStream = ClientDuplexStream<
  computeV1.AgentServiceAttachVmConsoleRequest,
  computeV1.AgentServiceAttachVmConsoleResponse
>;

/** gRPC clients to host agents, one per address, with the service identity attached. */
export class AgentClients {
  private readonly clients = new Map<string, GrpcClient<computeV1.AgentServiceClient>>();

  constructor(
    private readonly serviceToken: string,
    private readonly deadlineMs: number,
  ) {}

  /**
   * Calls an agent; errors come back as domain errors naming the host (UNAVAILABLE when it cannot be
   * reached), so operation records say what happened where.
   */
  async call<T>(host: Pick<HostRow, 'name' | 'address'>, fn: (agent: AgentCall) => Promise<T>): Promise<T> {
    try {
      return await fn(this.client(host.address).call);
    } catch (e) {
      if (isGrpcStatus(e, status.UNAVAILABLE) || isGrpcStatus(e, status.DEADLINE_EXCEEDED))
        throw new DomainError(
          ErrorCode.Unavailable,
          `host ${host.name} (${host.address}) did not answer: ${(e as Error).message.replace(/^\d+ [A-Z_]+: /, '')}`,
          { resource: `host ${host.name}` },
        );
      const err = domainErrorFromGrpc(e);
      throw new DomainError(err.code, `host ${host.name}: ${err.message}`, err.fields);
    }
  }

  /** A console stream to the agent; it lives until either side closes it. */
  console(host: Pick<HostRow, 'address'>): AgentConsoleStream {
    return this.client(host.address).duplex('AttachVmConsole');
  }

  deadline(): number {
    return this.deadlineMs;
  }

  close(): void {
    for (const c of this.clients.values()) c.close();
  }

  private client(address: string): GrpcClient<computeV1.AgentServiceClient> {
    let c = this.clients.get(address);
    if (!c) {
      c = new GrpcClient<computeV1.AgentServiceClient>({
        address,
        service: 'flotilla.compute.v1.AgentService',
        defaultDeadlineMs: this.deadlineMs,
        staticMetadata: { [md.serviceToken]: this.serviceToken },
      });
      this.clients.set(address, c);
    }
    return c;
  }
}
