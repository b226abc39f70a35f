import { DynamicModule, Module, Type } from '@nestjs/common';
import {
  OnCancelled,
  OPERATION_CANCEL_HOOK,
  OperationGrpc,
  OperationService,
  ServiceIdentity,
} from '@flotilla/platform';
import { MigrationEventGrpc, MigrationEventStream } from './events/event-stream';
import { MigrationGrpc } from './migrations/migration.grpc';
import { MigrationService } from './migrations/migration.service';

/** What the gRPC edge needs; built by startMigration (or a test) from validated config. */
export interface MigrationServices {
  identity: ServiceIdentity;
  operations: OperationService;
  migrations: MigrationService;
  events: MigrationEventStream;
  onCancelled: OnCancelled;
  /** Controllers and providers of other contexts of the process (host evacuation), added by their wiring. */
  extra?: { controllers: Type<unknown>[]; providers: Array<{ provide: unknown; useValue: unknown }> };
}

/** The migration service's controllers. ApplianceService has none yet: grpc-js answers UNIMPLEMENTED. */
@Module({})
export class MigrationModule {
  static with(s: MigrationServices): DynamicModule {
    return {
      module: MigrationModule,
      controllers: [MigrationGrpc, MigrationEventGrpc, OperationGrpc, ...(s.extra?.controllers ?? [])],
      providers: [
        { provide: ServiceIdentity, useValue: s.identity },
        { provide: OperationService, useValue: s.operations },
        { provide: MigrationService, useValue: s.migrations },
        { provide: MigrationEventStream, useValue: s.events },
        { provide: OPERATION_CANCEL_HOOK, useValue: s.onCancelled },
        ...((s.extra?.providers ?? []) as Array<{ provide: string; useValue: unknown }>),
      ],
    };
  }
}
