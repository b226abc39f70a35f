import 'reflect-metadata';
import * as grpc from '@grpc/grpc-js';
import { ReflectionService } from '@grpc/reflection';
import {
  ArgumentsHost,
  CallHandler,
  DynamicModule,
  Catch,
  ExceptionFilter,
  ExecutionContext,
  INestMicroservice,
  LoggerService,
  NestInterceptor,
  Type,
} from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { MicroserviceOptions, Transport } from '@nestjs/microservices';
import { HealthImplementation } from 'grpc-health-check';
import { randomUUID } from 'node:crypto';
import { Observable, throwError } from 'rxjs';
import { isDomainError } from '@flotilla/domain';
import { Logger, requestContext } from '../logging';
import { md } from './metadata';
import { loaderOptions, packageDefinition } from './proto';
import { GrpcStatusError, grpcStatus, isGrpcStatus, toGrpcStatus } from './status';
import { protoFiles, type ProtoArea } from '@flotilla/contracts';

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

/** Runs each call inside its request context (request id from metadata or a new one) and observes it. */
export class RequestContextInterceptor implements NestInterceptor {
  constructor(
    private readonly logger: Logger,
    private readonly observe?: RpcObserver,
  ) {}

  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    const rpc = context.switchToRpc();
    const metadata = rpc.getContext<grpc.Metadata>();
    const incoming = metadata?.get?.(md.requestId)[0];
    const requestId = incoming ? String(incoming).slice(0, 128) : randomUUID();
    const method = `${context.getClass().name}.${context.getHandler().name}`;
    const started = process.hrtime.bigint();
    const done = (code: grpc.status) => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      this.observe?.(method, code, seconds);
      if (this.logger.isLevelEnabled('debug')) this.logger.debug({ method, code, ms: seconds * 1000 }, 'rpc');
    };
    return new Observable((subscriber) =>
      requestContext.run({ requestId, method }, () =>
        next.handle().subscribe({
          next: (v) => subscriber.next(v),
          error: (e: unknown) => {
            done(isGrpcStatus(e) ? e.code : isDomainError(e) ? toGrpcStatus(e).code : grpc.status.INTERNAL);
            subscriber.error(e);
          },
          complete: () => {
            done(grpc.status.OK);
            subscriber.complete();
          },
        }),
      ),
    );
  }
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
}

/** Longest service name the health service looks up: its NOT_FOUND answer echoes the name in a header. */
const healthServiceNameMax = 200;

/** Starts a NestJS gRPC microservice with health, reflection, error mapping and request contexts. */
export async function startGrpcService(options: GrpcServiceOptions): Promise<INestMicroservice> {
  const health = new HealthImplementation(
    Object.fromEntries([['', 'SERVING'], ...options.healthServices.map((s) => [s, 'SERVING'])]),
  );
  const app = await NestFactory.createMicroservice<MicroserviceOptions>(options.module, {
    transport: Transport.GRPC,
    logger: new PinoNestLogger(options.logger),
    options: {
      url: options.address,
      package: [...new Set(options.areas.map((a) => `flotilla.${a}.v1`))],
      protoPath: protoFiles(...options.areas),
      loader: loaderOptions,
      onLoadPackageDefinition: (pkg, server: Pick<grpc.Server, 'addService'>) => {
        new ReflectionService(pkg).addToServer(server);
        health.addToServer(boundedHealthNames(server));
      },
    },
  });
  app.useGlobalFilters(new GrpcErrorFilter(options.logger));
  app.useGlobalInterceptors(new RequestContextInterceptor(options.logger, options.observe));
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
