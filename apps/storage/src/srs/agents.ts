import { Metadata, status } from '@grpc/grpc-js';
import { computeV1, storageV1 } from '@flotilla/contracts';
import { DomainError, ErrorCode, notFound } from '@flotilla/domain';
import { domainErrorFromGrpc, GrpcClient, isGrpcStatus, md } from '@flotilla/platform';

/** A host of the pool as storage needs it: where its agent listens and whether it is usable. */
export interface PoolHost {
  id: string;
  name: string;
  address: string;
  /** ENABLED, DISABLED, MAINTENANCE or DOWN. */
  state: string;
}

/** The pool's hosts, as compute knows them. An interface so tests and services need no wire. */
export interface HostDirectory {
  /** Every host of the pool (fresh within a second or two). */
  list(): Promise<PoolHost[]>;
  /** NOT_FOUND naming the host when it is not in the pool. */
  get(idOrName: string): Promise<PoolHost>;
  close(): void;
}

const hostCacheMs = 1000;

/** Asks compute's HostService.ListHosts with the service identity; caches the answer briefly. */
export class ComputeHostDirectory implements HostDirectory {
  private readonly client: GrpcClient<computeV1.HostServiceClient>;
  private cached?: { at: number; hosts: Promise<PoolHost[]> };

  constructor(computeUrl: string, serviceToken: string) {
    this.client = new GrpcClient({
      address: computeUrl,
      service: 'flotilla.compute.v1.HostService',
      defaultDeadlineMs: 10_000,
      staticMetadata: { [md.serviceToken]: serviceToken },
    });
  }

  list(): Promise<PoolHost[]> {
    if (this.cached && Date.now() - this.cached.at < hostCacheMs) return this.cached.hosts;
    const hosts = this.fetch();
    this.cached = { at: Date.now(), hosts };
    hosts.catch(() => (this.cached = undefined));
    return hosts;
  }

  async get(idOrName: string): Promise<PoolHost> {
    const find = (hosts: PoolHost[]) => hosts.find((h) => h.id === idOrName || h.name === idOrName);
    const host = find(await this.list()) ?? (await this.refresh().then(find));
    if (!host) throw notFound('host', idOrName);
    return host;
  }

  close(): void {
    this.client.close();
  }

  private refresh(): Promise<PoolHost[]> {
    this.cached = undefined;
    return this.list();
  }

  private async fetch(): Promise<PoolHost[]> {
    const out: PoolHost[] = [];
    let pageToken = '';
    try {
      do {
        const page = await this.client.call.listHosts({ page: { pageSize: 1000, pageToken, filter: '' } });
        for (const h of page.hosts)
          out.push({
            id: h.id,
            name: h.name,
            address: h.address,
            state: String(h.state).replace('HOST_STATE_', ''),
          });
        pageToken = page.nextPageToken;
      } while (pageToken);
    } catch (e) {
      const err = domainErrorFromGrpc(e);
      throw new DomainError(
        err.code === ErrorCode.Internal ? ErrorCode.Unavailable : err.code,
        `the pool's compute service did not list its hosts: ${err.message}`,
      );
    }
    return out;
  }
}

type AgentClient = GrpcClient<storageV1.StorageAgentServiceClient>;
export type AgentCall = AgentClient['call'];

/** Errors of an agent call as domain errors naming the host (UNAVAILABLE when it cannot be reached). */
export function agentError(host: Pick<PoolHost, 'name' | 'address'>, e: unknown): DomainError {
  if (e instanceof DomainError) return e;
  if (isGrpcStatus(e, status.UNAVAILABLE) || isGrpcStatus(e, status.DEADLINE_EXCEEDED))
    return new DomainError(
      ErrorCode.Unavailable,
      `host ${host.name} (${host.address}) did not answer: ${(e as Error).message.replace(/^\d+ [A-Z_]+: /, '')}; check that its host agent runs`,
      { resource: `host ${host.name}` },
    );
  const err = domainErrorFromGrpc(e);
  return new DomainError(
    err.code,
    `host ${host.name}: ${err.message.replace(/^\d+ [A-Z_]+: /, '')}`,
    err.fields,
  );
}

/** Progress and result of one CopyDisk stream. */
export interface CopyProgress {
  onFraction(fraction: number): Promise<void> | void;
}

/**
 * Clients of the host agents' StorageAgentService, one per address, carrying the service identity. Every
 * call is idempotent on the agent side, so a caller that lost its answer repeats it.
 */
export class StorageAgents {
  private readonly clients = new Map<string, AgentClient>();

  constructor(
    private readonly serviceToken: string,
    private readonly deadlineMs = 60_000,
  ) {}

  async call<T>(host: PoolHost, fn: (agent: AgentCall) => Promise<T>): Promise<T> {
    try {
      return await fn(this.client(host).call);
    } catch (e) {
      throw agentError(host, e);
    }
  }

  /** Runs CopyDisk to its end, reporting progress; aborting the signal cancels the copy on the agent. */
  async copyDisk(
    host: PoolHost,
    req: storageV1.CopyDiskRequest,
    progress: CopyProgress,
    signal?: AbortSignal,
  ): Promise<storageV1.DiskInfo> {
    try {
      const stream = this.client(host).stream<storageV1.CopyDiskResponse>('CopyDisk', req, { signal });
      let done: storageV1.DiskInfo | undefined;
      for await (const msg of stream) {
        if (msg.done) done = msg.done;
        else await progress.onFraction(msg.fraction);
      }
      if (!done) throw new DomainError(ErrorCode.Internal, 'the copy stream ended without its result');
      return done;
    } catch (e) {
      if (signal?.aborted) throw signal.reason instanceof Error ? signal.reason : new Error('aborted');
      throw agentError(host, e);
    }
  }

  /** Opens ExportDisk; the caller reads it to the end or cancels it. */
  exportDisk(host: PoolHost, req: storageV1.ExportDiskRequest, signal?: AbortSignal) {
    return this.client(host).stream<storageV1.ExportDiskResponse>('ExportDisk', req, { signal });
  }

  /** Opens ImportDisk (client stream); `done` settles with the agent's answer. */
  importDisk(host: PoolHost): {
    stream: import('@grpc/grpc-js').ClientWritableStream<storageV1.ImportDiskRequest>;
    done: Promise<storageV1.ImportDiskResponse>;
  } {
    const raw = this.client(host).raw as unknown as Record<
      string,
      (
        m: Metadata,
        o: object,
        cb: (err: Error | null, res: storageV1.ImportDiskResponse) => void,
      ) => import('@grpc/grpc-js').ClientWritableStream<storageV1.ImportDiskRequest>
    >;
    const metadata = new Metadata();
    metadata.set(md.serviceToken, this.serviceToken);
    let stream!: import('@grpc/grpc-js').ClientWritableStream<storageV1.ImportDiskRequest>;
    const done = new Promise<storageV1.ImportDiskResponse>((resolve, reject) => {
      stream = raw.ImportDisk.call(this.client(host).raw, metadata, {}, (err, res) =>
        err ? reject(agentError(host, err)) : resolve(res),
      );
    });
    return { stream, done };
  }

  close(): void {
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
  }

  private client(host: PoolHost): AgentClient {
    let c = this.clients.get(host.address);
    if (!c) {
      c = new GrpcClient<storageV1.StorageAgentServiceClient>({
        address: host.address,
        service: 'flotilla.storage.v1.StorageAgentService',
        defaultDeadlineMs: this.deadlineMs,
        staticMetadata: { [md.serviceToken]: this.serviceToken },
      });
      this.clients.set(host.address, c);
    }
    return c;
  }
}
