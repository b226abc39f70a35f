import type { Type } from '@nestjs/common';
import type {
  EventFeed,
  Logger,
  OnCancelled,
  OperationService,
  TransactionalStore,
} from '@flotilla/platform';
import { evacuationContext, evacuationEntities, evacuationMigrations } from './evacuations/evacuation.wiring';
import type { MigrationConfig } from './migration.app';
import type { MigrationPort } from './migrations/migration-port';

/** What the migration process offers a context that lives in it (host evacuation). */
export interface MigrationContext {
  config: MigrationConfig;
  store: TransactionalStore;
  /** The process's operations (their table, events and OperationService RPCs are shared). */
  operations: OperationService;
  feed: EventFeed;
  /** Migrations at pool scope. */
  migrations: MigrationPort;
  logger: Logger;
}

/** What such a context brings: its records and schema migrations, its gRPC edge, its background work. */
export interface MigrationExtension {
  /** TypeORM entities (their outbox events use the process's outbox and Watch stream). */
  entities: Array<Type<unknown>>;
  /** TypeORM schema migrations, run after the migration service's own. */
  migrations: Array<Type<unknown>>;
  wire(ctx: MigrationContext): {
    controllers: Array<Type<unknown>>;
    providers: Array<{ provide: unknown; useValue: unknown }>;
    /** Chained into the process's OPERATION_CANCEL_HOOK (CancelOperation on one of its operations). */
    onOperationCancelled?: OnCancelled;
    /** Called once the gRPC server serves (resume unfinished work). */
    start?(): Promise<void>;
    /** Called on stop, before the database closes. */
    close?(): Promise<void>;
  };
}

/** Host evacuation (./evacuations): its records, EvacuationService, and its runner resumed at start. */
export const evacuationExtension: MigrationExtension = {
  entities: evacuationEntities,
  migrations: evacuationMigrations,
  wire(ctx) {
    const evacuations = evacuationContext({
      store: ctx.store,
      operations: ctx.operations,
      migrations: ctx.migrations,
      logger: ctx.logger,
      compute: { url: ctx.config.FLOTILLA_COMPUTE_URL, serviceToken: ctx.config.FLOTILLA_SERVICE_TOKEN },
    });
    return {
      controllers: evacuations.controllers,
      providers: evacuations.providers,
      onOperationCancelled: evacuations.onOperationCancelled,
      start: async () => {
        await evacuations.runner.resumeUnfinished();
      },
      close: () => evacuations.stop(),
    };
  },
};

/** Contexts main.ts starts with the migration service (tests pick their own). */
export const extensions: MigrationExtension[] = [evacuationExtension];
