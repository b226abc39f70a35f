import type { Type } from '@nestjs/common';
import { Logger, OnCancelled, OperationService, TransactionalStore } from '@flotilla/platform';
import type { MigrationPort } from '../migrations/migration-port';
import { EvacuationRow } from './evacuation.entity';
import { EvacuationGrpc } from './evacuation.grpc';
import { CreateEvacuations1765100000000 } from './evacuation.migration';
import { EvacuationRunner } from './evacuation-runner';
import { EvacuationService } from './evacuation.service';
import { ComputeHostControl, HostControl } from './host-control';

/** For the migration service's database: the evacuation table's entity and migration. */
export const evacuationEntities = [EvacuationRow];
export const evacuationMigrations = [CreateEvacuations1765100000000];

/** The evacuation bounded context as the migration service wires it. */
export interface EvacuationContext {
  controllers: Type<unknown>[];
  providers: Array<{ provide: unknown; useValue: unknown }>;
  /** Call once the gRPC server is up: resumes evacuations left running by the previous process. */
  runner: { resumeUnfinished(): Promise<number> };
  /** Chain into the service's OPERATION_CANCEL_HOOK: CancelOperation on "host.evacuate" cancels it. */
  onOperationCancelled: OnCancelled;
  /** Stops the runner as a crash would (the next start resumes) and closes the compute clients. */
  stop(): Promise<void>;
}

export function evacuationContext(deps: {
  store: TransactionalStore;
  operations: OperationService;
  migrations: MigrationPort;
  logger: Logger;
  /** Compute, reached with the service identity; or a HostControl of the caller's (tests). */
  compute: { url: string; serviceToken: string } | { hosts: HostControl };
  /** How often running migrations and the host are looked at; default 1000 ms. */
  pollIntervalMs?: number;
}): EvacuationContext {
  const owned =
    'url' in deps.compute ? new ComputeHostControl(deps.compute.url, deps.compute.serviceToken) : undefined;
  const hosts = owned ?? (deps.compute as { hosts: HostControl }).hosts;
  const logger = deps.logger.child({ context: 'evacuations' });
  const runner = new EvacuationRunner({
    store: deps.store,
    operations: deps.operations,
    migrations: deps.migrations,
    hosts,
    logger,
    pollIntervalMs: deps.pollIntervalMs ?? 1000,
  });
  const service = new EvacuationService({
    store: deps.store,
    operations: deps.operations,
    migrations: deps.migrations,
    hosts,
    runner,
    logger,
  });
  return {
    controllers: [EvacuationGrpc],
    providers: [{ provide: EvacuationService, useValue: service }],
    runner,
    onOperationCancelled: service.onOperationCancelled,
    stop: async () => {
      await runner.stop();
      owned?.close();
    },
  };
}
