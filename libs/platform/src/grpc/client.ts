import * as grpc from '@grpc/grpc-js';
import type { Observable } from 'rxjs';
import { requestContext } from '../logging';
import { checkNoTransaction } from '../persistence/transaction-scope';
import { md } from './metadata';
import { serviceDefinition } from './proto';

export interface CallOptions {
  /** Every outgoing call has a deadline; this overrides the client's default. */
  deadlineMs?: number;
  metadata?: grpc.Metadata;
  signal?: AbortSignal;
}

type AnyFn = (...args: never[]) => unknown;

/** A ts-proto NestJS client interface turned into promises (unary) — the shape services and the CLI use. */
export type PromiseClient<C> = {
  [K in keyof C]: C[K] extends (req: infer Q, ...rest: never[]) => Observable<infer R>
    ? (req: Q, opts?: CallOptions) => Promise<R>
    : never;
};

export interface ClientOptions {
  address: string;
  /** Fully qualified service name, e.g. "flotilla.compute.v1.VmService". */
  service: string;
  defaultDeadlineMs?: number;
  /** Metadata added to every call (service identity, bearer token). */
  staticMetadata?: Record<string, string>;
  credentials?: grpc.ChannelCredentials;
  /**
   * Decoders that replace proto-loader's for some methods' replies, by method name as in the proto
   * ("ListVms"): the generated ones of @flotilla/contracts (computeV1Decoders), for replies large enough that
   * decoding them twice over (decode, then toObject) shows. They must give the same objects.
   */
  responseDecoders?: Record<string, (reply: Buffer) => unknown>;
}

/**
 * Options of every channel a Flotilla service or the CLI opens. Channelz is off: nothing serves it, and its
 * per-call bookkeeping (call counters, listeners) is a few per cent of each call's CPU. Reconnect backoff
 * is capped at 2 s (grpc's default grows to 120 s): peers are services of one installation, and after one
 * restarts, callers must find it again within seconds, not minutes.
 */
export const clientChannelOptions: grpc.ChannelOptions = {
  'grpc.keepalive_time_ms': 30_000,
  'grpc.max_receive_message_length': 16 * 1024 * 1024,
  'grpc.enable_channelz': 0,
  'grpc.initial_reconnect_backoff_ms': 250,
  'grpc.max_reconnect_backoff_ms': 2000,
};

/**
 * Cancels the call when `signal` aborts. The listener goes when the call ends: a signal that outlives many
 * calls (an agent's, a runner's) must not gather one listener per call.
 */
function cancelOnAbort(
  signal: AbortSignal | undefined,
  call: { cancel(): void; once(event: 'status', listener: () => void): unknown },
): void {
  if (!signal) return;
  const onAbort = () => call.cancel();
  signal.addEventListener('abort', onAbort, { once: true });
  call.once('status', () => signal.removeEventListener('abort', onAbort));
}

function withResponseDecoders(
  definition: grpc.ServiceDefinition,
  decoders: ClientOptions['responseDecoders'],
): grpc.ServiceDefinition {
  if (!decoders) return definition;
  for (const method of Object.keys(decoders))
    if (!definition[method]) throw new Error(`no method ${method} to decode replies of`);
  return Object.fromEntries(
    Object.entries(definition).map(([method, d]) => [
      method,
      decoders[method] ? { ...d, responseDeserialize: decoders[method] } : d,
    ]),
  );
}

/**
 * A typed client over grpc-js: deadlines on every call, the current request id and the static metadata
 * propagated, unary calls as promises and server streams as async iterables.
 */
export class GrpcClient<C> {
  readonly raw: grpc.Client;
  readonly call: PromiseClient<C>;
  private readonly defaultDeadlineMs: number;

  constructor(private readonly options: ClientOptions) {
    const definition = withResponseDecoders(serviceDefinition(options.service), options.responseDecoders);
    const Ctor = grpc.makeGenericClientConstructor(definition, options.service);
    this.raw = new Ctor(
      options.address,
      options.credentials ?? grpc.credentials.createInsecure(),
      clientChannelOptions,
    );
    this.defaultDeadlineMs = options.defaultDeadlineMs ?? 10_000;
    const call: Record<string, AnyFn> = {};
    for (const [name, method] of Object.entries(definition)) {
      if (method.requestStream || method.responseStream) continue;
      const fn = (this.raw as unknown as Record<string, AnyFn>)[name].bind(this.raw) as unknown as (
        req: unknown,
        metadata: grpc.Metadata,
        options: grpc.CallOptions,
        cb: (err: grpc.ServiceError | null, res: unknown) => void,
      ) => grpc.ClientUnaryCall;
      const lower = name.charAt(0).toLowerCase() + name.slice(1);
      const qualified = `${options.service}.${name}`;
      call[lower] = ((req: unknown, opts: CallOptions = {}) =>
        new Promise((resolve, reject) => {
          checkNoTransaction(qualified);
          const c = fn(req, this.metadata(opts), { deadline: this.deadline(opts) }, (err, res) =>
            err ? reject(err) : resolve(res),
          );
          cancelOnAbort(opts.signal, c);
        })) as AnyFn;
    }
    this.call = call as PromiseClient<C>;
  }

  /** Opens a server stream. Without deadlineMs it stays open until cancelled (watch streams). */
  stream<R>(
    method: string,
    req: unknown,
    opts: CallOptions = {},
  ): grpc.ClientReadableStream<R> & AsyncIterable<R> {
    const fn = (this.raw as unknown as Record<string, AnyFn>)[method] as unknown as (
      req: unknown,
      metadata: grpc.Metadata,
      options: grpc.CallOptions,
    ) => grpc.ClientReadableStream<R>;
    if (typeof fn !== 'function') throw new Error(`${this.options.service} has no method ${method}`);
    const s = fn.call(
      this.raw,
      req,
      this.metadata(opts),
      opts.deadlineMs ? { deadline: this.deadline(opts) } : {},
    );
    cancelOnAbort(opts.signal, s);
    return s as grpc.ClientReadableStream<R> & AsyncIterable<R>;
  }

  /**
   * Opens a client stream (uploads); `callback` gets the single response. Without deadlineMs it stays open
   * until ended or cancelled.
   */
  clientStream<Q, R>(
    method: string,
    callback: (err: grpc.ServiceError | null, res?: R) => void,
    opts: CallOptions = {},
  ): grpc.ClientWritableStream<Q> {
    const fn = (this.raw as unknown as Record<string, AnyFn>)[method] as unknown as (
      metadata: grpc.Metadata,
      options: grpc.CallOptions,
      cb: (err: grpc.ServiceError | null, res?: R) => void,
    ) => grpc.ClientWritableStream<Q>;
    if (typeof fn !== 'function') throw new Error(`${this.options.service} has no method ${method}`);
    const s = fn.call(
      this.raw,
      this.metadata(opts),
      opts.deadlineMs ? { deadline: this.deadline(opts) } : {},
      callback,
    );
    cancelOnAbort(opts.signal, s);
    return s;
  }

  /** Opens a bidirectional stream (consoles). Without deadlineMs it stays open until cancelled. */
  duplex<Q, R>(method: string, opts: CallOptions = {}): grpc.ClientDuplexStream<Q, R> & AsyncIterable<R> {
    const fn = (this.raw as unknown as Record<string, AnyFn>)[method] as unknown as (
      metadata: grpc.Metadata,
      options: grpc.CallOptions,
    ) => grpc.ClientDuplexStream<Q, R>;
    if (typeof fn !== 'function') throw new Error(`${this.options.service} has no method ${method}`);
    const s = fn.call(
      this.raw,
      this.metadata(opts),
      opts.deadlineMs ? { deadline: this.deadline(opts) } : {},
    );
    cancelOnAbort(opts.signal, s);
    return s as grpc.ClientDuplexStream<Q, R> & AsyncIterable<R>;
  }

  waitForReady(deadlineMs: number): Promise<void> {
    return new Promise((resolve, reject) =>
      this.raw.waitForReady(Date.now() + deadlineMs, (err) => (err ? reject(err) : resolve())),
    );
  }

  close(): void {
    this.raw.close();
  }

  private deadline(opts: CallOptions): Date {
    return new Date(Date.now() + (opts.deadlineMs ?? this.defaultDeadlineMs));
  }

  private metadata(opts: CallOptions): grpc.Metadata {
    const m = opts.metadata?.clone() ?? new grpc.Metadata();
    for (const [k, v] of Object.entries(this.options.staticMetadata ?? {})) if (!m.get(k).length) m.set(k, v);
    const ctx = requestContext.getStore();
    if (ctx && !m.get(md.requestId).length) m.set(md.requestId, ctx.requestId);
    return m;
  }
}
