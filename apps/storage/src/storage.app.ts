import { INestMicroservice } from '@nestjs/common';
import { Not } from 'typeorm';
import {
  ConfigOf,
  EventFeed,
  Logger,
  OnCancelled,
  openDatabase,
  OperationService,
  ServiceIdentity,
  startGrpcService,
  TransactionalStore,
} from '@flotilla/platform';
import { storageConfigSpec } from './config';
import { StorageEventStream } from './events/event-stream';
import { ImageService } from './images/image.service';
import { SrRow, storageEntities, VdiRow } from './persistence/entities';
import { storageMigrations } from './persistence/migrations';
import { ComputeHostDirectory, HostDirectory, StorageAgents } from './srs/agents';
import { OperationSteps, StorageRunner } from './srs/operation-runner';
import { SrOperations } from './srs/sr-operations';
import { SrService } from './srs/sr.service';
import { SrHosts } from './srs/sr-space';
import { StorageModule } from './storage.module';
import { ChainKeeper } from './vdis/chain-keeper';
import { noVbds, VbdHook } from './vdis/vbd-hook';
import { VdiOperations } from './vdis/vdi-operations';
import { VdiService } from './vdis/vdi.service';
import { VdiStore } from './vdis/vdi-store';
import { VdiTransfer } from './vdis/vdi-transfer';
import { parseUrlAllowList } from './vdis/url-policy';
import { UrlSource } from './vdis/url-source';
import { VdiStoreRootDisks } from './vbds/root-disk-vdis';
import { VdiServiceSnapshots } from './vbds/vm-disk-snapshots';
import { vbdContext, vbdRecords } from './vbds/vbd.wiring';

/** How soon an SR some host does not see is looked at again (see SrOperations.monitor). */
const UNWELL_SR_EVERY_MS = 2000;
export type StorageConfig = ConfigOf<typeof storageConfigSpec>;

export interface StorageApp {
  address: string;
  /** What other storage contexts (VBDs, VM disks) use of SRs and VDIs. */
  vdiStore: VdiStore;
  /** Lets the VBD module plug in its attachments (until then no VDI is attached). */
  setVbdHook(hook: VbdHook): void;
  /** Stops serving and cuts running operations as a crash would (the next start resumes them). */
  stop(): Promise<void>;
}

/** Services the storage process serves (health, reflection). */
const served = [
  'flotilla.storage.v1.ImageService',
  'flotilla.common.v1.OperationService',
  'flotilla.storage.v1.SrService',
  'flotilla.storage.v1.VdiService',
  'flotilla.storage.v1.VbdService',
  'flotilla.storage.v1.StorageEventService',
];

/** Wires the storage service: database, image catalogue, SRs and VDIs, gRPC edge. Used by main and tests. */
export async function startStorage(
  config: StorageConfig,
  logger: Logger,
  options: { schema?: string; hosts?: HostDirectory } = {},
): Promise<StorageApp> {
  const db = await openDatabase({
    url: config.DATABASE_URL,
    dataDir: config.FLOTILLA_DATA_DIR,
    schema: options.schema ?? config.FLOTILLA_DB_SCHEMA,
    entities: storageEntities,
    migrations: storageMigrations,
    logger,
  });
  // The Watch stream reads the outbox; commits with events wake it.
  const feed = new EventFeed(db.dataSource, logger);
  await feed.start();
  feed.keepHistory(config.FLOTILLA_EVENT_RETENTION_HOURS);
  const store = new TransactionalStore(db.dataSource, feed);
  const operations = new OperationService(store);

  // ---- SRs and VDIs ----
  const directory =
    options.hosts ?? new ComputeHostDirectory(config.FLOTILLA_COMPUTE_URL, config.FLOTILLA_SERVICE_TOKEN);
  const agents = new StorageAgents(config.FLOTILLA_SERVICE_TOKEN);
  const srHosts = new SrHosts(directory);
  const runner = new StorageRunner(operations, logger);
  const steps = new OperationSteps(store, operations);
  let vbdHook: VbdHook = noVbds;
  const vbds = () => vbdHook;
  const srs = new SrService(store, operations, directory, runner, vbds);
  const vdis = new VdiService(store, operations, runner, vbds);
  const srOps = new SrOperations(store, steps, agents, srHosts, vbds, logger.child({ context: 'srs' }));
  const keeper = new ChainKeeper(
    store,
    operations,
    runner,
    agents,
    srHosts,
    logger.child({ context: 'chains' }),
    vbds,
  );
  const afterChange = () => keeper.kick();
  const vdiOps = new VdiOperations(
    store,
    steps,
    vdis,
    agents,
    srHosts,
    vbds,
    logger.child({ context: 'vdis' }),
    afterChange,
  );
  const transfer = new VdiTransfer(
    store,
    operations,
    steps,
    vdis,
    agents,
    srHosts,
    runner,
    logger,
    afterChange,
    urlSource(config),
  );
  srOps.register(runner);
  vdiOps.register(runner);
  transfer.register(runner);
  // A cancel frees the records at once; the running handler is cut and the keeper deletes what it made.
  const onCancelled: OnCancelled = async (m, _emit, op) => {
    await m.update(
      SrRow,
      { currentOperationId: op.id },
      { currentOperationId: null, currentOperationKind: null },
    );
    await m.update(
      VdiRow,
      { currentOperationId: op.id, state: Not('CREATING') },
      { currentOperationId: null },
    );
    setImmediate(() => void (runner.abort(op.id) ?? Promise.resolve()).then(() => keeper.kick(100)));
  };
  const vdiStore = new VdiStore(vdis, operations);
  // ---- VBDs and VM disks ----
  const rootDisks = new VdiStoreRootDisks(vdiStore, operations);
  const vbdCtx = vbdContext({
    store,
    operations,
    runner,
    rootDisks,
    snapshotVdis: new VdiServiceSnapshots(vdis, vdiStore, operations, rootDisks),
    vdis,
    agents,
    srHosts,
    afterChange: () => keeper.kick(),
    computeUrl: config.FLOTILLA_COMPUTE_URL,
    serviceToken: config.FLOTILLA_SERVICE_TOKEN,
    logger: logger.child({ context: 'vbds' }),
  });
  vbdHook = vbdRecords;

  let app: INestMicroservice | undefined;
  try {
    app = await startGrpcService({
      module: StorageModule.with({
        identity: new ServiceIdentity(config.FLOTILLA_SERVICE_TOKEN),
        images: new ImageService(store, operations, { vdis, runner }),
        operations,
        srs,
        vdis,
        transfer,
        onCancelled,
        events: new StorageEventStream(feed),
        extra: vbdCtx,
      }),
      address: config.FLOTILLA_STORAGE_ADDRESS,
      areas: ['common', 'storage'],
      healthServices: served,
      logger,
    });
  } catch (e) {
    feed.stop();
    await db.close();
    throw e;
  }
  await runner.resumeUnfinished();
  keeper.start();
  const everyMs = config.FLOTILLA_SR_MONITOR_INTERVAL_MS;
  const refresher = setInterval(
    () =>
      void srOps
        .monitor(everyMs, UNWELL_SR_EVERY_MS)
        .catch((e: unknown) => logger.warn({ err: e }, 'SR monitoring round failed')),
    Math.min(everyMs, UNWELL_SR_EVERY_MS),
  );
  refresher.unref();
  logger.info({ address: config.FLOTILLA_STORAGE_ADDRESS }, 'storage service ready (images, SRs, VDIs)');
  return {
    address: config.FLOTILLA_STORAGE_ADDRESS,
    vdiStore,
    setVbdHook(hook) {
      vbdHook = hook;
    },
    async stop() {
      clearInterval(refresher);
      feed.stop();
      await app?.close();
      await runner.stop();
      await keeper.stop();
      agents.close();
      await vbdCtx.close();
      if (!options.hosts) directory.close();
      await db.close();
    },
  };
}

/** URL imports under FLOTILLA_IMPORT_URL_ALLOW (checked at start; empty: every URL is refused, saying why). */
function urlSource(config: StorageConfig): UrlSource {
  const allow = parseUrlAllowList(config.FLOTILLA_IMPORT_URL_ALLOW);
  return new UrlSource({
    allow: allow.ok ? allow.value : [],
    idleTimeoutMs: config.FLOTILLA_IMPORT_URL_TIMEOUT_MS,
  });
}
