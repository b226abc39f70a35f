import { INestMicroservice } from '@nestjs/common';
import {
  ConfigOf,
  Logger,
  openDatabase,
  OperationService,
  ServiceIdentity,
  startGrpcService,
  TransactionalStore,
} from '@flotilla/platform';
import { storageConfigSpec } from './config';
import { ImageService } from './images/image.service';
import { storageEntities } from './persistence/entities';
import { storageMigrations } from './persistence/migrations';
import { StorageModule } from './storage.module';

export type StorageConfig = ConfigOf<typeof storageConfigSpec>;

export interface StorageApp {
  address: string;
  stop(): Promise<void>;
}

/**
 * Services the storage process serves; the SR, VDI, VBD and event services are declared (health,
 * reflection) and answer UNIMPLEMENTED until the storage repositories are built.
 */
const served = [
  'flotilla.storage.v1.ImageService',
  'flotilla.common.v1.OperationService',
  'flotilla.storage.v1.SrService',
  'flotilla.storage.v1.VdiService',
  'flotilla.storage.v1.VbdService',
  'flotilla.storage.v1.StorageEventService',
];

/** Wires the storage service: database, image catalogue, gRPC edge. Used by main and by tests. */
export async function startStorage(
  config: StorageConfig,
  logger: Logger,
  options: { schema?: string } = {},
): Promise<StorageApp> {
  const db = await openDatabase({
    url: config.DATABASE_URL,
    dataDir: config.FLOTILLA_DATA_DIR,
    schema: options.schema ?? config.FLOTILLA_DB_SCHEMA,
    entities: storageEntities,
    migrations: storageMigrations,
    logger,
  });
  // No Watch stream yet: the outbox records image and operation changes for it, nothing polls it.
  const store = new TransactionalStore(db.dataSource);
  const operations = new OperationService(store);
  let app: INestMicroservice | undefined;
  try {
    app = await startGrpcService({
      module: StorageModule.with({
        identity: new ServiceIdentity(config.FLOTILLA_SERVICE_TOKEN),
        images: new ImageService(store, operations),
        operations,
      }),
      address: config.FLOTILLA_STORAGE_ADDRESS,
      areas: ['common', 'storage'],
      healthServices: served,
      logger,
    });
  } catch (e) {
    await db.close();
    throw e;
  }
  logger.info({ address: config.FLOTILLA_STORAGE_ADDRESS }, 'storage service ready (image catalogue)');
  return {
    address: config.FLOTILLA_STORAGE_ADDRESS,
    async stop() {
      await app?.close();
      await db.close();
    },
  };
}
