import * as grpc from '@grpc/grpc-js';
import { randomUUID } from 'node:crypto';
import type * as http2 from 'node:http2';
import { isDomainError } from '@flotilla/domain';
import {
  clientChannelOptions,
  grpcStatus,
  isGrpcStatus,
  md,
  RpcObserver,
  serviceDefinition,
  toGrpcStatus,
} from '@flotilla/platform';
import { Principal, TokenAuth, upstreamMetadata } from '../auth/token-auth';
import { UpstreamSession } from './upstream-session';

const passthrough = (b: Buffer): Buffer => b;

/** How long a stream waits for its channel to (re)connect before it is tried anyway (see connectedChannel). */
const streamConnectMs = 3000;

/** Where the pool's services are, and the gateway's identity towards them. */
export interface RelayTargets {
  /** Upstream host:port by proto area ("compute", "common", …). */
  addresses: Record<string, string>;
  serviceToken: string;
  deadlineMs: number;
  pool: string;
}

/**
 * Relays pool services byte for byte: the gateway authenticates the bearer token, adds the caller's tenant,
 * role and request id, and forwards the undecoded request; the pool service validates, authorises and
 * scopes it, and its reply (or status) comes back undecoded. Unary calls go over one reused HTTP/2 session
 * per service (UpstreamSession, no grpc-js client stack) with the caller's deadline capped by the relay's,
 * and are cancelled with the caller. Streams (Watch, consoles, disk imports and exports) go through a
 * grpc-js client and are relayed message by message, with flow control for the one-way streams that carry
 * disk images. Only WaitOperation's request is decoded, to give the call its wait.
 */
export class PoolRelay {
  private readonly channels = new Map<string, grpc.Client>();
  private readonly sessions = new Map<string, UpstreamSession>();

  constructor(
    private readonly targets: RelayTargets,
    private readonly auth: TokenAuth,
    private readonly observe?: RpcObserver,
  ) {}

  register(services: string[], server: Pick<grpc.Server, 'addService'>): void {
    for (const service of services) {
      const definition: Record<string, grpc.MethodDefinition<Buffer, Buffer>> = {};
      const handlers: grpc.UntypedServiceImplementation = {};
      for (const [name, method] of Object.entries(serviceDefinition(service))) {
        definition[name] = {
          ...method,
          requestSerialize: passthrough,
          requestDeserialize: passthrough,
          responseSerialize: passthrough,
          responseDeserialize: passthrough,
        };
        handlers[name] = method.requestStream
          ? method.responseStream
            ? (call: grpc.ServerDuplexStream<Buffer, Buffer>) => this.relayDuplex(service, method.path, call)
            : (call: grpc.ServerReadableStream<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) =>
                this.relayClientStream(service, method.path, call, callback)
          : method.responseStream
            ? (call: grpc.ServerWritableStream<Buffer, Buffer>) =>
                this.relayStream(service, method.path, call)
            : (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) =>
                this.relayUnary(service, method, call, callback);
      }
      server.addService(definition as grpc.ServiceDefinition, handlers);
    }
  }

  close(): void {
    for (const c of this.channels.values()) c.close();
    for (const s of this.sessions.values()) s.close();
  }

  /**
   * One unary call to the pool's `area` service on behalf of an authenticated principal, for handlers that
   * route or combine calls (operations live in several services). Resolves with the undecoded reply and
   * rejects with the upstream status (UNAVAILABLE naming the service).
   */
  forward(o: {
    area: string;
    path: string;
    request: Buffer;
    principal: Principal;
    incoming: grpc.Metadata;
    deadlineMs: number;
  }): Promise<Buffer> {
    const service = `flotilla.${o.area}`;
    return new Promise((resolve, reject) => {
      try {
        this.session(service).unary(
          o.path,
          o.request,
          this.headers(o.principal, o.incoming),
          Date.now() + o.deadlineMs,
          (err, reply) => (err ? reject(this.relayError(err, service)) : resolve(reply as Buffer)),
        );
      } catch (e) {
        reject(this.localError(e));
      }
    });
  }

  private relayUnary(
    service: string,
    method: grpc.MethodDefinition<unknown, unknown>,
    call: grpc.ServerUnaryCall<Buffer, Buffer>,
    callback: grpc.sendUnaryData<Buffer>,
  ): void {
    const started = process.hrtime.bigint();
    const done = (err: grpc.StatusObject | null, reply?: Buffer) => {
      this.observe?.(
        method.path,
        err?.code ?? grpc.status.OK,
        Number(process.hrtime.bigint() - started) / 1e9,
      );
      if (err) callback(err);
      else callback(null, reply);
    };
    let cancelled = false;
    let cancelUpstream: (() => void) | undefined;
    call.once('cancelled', () => {
      cancelled = true;
      cancelUpstream?.();
    });
    this.auth
      .authenticate(call.metadata)
      .then((principal) => {
        if (cancelled) return done(grpcStatus(grpc.status.CANCELLED, 'cancelled by the caller'));
        const deadline = Math.min(
          Date.now() + this.deadlineFor(method, call.request),
          deadlineMs(call.getDeadline()),
        );
        cancelUpstream = this.session(service).unary(
          method.path,
          call.request,
          this.headers(principal, call.metadata),
          deadline,
          (err, reply) => done(err ? this.relayError(err, service) : null, reply),
        );
      })
      .catch((e: unknown) => done(this.localError(e)));
  }

  /**
   * Server streams (Watch, ExportVdi) with the caller's deadline, if any. Flow control: while the caller
   * does not take what is relayed, the upstream stream is paused, so a slow reader of a large export holds
   * the pool service back instead of filling the gateway's memory.
   */
  private relayStream(service: string, path: string, call: grpc.ServerWritableStream<Buffer, Buffer>): void {
    let upstream: grpc.ClientReadableStream<Buffer> | undefined;
    let cancelled = false;
    call.on('cancelled', () => {
      cancelled = true;
      upstream?.cancel();
    });
    this.auth
      .authenticate(call.metadata)
      .then(async (principal) => {
        const channel = await this.connectedChannel(service, call);
        if (cancelled) return;
        const s = channel.makeServerStreamRequest(
          path,
          passthrough,
          passthrough,
          call.request,
          this.metadata(upstreamMetadata(principal, call.metadata)),
          streamOptions(call),
        );
        upstream = s;
        s.on('data', (m: Buffer) => {
          if (!call.write(m)) {
            s.pause();
            call.once('drain', () => s.resume());
          }
        });
        s.on('error', (e: grpc.ServiceError) => {
          if (!cancelled) call.emit('error', this.relayError(e, service));
        });
        s.on('end', () => call.end());
      })
      .catch((e: unknown) => call.emit('error', this.localError(e)));
  }

  /**
   * Client streams (ImportVdi: a header, then a disk image of any size) with the caller's deadline, if any:
   * an upload takes as long as its size needs, so the relay sets none of its own. Flow control: the
   * caller's messages are read only as fast as the upstream call takes them (nothing is read before it is
   * open), so the bytes in flight wait in HTTP/2 flow-control windows and a few messages of stream buffer,
   * never in a growing queue here. Cancellation goes both ways: a caller that cancels (or whose deadline
   * passes) cancels the upstream call; an upstream call that ends early, with its answer or an error, ends
   * the caller's call with that answer and stops reading what the caller still sends.
   */
  private relayClientStream(
    service: string,
    path: string,
    call: grpc.ServerReadableStream<Buffer, Buffer>,
    callback: grpc.sendUnaryData<Buffer>,
  ): void {
    const started = process.hrtime.bigint();
    let upstream: grpc.ClientWritableStream<Buffer> | undefined;
    let finished = false;
    const done = (err: grpc.StatusObject | null, reply?: Buffer) => {
      if (finished) return;
      finished = true;
      this.observe?.(path, err?.code ?? grpc.status.OK, Number(process.hrtime.bigint() - started) / 1e9);
      if (err) callback(err);
      else callback(null, reply);
    };
    call.on('cancelled', () => {
      upstream?.cancel();
      done(grpcStatus(grpc.status.CANCELLED, 'cancelled by the caller'));
    });
    this.auth
      .authenticate(call.metadata)
      .then(async (principal) => {
        const channel = await this.connectedChannel(service, call);
        if (finished) return;
        const s = channel.makeClientStreamRequest(
          path,
          passthrough,
          passthrough,
          this.metadata(upstreamMetadata(principal, call.metadata)),
          streamOptions(call),
          (err, reply) => {
            // The caller's remaining messages have nowhere to go: stop reading them.
            call.pause();
            done(err ? this.relayError(err, service) : null, reply);
          },
        );
        upstream = s;
        call.on('data', (m: Buffer) => {
          if (finished) return;
          if (!s.write(m)) {
            call.pause();
            s.once('drain', () => {
              if (!finished) call.resume();
            });
          }
        });
        call.on('end', () => {
          if (!finished) s.end();
        });
      })
      .catch((e: unknown) => done(this.localError(e)));
  }

  /**
   * Bidirectional streams (consoles): requests that arrive while the caller is authenticated are held and
   * sent in order once the upstream stream is open.
   */
  private relayDuplex(service: string, path: string, call: grpc.ServerDuplexStream<Buffer, Buffer>): void {
    let upstream: grpc.ClientDuplexStream<Buffer, Buffer> | undefined;
    let cancelled = false;
    let ended = false;
    const held: Buffer[] = [];
    call.on('data', (m: Buffer) => (upstream ? upstream.write(m) : held.push(m)));
    call.on('end', () => {
      ended = true;
      upstream?.end();
    });
    call.on('cancelled', () => {
      cancelled = true;
      upstream?.cancel();
    });
    this.auth
      .authenticate(call.metadata)
      .then(async (principal) => {
        const channel = await this.connectedChannel(service, call);
        if (cancelled) return;
        const s = channel.makeBidiStreamRequest(
          path,
          passthrough,
          passthrough,
          this.metadata(upstreamMetadata(principal, call.metadata)),
          {},
        );
        upstream = s;
        for (const m of held.splice(0)) s.write(m);
        if (ended) s.end();
        s.on('data', (m: Buffer) => call.write(m));
        s.on('error', (e: grpc.ServiceError) => {
          if (!cancelled) call.emit('error', this.relayError(e, service));
        });
        s.on('end', () => call.end());
      })
      .catch((e: unknown) => call.emit('error', this.localError(e)));
  }

  /** Calls that wait on the server (WaitOperation) get their wait plus a margin, never less than the default. */
  private deadlineFor(method: grpc.MethodDefinition<unknown, unknown>, request: Buffer): number {
    if (!method.path.endsWith('/WaitOperation')) return this.targets.deadlineMs;
    const decoded = method.requestDeserialize(request) as { timeoutMs?: number };
    // 0 means the server's default wait of 30 s.
    return Math.max(this.targets.deadlineMs, (decoded.timeoutMs || 30_000) + 5000);
  }

  /** The upstream call's metadata as HTTP/2 headers: the principal's, the service token, a request id. */
  private headers(principal: Principal, incoming: grpc.Metadata): http2.OutgoingHttpHeaders {
    return this.metadata(upstreamMetadata(principal, incoming)).toHttp2Headers();
  }

  private metadata(m: grpc.Metadata): grpc.Metadata {
    m.set(md.serviceToken, this.targets.serviceToken);
    if (!m.get(md.requestId).length) m.set(md.requestId, randomUUID());
    return m;
  }

  private session(service: string): UpstreamSession {
    const area = service.split('.')[1];
    let s = this.sessions.get(area);
    if (!s) {
      const address = this.targets.addresses[area];
      if (!address) throw new Error(`no upstream for ${service}`);
      s = new UpstreamSession({
        address,
        maxReceiveBytes: Number(clientChannelOptions['grpc.max_receive_message_length']),
        keepaliveMs: Number(clientChannelOptions['grpc.keepalive_time_ms']),
        keepaliveTimeoutMs: 20_000,
      });
      this.sessions.set(area, s);
    }
    return s;
  }

  /**
   * The stream channel to the service, once it is connected or `streamConnectMs` (or the caller's deadline)
   * has passed. A channel that lost its service (a restart) waits out a reconnect backoff of up to 2 s, and a
   * stream started then fails at once with UNAVAILABLE though the service is back: a Watch resumed right after
   * a pool service restarted would be refused. A service that stays down still gets its UNAVAILABLE, later.
   */
  private async connectedChannel(
    service: string,
    call: { getDeadline(): grpc.Deadline },
  ): Promise<grpc.Client> {
    const client = this.channel(service);
    const until = Math.min(Date.now() + streamConnectMs, deadlineMs(call.getDeadline()));
    // Not connected by then: the stream is tried anyway and fails as the channel says.
    await new Promise<void>((resolve) => client.waitForReady(until, () => resolve()));
    return client;
  }

  private channel(service: string): grpc.Client {
    const area = service.split('.')[1];
    let c = this.channels.get(area);
    if (!c) {
      const address = this.targets.addresses[area];
      if (!address) throw new Error(`no upstream for ${service}`);
      c = new grpc.Client(address, grpc.credentials.createInsecure(), clientChannelOptions);
      this.channels.set(area, c);
    }
    return c;
  }

  /** Pool errors reach the consumer as they are, except that an unreachable service says which it was. */
  private relayError(e: grpc.StatusObject, service: string): grpc.StatusObject {
    if (e.code !== grpc.status.UNAVAILABLE) return e;
    const area = service.split('.')[1];
    return grpcStatus(
      grpc.status.UNAVAILABLE,
      `pool ${this.targets.pool}: ${area} service at ${this.targets.addresses[area]} is unavailable; retry later`,
    );
  }

  private localError(e: unknown): grpc.StatusObject {
    if (isDomainError(e)) return toGrpcStatus(e);
    if (isGrpcStatus(e)) return e;
    return grpcStatus(grpc.status.INTERNAL, 'internal error in the gateway relay');
  }
}

/** A stream's upstream call options: the caller's deadline, or none (streams run as long as they need). */
function streamOptions(call: { getDeadline(): grpc.Deadline }): grpc.CallOptions {
  const deadline = deadlineMs(call.getDeadline());
  return Number.isFinite(deadline) ? { deadline } : {};
}

/** A grpc-js server call's deadline as epoch ms (Infinity for none). */
function deadlineMs(d: grpc.Deadline): number {
  return d instanceof Date ? d.getTime() : d;
}
