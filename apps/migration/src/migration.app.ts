import * as http from 'node:http';
import { INestMicroservice } from '@nestjs/common';
import {
  ConfigOf,
  EventFeed,
  Logger,
  openDatabase,
  OperationService,
  serveAdminHttp,
  ServiceIdentity,
  startGrpcService,
  textResponse,
  TransactionalStore,
} from '@flotilla/platform';
import { migrationConfigSpec } from './config';
import { MigrationEventStream } from './events/event-stream';
import type { MigrationExtension } from './extensions';
import { MigrationModule } from './migration.module';
import { MigrationMetrics } from './migrations/migration-metrics';
import { MigrationRecords } from './migrations/migration-records';
import { MigrationRunner, RunnerSettings } from './migrations/migration-runner';
import { MigrationService } from './migrations/migration.service';
import { MigrationPeers } from './migrations/peers';
import { Preflight } from './migrations/preflight';
import { migrationEntities } from './persistence/entities';
import { migrationMigrations } from './persistence/migrations';

export type MigrationConfig = ConfigOf<typeof migrationConfigSpec>;

export interface MigrationApp {
  address: string;
  adminAddress: string;
  /** The in-process MigrationPort (pool scope). */
  migrations: MigrationService;
  /** Stops serving and cuts running migrations as a crash would (the next start resumes them). */
  stop(): Promise<void>;
}

const served = [
  'flotilla.migration.v1.MigrationService',
  'flotilla.migration.v1.MigrationEventService',
  'flotilla.migration.v1.EvacuationService',
  'flotilla.migration.v1.ApplianceService',
  'flotilla.common.v1.OperationService',
];

/** Wires the migration service: database, runner and reconciler, gRPC edge, admin HTTP. Used by main and tests. */
export async function startMigration(
  config: MigrationConfig,
  logger: Logger,
  options: { schema?: string; extensions?: MigrationExtension[]; runner?: Partial<RunnerSettings> } = {},
): Promise<MigrationApp> {
  const extensions = options.extensions ?? [];
  const db = await openDatabase({
    url: config.DATABASE_URL,
    dataDir: config.FLOTILLA_DATA_DIR,
    schema: options.schema ?? config.FLOTILLA_DB_SCHEMA,
    entities: [...migrationEntities, ...extensions.flatMap((e) => e.entities)],
    migrations: [...migrationMigrations, ...extensions.flatMap((e) => e.migrations)],
    logger,
  });
  const feed = new EventFeed(db.dataSource, logger);
  await feed.start();
  feed.keepHistory(config.FLOTILLA_EVENT_RETENTION_HOURS);
  const store = new TransactionalStore(db.dataSource, feed);
  const operations = new OperationService(store);
  const records = new MigrationRecords(store, operations);
  const peers = new MigrationPeers(
    { compute: config.FLOTILLA_COMPUTE_URL, storage: config.FLOTILLA_STORAGE_URL },
    config.FLOTILLA_SERVICE_TOKEN,
  );
  const preflight = new Preflight(peers, config.FLOTILLA_MIGRATION_BANDWIDTH);
  const running = { count: () => 0 };
  const metrics = new MigrationMetrics(() => running.count());
  const runner = new MigrationRunner(records, peers, preflight, metrics, logger.child({ context: 'runs' }), {
    limits: {
      outgoing: config.FLOTILLA_MIGRATION_MAX_OUTGOING,
      incoming: config.FLOTILLA_MIGRATION_MAX_INCOMING,
    },
    pollWaitMs: 2000,
    retryDelayMs: 1000,
    reconcileEveryMs: 10_000,
    statsEveryMs: 1000,
    ...options.runner,
  });
  running.count = () => runner.runningCount();
  const migrations = new MigrationService(records, operations, preflight, runner);
  const wired = extensions.map((e) =>
    e.wire({ config, store, operations, feed, migrations, logger: logger.child({ context: 'extension' }) }),
  );

  let app: INestMicroservice | undefined;
  let admin: http.Server | undefined;
  try {
    app = await startGrpcService({
      module: MigrationModule.with({
        identity: new ServiceIdentity(config.FLOTILLA_SERVICE_TOKEN),
        operations,
        migrations,
        events: new MigrationEventStream(feed),
        // One hook for every operation of the process: each context ignores operations not its own.
        onCancelled: async (m, emit, op) => {
          await migrations.onCancelled(m, emit, op);
          for (const w of wired) await w.onOperationCancelled?.(m, emit, op);
        },
        extra: {
          controllers: wired.flatMap((w) => w.controllers),
          providers: wired.flatMap((w) => w.providers),
        },
      }),
      address: config.FLOTILLA_MIGRATION_ADDRESS,
      areas: ['common', 'migration'],
      healthServices: served,
      logger,
    });
    admin = await serveAdminHttp(
      config.FLOTILLA_MIGRATION_ADMIN_ADDRESS,
      {
        '/healthz': () => textResponse(200, 'ok\n'),
        '/metrics': async () => ({
          status: 200,
          contentType: metrics.registry.contentType,
          body: await metrics.registry.metrics(),
        }),
      },
      logger,
    );
  } catch (e) {
    await app?.close();
    feed.stop();
    peers.close();
    await db.close();
    throw e;
  }
  await runner.start();
  for (const w of wired) await w.start?.();
  logger.info(
    { address: config.FLOTILLA_MIGRATION_ADDRESS, admin: config.FLOTILLA_MIGRATION_ADMIN_ADDRESS },
    'migration service ready',
  );
  return {
    address: config.FLOTILLA_MIGRATION_ADDRESS,
    adminAddress: config.FLOTILLA_MIGRATION_ADMIN_ADDRESS,
    migrations,
    async stop() {
      await app?.close();
      await new Promise<void>((r) => (admin ? admin.close(() => r()) : r()));
      await runner.stop();
      for (const w of wired) await w.close?.();
      feed.stop();
      peers.close();
      await db.close();
    },
  };
}
