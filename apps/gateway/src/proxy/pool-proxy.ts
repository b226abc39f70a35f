import * as grpc from '@grpc/grpc-js';
import { Controller, Inject, Type } from '@nestjs/common';
import { GrpcMethod } from '@nestjs/microservices';
import { Observable } from 'rxjs';
import { GrpcClient, grpcStatus, isGrpcStatus, md, serviceDefinition } from '@flotilla/platform';
import { TokenAuth, upstreamMetadata } from '../auth/token-auth';

/** The pool services the gateway fronts, and where they are. */
export class PoolUpstreams {
  private readonly clients = new Map<string, GrpcClient<unknown>>();

  constructor(
    private readonly addresses: Record<string, string>,
    private readonly serviceToken: string,
    private readonly deadlineMs: number,
    readonly pool: string,
  ) {}

  client(service: string): GrpcClient<unknown> {
    let c = this.clients.get(service);
    if (!c) {
      const area = service.split('.')[1];
      const address = this.addresses[area];
      if (!address) throw new Error(`no upstream for ${service}`);
      c = new GrpcClient({
        address,
        service,
        defaultDeadlineMs: this.deadlineMs,
        staticMetadata: { [md.serviceToken]: this.serviceToken },
      });
      this.clients.set(service, c);
    }
    return c;
  }

  /** Calls that wait on the server (WaitOperation) get their wait plus a margin, never less than the default. */
  deadlineFor(req: unknown): number {
    const waitMs = (req as { timeoutMs?: unknown })?.timeoutMs;
    // 0 means the server's default wait of 30 s.
    return typeof waitMs === 'number'
      ? Math.max(this.deadlineMs, (waitMs || 30_000) + 5000)
      : this.deadlineMs;
  }

  addressOf(service: string): string {
    return this.addresses[service.split('.')[1]] ?? '?';
  }

  close(): void {
    for (const c of this.clients.values()) c.close();
  }
}

/**
 * Builds a controller that serves `fullName` by authenticating the bearer token and relaying each call to
 * the pool with the caller's tenant and role; the pool service authorises and scopes it. Server streams
 * are relayed message by message and cancelled with the client.
 */
export function poolProxy(fullName: string, upstreamName = fullName): Type<unknown> {
  const shortName = fullName.split('.').pop()!;

  @Controller()
  class PoolProxy {
    constructor(
      @Inject(TokenAuth) readonly auth: TokenAuth,
      @Inject(PoolUpstreams) readonly upstreams: PoolUpstreams,
    ) {}
  }

  for (const [method, def] of Object.entries(serviceDefinition(fullName))) {
    const lower = method.charAt(0).toLowerCase() + method.slice(1);
    const handler = def.responseStream
      ? function (this: PoolProxy, req: unknown, incoming: grpc.Metadata): Observable<unknown> {
          return new Observable((subscriber) => {
            let stream: grpc.ClientReadableStream<unknown> | undefined;
            let closed = false;
            this.auth
              .authenticate(incoming)
              .then((principal) => {
                if (closed) return;
                stream = this.upstreams
                  .client(upstreamName)
                  .stream(method, req, { metadata: upstreamMetadata(principal, incoming) });
                stream.on('data', (m) => subscriber.next(m));
                stream.on('error', (e) => subscriber.error(relayError(e, this.upstreams, upstreamName)));
                stream.on('end', () => subscriber.complete());
              })
              .catch((e: unknown) => subscriber.error(e));
            return () => {
              closed = true;
              stream?.cancel();
            };
          });
        }
      : async function (this: PoolProxy, req: unknown, incoming: grpc.Metadata): Promise<unknown> {
          const principal = await this.auth.authenticate(incoming);
          const call = (
            this.upstreams.client(upstreamName).call as Record<
              string,
              (r: unknown, o: unknown) => Promise<unknown>
            >
          )[lower];
          try {
            return await call(req, {
              metadata: upstreamMetadata(principal, incoming),
              deadlineMs: this.upstreams.deadlineFor(req),
            });
          } catch (e) {
            throw relayError(e, this.upstreams, upstreamName);
          }
        };
    Object.defineProperty(handler, 'name', { value: lower });
    Object.defineProperty(PoolProxy.prototype, lower, { value: handler, writable: true, configurable: true });
    GrpcMethod(shortName, method)(
      PoolProxy.prototype,
      lower,
      Object.getOwnPropertyDescriptor(PoolProxy.prototype, lower)!,
    );
  }
  Object.defineProperty(PoolProxy, 'name', { value: `${shortName}Proxy` });
  return PoolProxy;
}

/** Pool errors reach the consumer as they are, except that an unreachable service says which it was. */
function relayError(e: unknown, upstreams: PoolUpstreams, service: string): unknown {
  if (isGrpcStatus(e, grpc.status.UNAVAILABLE))
    return grpcStatus(
      grpc.status.UNAVAILABLE,
      `pool ${upstreams.pool}: ${service.split('.')[1]} service at ${upstreams.addressOf(service)} is unavailable; retry later`,
    );
  return e;
}
