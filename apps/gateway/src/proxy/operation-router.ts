import * as grpc from '@grpc/grpc-js';
import { createHash } from 'node:crypto';
import { commonV1 } from '@flotilla/contracts';
import { encodePageToken, invalidArgument, isDomainError, limits } from '@flotilla/domain';
import { grpcStatus, isGrpcStatus, RpcObserver, serviceDefinition, toGrpcStatus } from '@flotilla/platform';
import { Principal, TokenAuth } from '../auth/token-auth';
import { PoolRelay } from './pool-relay';

const service = 'flotilla.common.v1.OperationService';
const passthrough = (b: Buffer): Buffer => b;

type Op = commonV1.Operation;
/** Timestamps as proto-loader decodes them. */
type WireTime = { seconds: number; nanos: number } | null | undefined;

/**
 * flotilla.common.v1.OperationService for consumers, over every pool service that runs operations.
 *
 * Each service keeps its own operations (compute: vm.*, storage: image.*), and an operation id (a UUID)
 * does not say where it lives. Get, Wait and Cancel ask the services in order (compute first: it has most
 * operations) and answer from the first that knows the id; NOT_FOUND from one means "ask the next". An
 * unreachable service makes the answer UNAVAILABLE rather than NOT_FOUND, so no caller concludes an
 * operation is gone while its owner is down. The request is relayed undecoded, as every pool call.
 *
 * ListOperations merges the services' lists, newest first, into pages of the asked size: its page token
 * records how far into each service's list the caller has read (the services' tokens are offsets too).
 */
export class OperationRouter {
  private readonly methods = serviceDefinition(service) as unknown as Record<
    string,
    grpc.MethodDefinition<unknown, unknown>
  >;

  constructor(
    private readonly relay: PoolRelay,
    private readonly auth: TokenAuth,
    /** Areas that serve OperationService, in the order Get/Wait/Cancel ask them. */
    private readonly areas: string[],
    private readonly deadlineMs: number,
    private readonly observe?: RpcObserver,
  ) {}

  register(server: Pick<grpc.Server, 'addService'>): void {
    const definition: Record<string, grpc.MethodDefinition<Buffer, Buffer>> = {};
    const handlers: grpc.UntypedServiceImplementation = {};
    for (const [name, method] of Object.entries(this.methods)) {
      definition[name] = {
        ...method,
        requestSerialize: passthrough,
        requestDeserialize: passthrough,
        responseSerialize: passthrough,
        responseDeserialize: passthrough,
      } as grpc.MethodDefinition<Buffer, Buffer>;
      handlers[name] = (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) =>
        this.handle(name, method, call, callback);
    }
    server.addService(definition as grpc.ServiceDefinition, handlers);
  }

  private handle(
    name: string,
    method: grpc.MethodDefinition<unknown, unknown>,
    call: grpc.ServerUnaryCall<Buffer, Buffer>,
    callback: grpc.sendUnaryData<Buffer>,
  ): void {
    const started = process.hrtime.bigint();
    void (async () => {
      let code: grpc.status = grpc.status.OK;
      try {
        const principal = await this.auth.authenticate(call.metadata);
        const reply =
          name === 'ListOperations'
            ? await this.list(method, call, principal)
            : await this.firstFound(method, call, principal);
        callback(null, reply);
      } catch (e) {
        const status = this.statusOf(e);
        code = status.code;
        callback(status);
      } finally {
        this.observe?.(method.path, code, Number(process.hrtime.bigint() - started) / 1e9);
      }
    })();
  }

  /** Get, Wait, Cancel: the answer of the first service that knows the operation. */
  private async firstFound(
    method: grpc.MethodDefinition<unknown, unknown>,
    call: grpc.ServerUnaryCall<Buffer, Buffer>,
    principal: Principal,
  ): Promise<Buffer> {
    let notFound: unknown;
    let unavailable: unknown;
    for (const area of this.areas) {
      try {
        return await this.relay.forward({
          area,
          path: method.path,
          request: call.request,
          principal,
          incoming: call.metadata,
          deadlineMs: this.deadlineFor(method, call.request),
        });
      } catch (e) {
        if (isGrpcStatus(e, grpc.status.NOT_FOUND)) notFound ??= e;
        else if (isGrpcStatus(e, grpc.status.UNAVAILABLE)) unavailable ??= e;
        // Anything else (INVALID_ARGUMENT for a malformed id, PERMISSION_DENIED, …) is the answer.
        else throw e;
      }
    }
    throw unavailable ?? notFound;
  }

  /** Every service's operations, newest first, one page of the asked size at a time. */
  private async list(
    method: grpc.MethodDefinition<unknown, unknown>,
    call: grpc.ServerUnaryCall<Buffer, Buffer>,
    principal: Principal,
  ): Promise<Buffer> {
    const req = method.requestDeserialize(call.request) as commonV1.ListOperationsRequest;
    const filter = req.page?.filter ?? '';
    const pageSize = req.page?.pageSize || limits.pageSizeDefault;
    const offsets = decodeMergedToken(req.page?.pageToken ?? '', filter, this.areas);
    const lists = await Promise.all(
      this.areas.map(async (area) => {
        const upstream: commonV1.ListOperationsRequest = {
          page: {
            pageSize,
            // The services' own tokens are offsets bound to the filter (libs/domain paging).
            pageToken: offsets[area] ? encodePageToken(offsets[area], filter) : '',
            filter,
          },
        };
        const reply = await this.relay.forward({
          area,
          path: method.path,
          request: method.requestSerialize(upstream),
          principal,
          incoming: call.metadata,
          deadlineMs: this.deadlineMs,
        });
        return method.responseDeserialize(reply) as commonV1.ListOperationsResponse;
      }),
    );
    const { operations, taken, more } = mergeNewestFirst(
      lists.map((l) => ({ operations: l.operations, hasMore: Boolean(l.nextPageToken) })),
      pageSize,
    );
    const next = Object.fromEntries(this.areas.map((a, i) => [a, (offsets[a] ?? 0) + taken[i]]));
    const response: commonV1.ListOperationsResponse = {
      operations,
      nextPageToken: more ? encodeMergedToken(next, filter) : '',
    };
    return method.responseSerialize(response) as Buffer;
  }

  /** WaitOperation gets its wait plus a margin, as in PoolRelay. */
  private deadlineFor(method: grpc.MethodDefinition<unknown, unknown>, request: Buffer): number {
    if (!method.path.endsWith('/WaitOperation')) return this.deadlineMs;
    const decoded = method.requestDeserialize(request) as { timeoutMs?: number };
    return Math.max(this.deadlineMs, (decoded.timeoutMs || 30_000) + 5000);
  }

  private statusOf(e: unknown): grpc.StatusObject {
    if (isDomainError(e)) return toGrpcStatus(e);
    if (isGrpcStatus(e)) return e;
    return grpcStatus(grpc.status.INTERNAL, 'internal error in the gateway operation router');
  }
}

/**
 * Merges lists that are each ordered newest first (created_at descending, then id) into the first
 * `pageSize` items, taking only list heads so that each list is consumed in its own order.
 */
export function mergeNewestFirst(
  lists: Array<{ operations: Op[]; hasMore: boolean }>,
  pageSize: number,
): { operations: Op[]; taken: number[]; more: boolean } {
  const taken = lists.map(() => 0);
  const operations: Op[] = [];
  while (operations.length < pageSize) {
    let best = -1;
    for (let i = 0; i < lists.length; i++) {
      const head = lists[i].operations[taken[i]];
      if (head && (best < 0 || newer(head, lists[best].operations[taken[best]]))) best = i;
    }
    if (best < 0) break;
    operations.push(lists[best].operations[taken[best]]);
    taken[best] += 1;
  }
  const more = lists.some((l, i) => l.hasMore || taken[i] < l.operations.length);
  return { operations, taken, more };
}

function newer(a: Op, b: Op): boolean {
  const ta = nanos(a.createdAt as unknown as WireTime);
  const tb = nanos(b.createdAt as unknown as WireTime);
  return ta !== tb ? ta > tb : a.id < b.id;
}

function nanos(t: WireTime | Date): bigint {
  if (!t) return 0n;
  if (t instanceof Date) return BigInt(t.getTime()) * 1_000_000n;
  return BigInt(t.seconds) * 1_000_000_000n + BigInt(t.nanos ?? 0);
}

const filterHash = (filter: string) => createHash('sha256').update(filter).digest('base64url').slice(0, 12);

export function encodeMergedToken(offsets: Record<string, number>, filter: string): string {
  return Buffer.from(JSON.stringify({ m: offsets, f: filterHash(filter) })).toString('base64url');
}

export function decodeMergedToken(token: string, filter: string, areas: string[]): Record<string, number> {
  if (!token) return {};
  try {
    const parsed = JSON.parse(Buffer.from(token, 'base64url').toString('utf8')) as {
      m?: Record<string, unknown>;
      f?: unknown;
    };
    const m = parsed.m ?? {};
    if (
      parsed.f === filterHash(filter) &&
      Object.entries(m).every(([k, v]) => areas.includes(k) && Number.isInteger(v) && (v as number) >= 0)
    )
      return m as Record<string, number>;
  } catch {
    // fall through to the error below
  }
  throw invalidArgument(
    'page.page_token',
    'is not a token returned by ListOperations with the same filter: start without it',
  );
}
