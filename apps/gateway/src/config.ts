import { z } from 'zod';
import { commonConfig, dbSchemaConfig, listenAddress, type ConfigSpec } from '@flotilla/platform';

export const gatewayConfigSpec = {
  ...commonConfig,
  FLOTILLA_GATEWAY_ADDRESS: {
    description: 'host:port the public gRPC API listens on',
    schema: listenAddress(),
    default: '127.0.0.1:7400',
  },
  FLOTILLA_ADMIN_HTTP_ADDRESS: {
    description: 'host:port of the operator HTTP endpoints (/healthz, /readyz, /metrics)',
    schema: listenAddress(),
    default: '127.0.0.1:7480',
  },
  FLOTILLA_COMPUTE_URL: {
    description: "host:port of the pool's compute service",
    schema: listenAddress(),
    default: '127.0.0.1:7401',
  },
  FLOTILLA_STORAGE_URL: {
    description: "host:port of the pool's storage service",
    schema: listenAddress(),
    default: '127.0.0.1:7402',
  },
  FLOTILLA_NETWORK_URL: {
    description: "host:port of the pool's network service",
    schema: listenAddress(),
    default: '127.0.0.1:7403',
  },
  FLOTILLA_MIGRATION_URL: {
    description: "host:port of the pool's migration service",
    schema: listenAddress(),
    default: '127.0.0.1:7404',
  },
  FLOTILLA_DB_SCHEMA: dbSchemaConfig('gateway'),
  FLOTILLA_POOL_NAME: {
    description: 'name of the pool behind this gateway',
    schema: z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'must be 1..63 lowercase letters, digits or "-"'),
    default: 'dc1',
  },
  FLOTILLA_BOOTSTRAP_TOKEN_FILE: {
    description: 'file the admin token is written to (0600) when the gateway first starts; empty: log only',
    schema: z.string(),
    default: '',
  },
  FLOTILLA_UPSTREAM_DEADLINE_MS: {
    description: 'deadline of each call from the gateway to a pool service',
    schema: z.coerce.number().int().min(100, 'must be 100..600000').max(600_000, 'must be 100..600000'),
    default: 30_000,
  },
} satisfies ConfigSpec;
