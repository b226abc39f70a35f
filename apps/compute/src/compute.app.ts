import { INestMicroservice } from '@nestjs/common';
import { placementPolicy } from '@flotilla/scheduler';
import {
  ConfigOf,
  Database,
  EventFeed,
  Logger,
  openDatabase,
  ServiceIdentity,
  startGrpcService,
  OperationService,
} from '@flotilla/platform';
import { ComputeModule } from './compute.module';
import { computeConfigSpec } from './config';
import { EventStream } from './events/event-stream';
import { FlavorService } from './flavors/flavor.service';
import { AgentClients } from './hosts/agent-clients';
import { HostReaper } from './hosts/host-reaper';
import { HostRegistryService } from './hosts/host-registry.service';
import { HostService } from './hosts/host.service';
import { VmMigrationService } from './migrations/vm-migration.service';
import { OperationRunner } from './operations/operation-runner';
import { ComputeStore } from './persistence/compute-store';
import { computeEntities } from './persistence/entities';
import { computeMigrations } from './persistence/migrations';
import { StorageImageCatalogue } from './vms/image-catalogue';
import { Placement } from './vms/placement';
import { StorageVmDisks } from './vms/vm-disks';
import { VmConsole } from './vms/vm-console';
import { VmOperations } from './vms/vm-operations';
import { VmService } from './vms/vm.service';

export type ComputeConfig = ConfigOf<typeof computeConfigSpec>;

export interface ComputeApp {
  address: string;
  stop(): Promise<void>;
}

/** Wires the compute service: database, runner, reaper, gRPC edge. Used by main and by tests. */
/** `schema` lets tests give each run its own schema in a shared database. */
export async function startCompute(
  config: ComputeConfig,
  logger: Logger,
  options: { schema?: string } = {},
): Promise<ComputeApp> {
  const db: Database = await openDatabase({
    url: config.DATABASE_URL,
    dataDir: config.FLOTILLA_DATA_DIR,
    schema: options.schema ?? config.FLOTILLA_DB_SCHEMA,
    entities: computeEntities,
    migrations: computeMigrations,
    logger,
  });
  const feed = new EventFeed(db.dataSource, logger);
  await feed.start();
  const store = new ComputeStore(db.dataSource, feed);
  const operations = new OperationService(store);
  const runner = new OperationRunner(operations, logger);
  const agents = new AgentClients(config.FLOTILLA_SERVICE_TOKEN, config.FLOTILLA_AGENT_CALL_TIMEOUT_MS);
  const placement = new Placement(
    store,
    placementPolicy({
      weigher: config.FLOTILLA_PLACEMENT,
      cpuOvercommitRatio: config.FLOTILLA_CPU_OVERCOMMIT,
      memoryOvercommitRatio: config.FLOTILLA_MEMORY_OVERCOMMIT,
    }),
  );
  const images = new StorageImageCatalogue(config.FLOTILLA_STORAGE_URL, config.FLOTILLA_SERVICE_TOKEN);
  const disks = new StorageVmDisks(config.FLOTILLA_STORAGE_URL, config.FLOTILLA_SERVICE_TOKEN);
  new VmOperations(store, operations, agents, placement, images, disks, logger).register(runner);
  const vms = new VmService(store, operations, runner, images);
  const reaper = new HostReaper(store, config.FLOTILLA_HOST_DOWN_AFTER_MS, logger);

  let app: INestMicroservice | undefined;
  try {
    app = await startGrpcService({
      module: ComputeModule.with({
        identity: new ServiceIdentity(config.FLOTILLA_SERVICE_TOKEN),
        vms,
        consoles: new VmConsole(store, vms, agents),
        hosts: new HostService(store),
        registry: new HostRegistryService(
          store,
          {
            pool: config.FLOTILLA_POOL_NAME,
            heartbeatIntervalMs: config.FLOTILLA_HEARTBEAT_INTERVAL_MS,
            cpuOvercommitRatio: config.FLOTILLA_CPU_OVERCOMMIT,
            memoryOvercommitRatio: config.FLOTILLA_MEMORY_OVERCOMMIT,
          },
          logger,
        ),
        flavors: new FlavorService(store),
        operations,
        events: new EventStream(feed),
        migrations: new VmMigrationService(store, placement, images, logger),
      }),
      address: config.FLOTILLA_COMPUTE_ADDRESS,
      areas: ['common', 'compute'],
      healthServices: [
        'flotilla.compute.v1.VmService',
        'flotilla.compute.v1.HostService',
        'flotilla.compute.v1.FlavorService',
        'flotilla.compute.v1.EventService',
        'flotilla.compute.v1.HostRegistryService',
        'flotilla.compute.v1.VmMigrationService',
        'flotilla.common.v1.OperationService',
      ],
      logger,
    });
  } catch (e) {
    feed.stop();
    await db.close();
    throw e;
  }
  reaper.start();
  feed.keepHistory(config.FLOTILLA_EVENT_RETENTION_HOURS);
  await runner.resumeUnfinished();
  logger.info(
    { address: config.FLOTILLA_COMPUTE_ADDRESS, pool: config.FLOTILLA_POOL_NAME },
    'compute service ready',
  );

  return {
    address: config.FLOTILLA_COMPUTE_ADDRESS,
    async stop() {
      reaper.stop();
      await runner.drain(5000);
      feed.stop();
      await app?.close();
      agents.close();
      images.close();
      disks.close();
      await db.close();
    },
  };
}
