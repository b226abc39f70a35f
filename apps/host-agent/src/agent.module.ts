import { DynamicModule, Module } from '@nestjs/common';
import { HypervisorDriver } from '@flotilla/hypervisor';
import { ServiceIdentity } from '@flotilla/platform';
import { AgentGrpc, HYPERVISOR_DRIVER } from './agent.grpc';
import { HostRegistration, PerVmQueue } from './host-state';
import { HostImageCatalogue } from './image-catalogue';
import { MigrationAgentModule } from './migration/migration-agent.module';
import { SrPaths } from './sr-paths';
import { StorageAgentModule } from './storage/storage-agent.module';

@Module({})
export class AgentModule {
  static with(deps: {
    identity: ServiceIdentity;
    registration: HostRegistration;
    driver: HypervisorDriver;
    catalogue: HostImageCatalogue;
    srPaths: SrPaths;
    /** FLOTILLA_MIGRATION_HOST. */
    migrationHost: string;
  }): DynamicModule {
    // One queue per agent: a VM's commands and its migration steps run one at a time.
    const queue = new PerVmQueue();
    return {
      module: AgentModule,
      imports: [StorageAgentModule.with(deps), MigrationAgentModule.with({ ...deps, queue })],
      controllers: [AgentGrpc],
      providers: [
        { provide: ServiceIdentity, useValue: deps.identity },
        { provide: HostRegistration, useValue: deps.registration },
        { provide: HYPERVISOR_DRIVER, useValue: deps.driver },
        { provide: HostImageCatalogue, useValue: deps.catalogue },
        { provide: SrPaths, useValue: deps.srPaths },
        { provide: PerVmQueue, useValue: queue },
      ],
    };
  }
}
