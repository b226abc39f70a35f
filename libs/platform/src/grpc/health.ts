import * as grpc from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';

export type HealthStatus = 'SERVING' | 'NOT_SERVING' | 'UNKNOWN' | 'UNREACHABLE';

const HealthClient = grpc.makeGenericClientConstructor(
  healthService as grpc.ServiceDefinition,
  'grpc.health.v1.Health',
);

/** Asks a service's grpc.health.v1 endpoint how it is; never throws. */
export function checkHealth(
  address: string,
  options: { service?: string; deadlineMs?: number } = {},
): Promise<HealthStatus> {
  const client = new HealthClient(address, grpc.credentials.createInsecure());
  return new Promise<HealthStatus>((resolve) => {
    const check =
      (client as unknown as Record<string, (...a: unknown[]) => void>).Check ??
      (client as unknown as Record<string, (...a: unknown[]) => void>).check;
    check.call(
      client,
      { service: options.service ?? '' },
      { deadline: Date.now() + (options.deadlineMs ?? 2000) },
      (err: grpc.ServiceError | null, res?: { status?: string | number }) => {
        if (err) return resolve('UNREACHABLE');
        const s = res?.status;
        resolve(
          s === 'SERVING' || s === 1 ? 'SERVING' : s === 'NOT_SERVING' || s === 2 ? 'NOT_SERVING' : 'UNKNOWN',
        );
      },
    );
  }).finally(() => client.close());
}
