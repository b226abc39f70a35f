import { DynamicModule, Module } from '@nestjs/common';
import { HypervisorDriver } from '@flotilla/hypervisor';
import { ServiceIdentity } from '@flotilla/platform';
import { HYPERVISOR_DRIVER } from '../agent.grpc';
import { HostRegistration, PerVmQueue } from '../host-state';
import { HostImageCatalogue } from '../image-catalogue';
import { SrPaths } from '../sr-paths';
import { MIGRATION_LISTEN_HOST, MigrationAgentGrpc } from './migration-agent.grpc';

/** The host agent's migration context: MigrationAgentService over the driver's migration methods. */
@Module({})
export class MigrationAgentModule {
  static with(deps: {
    identity: ServiceIdentity;
    registration: HostRegistration;
    driver: HypervisorDriver;
    catalogue: HostImageCatalogue;
    srPaths: SrPaths;
    /** The per-VM queue of AgentService, so that migration steps and VM commands never interleave. */
    queue: PerVmQueue;
    /** FLOTILLA_MIGRATION_HOST. */
    migrationHost: string;
  }): DynamicModule {
    return {
      module: MigrationAgentModule,
      controllers: [MigrationAgentGrpc],
      providers: [
        { provide: ServiceIdentity, useValue: deps.identity },
        { provide: HostRegistration, useValue: deps.registration },
        { provide: HYPERVISOR_DRIVER, useValue: deps.driver },
        { provide: HostImageCatalogue, useValue: deps.catalogue },
        { provide: SrPaths, useValue: deps.srPaths },
        { provide: PerVmQueue, useValue: deps.queue },
        { provide: MIGRATION_LISTEN_HOST, useValue: deps.migrationHost },
      ],
    };
  }
}
