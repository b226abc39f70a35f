import { DynamicModule, Module } from '@nestjs/common';
import { HypervisorDriver } from '@flotilla/hypervisor';
import { ServiceIdentity } from '@flotilla/platform';
import { AgentGrpc, HYPERVISOR_DRIVER } from './agent.grpc';
import { HostRegistration } from './host-state';
import { HostImageCatalogue } from './image-catalogue';
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
  }): DynamicModule {
    return {
      module: AgentModule,
      imports: [StorageAgentModule.with(deps)],
      controllers: [AgentGrpc],
      providers: [
        { provide: ServiceIdentity, useValue: deps.identity },
        { provide: HostRegistration, useValue: deps.registration },
        { provide: HYPERVISOR_DRIVER, useValue: deps.driver },
        { provide: HostImageCatalogue, useValue: deps.catalogue },
        { provide: SrPaths, useValue: deps.srPaths },
      ],
    };
  }
}
