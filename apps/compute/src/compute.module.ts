import { DynamicModule, Module, Provider } from '@nestjs/common';
import { OPERATION_CANCEL_HOOK, OperationGrpc, OperationService, ServiceIdentity } from '@flotilla/platform';
import {
  EventGrpc,
  FlavorGrpc,
  HostGrpc,
  HostRegistryGrpc,
  releaseCancelledVm,
  VmGrpc,
} from './compute.grpc';
import { EventStream } from './events/event-stream';
import { FlavorService } from './flavors/flavor.service';
import { HostRegistryService } from './hosts/host-registry.service';
import { HostService } from './hosts/host.service';
import { VmMigrationGrpc } from './migrations/vm-migration.grpc';
import { VmMigrationService } from './migrations/vm-migration.service';
import { VmConsole } from './vms/vm-console';
import { VmService } from './vms/vm.service';

/** What the gRPC edge needs; built by main (or a test) from validated config. */
export interface ComputeServices {
  identity: ServiceIdentity;
  vms: VmService;
  consoles: VmConsole;
  hosts: HostService;
  registry: HostRegistryService;
  flavors: FlavorService;
  operations: OperationService;
  events: EventStream;
  migrations: VmMigrationService;
}

@Module({})
export class ComputeModule {
  static with(s: ComputeServices): DynamicModule {
    const providers: Provider[] = [
      { provide: ServiceIdentity, useValue: s.identity },
      { provide: VmService, useValue: s.vms },
      { provide: VmConsole, useValue: s.consoles },
      { provide: HostService, useValue: s.hosts },
      { provide: HostRegistryService, useValue: s.registry },
      { provide: FlavorService, useValue: s.flavors },
      { provide: OperationService, useValue: s.operations },
      { provide: OPERATION_CANCEL_HOOK, useValue: releaseCancelledVm },
      { provide: EventStream, useValue: s.events },
      { provide: VmMigrationService, useValue: s.migrations },
    ];
    return {
      module: ComputeModule,
      controllers: [
        VmGrpc,
        HostGrpc,
        HostRegistryGrpc,
        FlavorGrpc,
        OperationGrpc,
        EventGrpc,
        VmMigrationGrpc,
      ],
      providers,
    };
  }
}
