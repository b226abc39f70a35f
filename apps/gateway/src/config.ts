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
  FLOTILLA_EC2_ADDRESS: {
    description: 'host:port the EC2 Query API (HTTP) listens on',
    schema: listenAddress(),
    default: '127.0.0.1:8773',
  },
  FLOTILLA_EC2_PUBLIC_URL: {
    description:
      'URL clients reach the EC2 API at (DescribeRegions answers it); empty: http://<FLOTILLA_EC2_ADDRESS>',
    schema: publicUrl(),
    default: '',
  },
  FLOTILLA_EC2_RATE: {
    description: 'EC2 requests per second allowed per access key before RequestLimitExceeded (burst: twice)',
    schema: z.coerce.number().int().min(1, 'must be 1..100000').max(100_000, 'must be 1..100000'),
    default: 100,
  },
  FLOTILLA_OPENSTACK_ADDRESS: {
    description: 'host:port the OpenStack API subset (Keystone, Nova, Glance, Neutron; HTTP) listens on',
    schema: listenAddress(),
    default: '127.0.0.1:8774',
  },
  FLOTILLA_OPENSTACK_PUBLIC_URL: {
    description:
      'base URL clients reach the OpenStack API at: every catalog URL is built from it; empty: http://<FLOTILLA_OPENSTACK_ADDRESS>',
    schema: publicUrl(),
    default: '',
  },
  FLOTILLA_OPENSTACK_TOKEN_TTL_S: {
    description: 'lifetime of a Keystone token, in seconds',
    schema: z.coerce.number().int().min(60, 'must be 60..86400').max(86_400, 'must be 60..86400'),
    default: 3600,
  },
  FLOTILLA_REGION: {
    description: 'region name both compatibility APIs serve (EC2 credential scope, Keystone catalog)',
    schema: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9-]{0,62}$/, 'must be 1..63 letters, digits or "-"'),
    default: 'RegionOne',
  },
  FLOTILLA_SECRET_KEY_FILE: {
    description:
      'file holding the gateway key that encrypts EC2 secrets and signs Keystone tokens (created 0600 when missing; share it between gateways); empty: <FLOTILLA_DATA_DIR>/gateway-secret.key',
    schema: z.string(),
    default: '',
  },
} satisfies ConfigSpec;

/** An absolute http(s) URL without a trailing slash, or empty. */
function publicUrl(): z.ZodType<string> {
  return z
    .string()
    .regex(/^(https?:\/\/[^\s/?#]+(\/[^\s?#]*[^\s?#/])?)?$/, 'must be an http(s) URL without a trailing "/"');
}
