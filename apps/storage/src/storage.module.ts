import { DynamicModule, Module, Type } from '@nestjs/common';
import {
  OnCancelled,
  OPERATION_CANCEL_HOOK,
  OperationGrpc,
  OperationService,
  ServiceIdentity,
} from '@flotilla/platform';
import { StorageEventGrpc, StorageEventStream } from './events/event-stream';
import { ImageGrpc } from './images/image.grpc';
import { ImageService } from './images/image.service';
import { SrGrpc } from './srs/sr.grpc';
import { SrService } from './srs/sr.service';
import { VdiGrpc } from './vdis/vdi.grpc';
import { VdiService } from './vdis/vdi.service';
import { VdiTransfer } from './vdis/vdi-transfer';

/** What the gRPC edge needs; built by startStorage (or a test) from validated config. */
export interface StorageServices {
  identity: ServiceIdentity;
  images: ImageService;
  operations: OperationService;
  // SRs and VDIs.
  srs: SrService;
  vdis: VdiService;
  transfer: VdiTransfer;
  onCancelled: OnCancelled;
  events: StorageEventStream;
  /** Controllers and providers of other storage contexts (VBDs, VM disks), added by their wiring. */
  extra?: { controllers: Type<unknown>[]; providers: Array<{ provide: unknown; useValue: unknown }> };
}

/** The storage service's controllers; other contexts' (VBDs, VM disks) come in through `extra`. */
@Module({})
export class StorageModule {
  static with(s: StorageServices): DynamicModule {
    return {
      module: StorageModule,
      controllers: [
        ImageGrpc,
        OperationGrpc,
        SrGrpc,
        VdiGrpc,
        StorageEventGrpc,
        ...(s.extra?.controllers ?? []),
      ],
      providers: [
        { provide: ServiceIdentity, useValue: s.identity },
        { provide: ImageService, useValue: s.images },
        { provide: OperationService, useValue: s.operations },
        { provide: SrService, useValue: s.srs },
        { provide: VdiService, useValue: s.vdis },
        { provide: VdiTransfer, useValue: s.transfer },
        { provide: OPERATION_CANCEL_HOOK, useValue: s.onCancelled },
        { provide: StorageEventStream, useValue: s.events },
        ...((s.extra?.providers ?? []) as Array<{ provide: string; useValue: unknown }>),
      ],
    };
  }
}
