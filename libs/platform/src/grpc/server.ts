import 'reflect-metadata';
import * as grpc from '@grpc/grpc-js';
import { ReflectionService } from '@grpc/reflection';
import {
  ArgumentsHost,
  DynamicModule,
  Catch,
  ExceptionFilter,
  INestMicroservice,
  LoggerService,
  Type,
} from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { GrpcMethodStreamingType, GrpcOptions, MicroserviceOptions, ServerGrpc } from '@nestjs/microservices';
import { HealthImplementation } from 'grpc-health-check';
import { randomUUID } from 'node:crypto';
import type * as http2 from 'node:http2';
import { isObservable, lastValueFrom, Observable, throwError } from 'rxjs';
import { isDomainError } from '@flotilla/domain';
import { Logger, RequestContext, requestContext } from '../logging';
import { md } from './metadata';
import { packageDefinition } from './proto';
import { GrpcStatusError, grpcStatus, isGrpcStatus, toGrpcStatus } from './status';
import type { ProtoArea } from '@flotilla/contracts';

/** Called after every RPC (metrics, access logs). */
export type RpcObserver = (method: string, code: grpc.status, durationSeconds: number) => void;

/** Maps every error leaving a handler to a status: domain errors by code, unknown ones to INTERNAL. */
@Catch()
export class GrpcErrorFilter implements ExceptionFilter {
  constructor(private readonly logger: Logger) {}

  catch(exception: unknown, _host: ArgumentsHost): Observable<never> {
    return throwError(() => this.toStatus(exception));
  }

  toStatus(exception: unknown): GrpcStatusError {
    if (isDomainError(exception)) return toGrpcStatus(exception);
    // A status from a downstream service passes through unchanged (the gateway relays pool errors).
    if (isGrpcStatus(exception) && exception.code !== grpc.status.UNKNOWN) return exception;
    const correlationId = randomUUID();
    this.logger.error({ err: exception, correlationId }, 'unexpected error');
    return grpcStatus(
      grpc.status.INTERNAL,
      `internal error (correlation id ${correlationId}); see the service log`,
    );
  }
}

/** The request context of one call: the caller's request id, or a new one. */
function contextOf(metadata: grpc.Metadata | undefined, method: string): RequestContext {
  const incoming = metadata?.get?.(md.requestId)[0];
  return { requestId: incoming ? String(incoming).slice(0, 128) : randomUUID(), method };
}

/**
 * NestJS's gRPC server with a lean unary path. Nest routes each call to its controller method (guards,
 * pipes and the error filter still apply); this class runs the call inside its request context
 * (AsyncLocalStorage), awaits the result without an RxJS pipeline per call, and observes code and latency.
 * The generic interceptor pipeline cost about 3× the bare grpc-js server's CPU per call (docs/benchmarks.md).
 */
export class FlotillaGrpcServer extends ServerGrpc {
  constructor(
    options: GrpcOptions['options'],
    private readonly log: Logger,
    private readonly errors: GrpcErrorFilter,
    private readonly observe?: RpcObserver,
  ) {
    super(options);
  }

  override createServiceMethod(
    // eslint-disable-next-line @typescript-eslint/no-unsafe-function-type
    methodHandler: Function,
    protoNativeHandler: { path?: string; requestStream?: boolean; responseStream?: boolean },
    streamType: GrpcMethodStreamingType,
    // eslint-disable-next-line @typescript-eslint/no-unsafe-function-type
  ): Function {
    const method = protoNativeHandler.path ?? methodHandler.name;
    if (!protoNativeHandler.requestStream && !protoNativeHandler.responseStream)
      return this.unary(methodHandler, method);
    const streaming = super.createServiceMethod(methodHandler, protoNativeHandler, streamType) as (
      ...args: unknown[]
    ) => unknown;
    return (call: { metadata: grpc.Metadata }, ...rest: unknown[]) =>
      requestContext.run(contextOf(call.metadata, method), () => streaming(call, ...rest));
  }

  /**
   * Stops serving, and closes the connections clients still hold. grpc-js 1.14's forceShutdown destroys the
   * sessions it tracks, but with channelz off (as here) it tracks them only per HTTP/2 listener, so it
   * closed the listener and left every open connection served: a stopped service went on answering calls
   * on them, and its clients' sockets kept the process alive.
   */
  override async close(): Promise<void> {
    const sessions = openSessions(this.grpcClient);
    await super.close();
    for (const session of sessions) if (!session.destroyed) session.destroy();
  }

  private unary(
    // eslint-disable-next-line @typescript-eslint/no-unsafe-function-type
    handler: Function,
    method: string,
  ): grpc.handleUnaryCall<unknown, unknown> {
    return (call, callback) =>
      requestContext.run(contextOf(call.metadata, method), () => {
        const started = process.hrtime.bigint();
        const done = (code: grpc.status) => {
          const seconds = Number(process.hrtime.bigint() - started) / 1e9;
          this.observe?.(method, code, seconds);
          if (this.log.isLevelEnabled('debug')) this.log.debug({ method, code, ms: seconds * 1000 }, 'rpc');
        };
        void (async () => {
          try {
            let result: unknown = await handler(call.request, call.metadata, call);
            if (isObservable(result)) result = await lastValueFrom(result);
            done(grpc.status.OK);
            callback(null, result);
          } catch (e) {
            const status = isGrpcStatus(e) ? e : this.errors.toStatus(e);
            done(status.code);
            callback(status);
          }
        })();
      });
  }
}

/** The HTTP/2 sessions a grpc-js server holds open, from its per-listener bookkeeping (private, hence checked). */
function openSessions(server: grpc.Server | null | undefined): http2.ServerHttp2Session[] {
  const listeners = (server as unknown as { http2Servers?: unknown } | null | undefined)?.http2Servers;
  if (!(listeners instanceof Map)) return [];
  return [...listeners.values()].flatMap((l: { sessions?: unknown }) =>
    l?.sessions instanceof Set ? [...(l.sessions as Set<http2.ServerHttp2Session>)] : [],
  );
}

/** Nest's own log lines go to the service's pino logger. */
export class PinoNestLogger implements LoggerService {
  constructor(private readonly logger: Logger) {}
  log(message: unknown, context?: string) {
    this.logger.info({ context }, String(message));
  }
  error(message: unknown, trace?: string, context?: string) {
    this.logger.error({ context, trace }, String(message));
  }
  warn(message: unknown, context?: string) {
    this.logger.warn({ context }, String(message));
  }
  debug(message: unknown, context?: string) {
    this.logger.debug({ context }, String(message));
  }
  verbose(message: unknown, context?: string) {
    this.logger.trace({ context }, String(message));
  }
}

export interface GrpcServiceOptions {
  /** Root NestJS module of the app. */
  module: Type<unknown> | DynamicModule;
  /** host:port to listen on. */
  address: string;
  /** Proto areas whose packages this server serves. */
  areas: ProtoArea[];
  /** Fully qualified services reported SERVING by grpc.health.v1 (besides the empty name). */
  healthServices: string[];
  logger: Logger;
  observe?: RpcObserver;
  /**
   * Services served outside Nest, straight on the grpc-js server (the gateway's byte-for-byte relay),
   * and the areas whose contracts reflection must describe for them.
   */
  rawServices?: { areas: ProtoArea[]; register(server: Pick<grpc.Server, 'addService'>): void };
}

const reflections = new Map<string, ReflectionService>();

/**
 * One reflection service per set of areas and process: building one decodes every file descriptor (about
 * half a second of CPU), which many servers in one process (a local cloud of a hundred sim agents) would
 * otherwise pay each, blocking the event loop. It keeps no per-server state.
 */
function reflectionOf(areas: ProtoArea[]): ReflectionService {
  const key = [...new Set(areas)].sort().join(',');
  let reflection = reflections.get(key);
  if (!reflection) reflections.set(key, (reflection = new ReflectionService(packageDefinition(areas))));
  return reflection;
}

/** Longest service name the health service looks up: its NOT_FOUND answer echoes the name in a header. */
const healthServiceNameMax = 200;

/** Starts a NestJS gRPC microservice with health, reflection, error mapping and request contexts. */
export async function startGrpcService(options: GrpcServiceOptions): Promise<INestMicroservice> {
  const health = new HealthImplementation(
    Object.fromEntries([['', 'SERVING'], ...options.healthServices.map((s) => [s, 'SERVING'])]),
  );
  const errors = new GrpcErrorFilter(options.logger);
  const grpcOptions: GrpcOptions['options'] = {
    url: options.address,
    // Nothing serves channelz; its per-call tracking is a few per cent of each call's CPU.
    channelOptions: { 'grpc.enable_channelz': 0 },
    package: [...new Set(options.areas.map((a) => `flotilla.${a}.v1`))],
    packageDefinition: packageDefinition(options.areas),
    onLoadPackageDefinition: (_pkg, server: Pick<grpc.Server, 'addService'>) => {
      const raw = options.rawServices;
      reflectionOf([...options.areas, ...(raw?.areas ?? [])]).addToServer(server);
      health.addToServer(boundedHealthNames(server));
      raw?.register(server);
    },
  };
  const app = await NestFactory.createMicroservice<MicroserviceOptions>(options.module, {
    strategy: new FlotillaGrpcServer(grpcOptions, options.logger, errors, options.observe),
    logger: new PinoNestLogger(options.logger),
  });
  app.useGlobalFilters(errors);
  await app.listen();
  return app;
}

function boundedHealthNames(server: Pick<grpc.Server, 'addService'>): Pick<grpc.Server, 'addService'> {
  return {
    addService(def, impl) {
      const check = impl.check as grpc.handleUnaryCall<{ service: string }, unknown>;
      server.addService(def, {
        ...impl,
        check: (call: grpc.ServerUnaryCall<{ service: string }, unknown>, cb: grpc.sendUnaryData<unknown>) =>
          call.request.service.length > healthServiceNameMax
            ? cb(grpcStatus(grpc.status.NOT_FOUND, 'unknown service name'))
            : check(call, cb),
      });
    },
  };
}

/** The loaded definitions, for code that needs descriptors (reflection in tests, the gateway proxy). */
export { packageDefinition };
