import { DynamicModule, Module } from '@nestjs/common';
import { OperationGrpc, OperationService, ServiceIdentity } from '@flotilla/platform';
import { ImageGrpc } from './images/image.grpc';
import { ImageService } from './images/image.service';

/** What the gRPC edge needs; built by startStorage (or a test) from validated config. */
export interface StorageServices {
  identity: ServiceIdentity;
  images: ImageService;
  operations: OperationService;
}

/**
 * The storage service's controllers. SR, VDI, VBD and Watch have none yet: grpc-js answers their RPCs
 * UNIMPLEMENTED (the contract is served, never a pretend success).
 */
@Module({})
export class StorageModule {
  static with(s: StorageServices): DynamicModule {
    return {
      module: StorageModule,
      controllers: [ImageGrpc, OperationGrpc],
      providers: [
        { provide: ServiceIdentity, useValue: s.identity },
        { provide: ImageService, useValue: s.images },
        { provide: OperationService, useValue: s.operations },
      ],
    };
  }
}
