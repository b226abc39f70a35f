import { z } from 'zod';
import {
  commonConfig,
  dbSchemaConfig,
  eventRetentionConfig,
  listenAddress,
  positiveMs,
  type ConfigSpec,
} from '@flotilla/platform';

const ratio = (max: number) =>
  z.coerce.number().min(1, `must be from 1 to ${max}`).max(max, `must be from 1 to ${max}`);

export const computeConfigSpec = {
  ...commonConfig,
  FLOTILLA_COMPUTE_ADDRESS: {
    description: 'host:port the compute gRPC service listens on',
    schema: listenAddress(),
    default: '127.0.0.1:7401',
  },
  FLOTILLA_DB_SCHEMA: dbSchemaConfig('compute'),
  FLOTILLA_STORAGE_URL: {
    description: "host:port of the pool's storage service (image catalogue, VM disks)",
    schema: listenAddress(),
    default: '127.0.0.1:7402',
  },
  FLOTILLA_POOL_NAME: {
    description: 'name of this pool',
    schema: z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'must be 1..63 lowercase letters, digits or "-"'),
    default: 'dc1',
  },
  FLOTILLA_HEARTBEAT_INTERVAL_MS: {
    description: 'how often host agents report',
    schema: positiveMs(60_000),
    default: 2000,
  },
  FLOTILLA_HOST_DOWN_AFTER_MS: {
    description: 'a host without heartbeats for this long goes DOWN',
    schema: positiveMs(600_000),
    default: 6000,
  },
  FLOTILLA_CPU_OVERCOMMIT: {
    description: 'vCPUs per physical CPU a host may carry (hosts may override)',
    schema: ratio(64),
    default: 4,
  },
  FLOTILLA_MEMORY_OVERCOMMIT: {
    description: 'memory overcommit ratio (1 = none)',
    schema: ratio(4),
    default: 1,
  },
  FLOTILLA_PLACEMENT: {
    description: 'placement weigher: spread (balance hosts) or pack (fill hosts)',
    schema: z.enum(['spread', 'pack']),
    default: 'spread' as const,
  },
  FLOTILLA_EVENT_RETENTION_HOURS: eventRetentionConfig,
  FLOTILLA_AGENT_CALL_TIMEOUT_MS: {
    description: 'deadline of each call to a host agent',
    schema: positiveMs(3_600_000),
    default: 120_000,
  },
} satisfies ConfigSpec;
