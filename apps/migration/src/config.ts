import { z } from 'zod';
import {
  commonConfig,
  dbSchemaConfig,
  eventRetentionConfig,
  listenAddress,
  type ConfigSpec,
} from '@flotilla/platform';

const GIB = 1024 * 1024 * 1024;

const perHostLimit = (what: string) => ({
  description: `${what} migrations one host takes part in at once, 1..64 (more wait QUEUED)`,
  schema: z.coerce.number().int().min(1).max(64),
  default: 2,
});

export const migrationConfigSpec = {
  ...commonConfig,
  FLOTILLA_MIGRATION_ADDRESS: {
    description: 'host:port the migration gRPC service listens on',
    schema: listenAddress(),
    default: '127.0.0.1:7404',
  },
  FLOTILLA_MIGRATION_ADMIN_ADDRESS: {
    description: 'host:port of the migration service admin HTTP (/healthz, /metrics)',
    schema: listenAddress(),
    default: '127.0.0.1:7484',
  },
  FLOTILLA_DB_SCHEMA: dbSchemaConfig('migration'),
  FLOTILLA_EVENT_RETENTION_HOURS: eventRetentionConfig,
  FLOTILLA_COMPUTE_URL: {
    description: "host:port of the pool's compute service (VM placement, migration locks, hosts)",
    schema: listenAddress(),
    default: '127.0.0.1:7401',
  },
  FLOTILLA_STORAGE_URL: {
    description: "host:port of the pool's storage service (disk plans and copies)",
    schema: listenAddress(),
    default: '127.0.0.1:7402',
  },
  FLOTILLA_MIGRATION_BANDWIDTH: {
    description:
      "pool default cap on one migration's traffic in bytes/s, used when a migration asks for 0 (QEMU's own default, 128 MiB/s, never converges with a busy guest)",
    schema: z.coerce
      .number()
      .int()
      .min(1024 * 1024),
    default: 4 * GIB,
  },
  FLOTILLA_MIGRATION_MAX_OUTGOING: perHostLimit('outgoing'),
  FLOTILLA_MIGRATION_MAX_INCOMING: perHostLimit('incoming'),
} satisfies ConfigSpec;
