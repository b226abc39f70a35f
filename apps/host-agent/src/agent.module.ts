import { DynamicModule, Module } from '@nestjs/common';
import { HypervisorDriver } from '@flotilla/hypervisor';
import { ServiceIdentity } from '@flotilla/platform';
import { AgentGrpc, HYPERVISOR_DRIVER } from './agent.grpc';
import { HostRegistration } from './host-state';
import { HostImageCatalogue } from './image-catalogue';

@Module({})
export class AgentModule {
  static with(deps: {
    identity: ServiceIdentity;
    registration: HostRegistration;
    driver: HypervisorDriver;
    catalogue: HostImageCatalogue;
  }): DynamicModule {
    return {
      module: AgentModule,
      controllers: [AgentGrpc],
      providers: [
        { provide: ServiceIdentity, useValue: deps.identity },
        { provide: HostRegistration, useValue: deps.registration },
        { provide: HYPERVISOR_DRIVER, useValue: deps.driver },
        { provide: HostImageCatalogue, useValue: deps.catalogue },
      ],
    };
  }
}
