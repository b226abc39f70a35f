import { DynamicModule, Module } from '@nestjs/common';
import { DiskFiles, HypervisorDriver } from '@flotilla/hypervisor';
import { ServiceIdentity } from '@flotilla/platform';
import { HYPERVISOR_DRIVER } from '../agent.grpc';
import { HostImageCatalogue } from '../image-catalogue';
import { SrPaths } from '../sr-paths';
import { StorageAgentGrpc } from './storage-agent.grpc';

/** The host agent's storage context: StorageAgentService over the disks library. */
@Module({})
export class StorageAgentModule {
  static with(deps: {
    identity: ServiceIdentity;
    driver: HypervisorDriver;
    catalogue: HostImageCatalogue;
    srPaths: SrPaths;
    disks?: DiskFiles;
  }): DynamicModule {
    return {
      module: StorageAgentModule,
      controllers: [StorageAgentGrpc],
      providers: [
        { provide: ServiceIdentity, useValue: deps.identity },
        { provide: HYPERVISOR_DRIVER, useValue: deps.driver },
        { provide: HostImageCatalogue, useValue: deps.catalogue },
        { provide: SrPaths, useValue: deps.srPaths },
        { provide: DiskFiles, useValue: deps.disks ?? new DiskFiles() },
      ],
    };
  }
}
