import * as http from 'node:http';
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { DataSource } from 'typeorm';
import {
  checkHealth,
  HealthStatus,
  Logger,
  RpcObserver,
  serveAdminHttp,
  textResponse,
} from '@flotilla/platform';

/** Prometheus metrics of the gateway process. */
export class GatewayMetrics {
  readonly registry = new Registry();
  private readonly requests = new Counter({
    name: 'flotilla_grpc_requests_total',
    help: 'gRPC requests served by the gateway, by method and status code',
    labelNames: ['method', 'code'] as const,
    registers: [this.registry],
  });
  private readonly duration = new Histogram({
    name: 'flotilla_grpc_request_duration_seconds',
    help: 'gRPC request latency at the gateway',
    labelNames: ['method'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60],
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'flotilla_gateway_' });
  }

  readonly observe: RpcObserver = (method, code, seconds) => {
    this.requests.inc({ method, code: String(code) });
    this.duration.observe({ method }, seconds);
  };
}

export interface Readiness {
  database: DataSource;
  services: Record<string, string>;
}

/** Operators' HTTP endpoints: /healthz (process up), /readyz (database and every pool service), /metrics. */
export function startAdminHttp(
  address: string,
  metrics: GatewayMetrics,
  readiness: Readiness,
  logger: Logger,
): Promise<http.Server> {
  return serveAdminHttp(
    address,
    {
      '/healthz': () => textResponse(200, 'ok\n'),
      '/readyz': async () => {
        const checks = await ready(readiness);
        const ok = Object.values(checks).every((s) => s === 'SERVING');
        return {
          status: ok ? 200 : 503,
          contentType: 'application/json',
          body: `${JSON.stringify({ ready: ok, checks })}\n`,
        };
      },
      '/metrics': async () => ({
        status: 200,
        contentType: metrics.registry.contentType,
        body: await metrics.registry.metrics(),
      }),
    },
    logger,
  );
}

async function ready(r: Readiness): Promise<Record<string, HealthStatus>> {
  const database: HealthStatus = await r.database
    .query('SELECT 1')
    .then(() => 'SERVING' as const)
    .catch(() => 'UNREACHABLE' as const);
  const services = await Promise.all(
    Object.entries(r.services).map(
      async ([name, address]) => [name, await checkHealth(address, { deadlineMs: 1500 })] as const,
    ),
  );
  return { database, ...Object.fromEntries(services) };
}
