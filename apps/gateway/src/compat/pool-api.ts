import { Metadata } from '@grpc/grpc-js';
import { commonV1, computeV1, storageV1 } from '@flotilla/contracts';
import { type ClientOptions, GrpcClient, md } from '@flotilla/platform';
import { callerMetadata, type Principal } from '../auth/token-auth';
import { VmListingDecoder } from './vm-listing-decoder';

export interface PoolApiOptions {
  computeAddress: string;
  storageAddress: string;
  serviceToken: string;
  deadlineMs: number;
}

/**
 * The pool's gRPC services as the compatibility fronts (EC2, OpenStack) call them: the same RPCs the gateway
 * relays for gRPC consumers, on behalf of an authenticated principal (its tenant and role travel in the
 * metadata, exactly as PoolRelay sends them). The fronts keep no model of VMs, images or flavors of their
 * own: every answer comes from these services.
 */
export class PoolApi {
  readonly vms: GrpcClient<computeV1.VmServiceClient>;
  readonly flavors: GrpcClient<computeV1.FlavorServiceClient>;
  readonly hosts: GrpcClient<computeV1.HostServiceClient>;
  /** The compute service's operations (VM creates and power operations). */
  readonly computeOperations: GrpcClient<commonV1.OperationServiceClient>;
  readonly images: GrpcClient<storageV1.ImageServiceClient>;
  readonly vdis: GrpcClient<storageV1.VdiServiceClient>;
  readonly srs: GrpcClient<storageV1.SrServiceClient>;
  /** The storage service's operations (VDI imports and copies). */
  readonly storageOperations: GrpcClient<commonV1.OperationServiceClient>;
  /** Change streams (Watch), called as the gateway itself: every tenant's changes. */
  readonly computeEvents: GrpcClient<computeV1.EventServiceClient>;
  readonly storageEvents: GrpcClient<storageV1.StorageEventServiceClient>;

  constructor(options: PoolApiOptions) {
    const client = <C>(
      address: string,
      service: string,
      responseDecoders?: ClientOptions['responseDecoders'],
    ) =>
      new GrpcClient<C>({
        address,
        service,
        defaultDeadlineMs: options.deadlineMs,
        staticMetadata: { [md.serviceToken]: options.serviceToken },
        responseDecoders,
      });
    // A listing of a tenant's VMs is read whole for every DescribeInstances and server list: decoded in one
    // pass, and only the VMs that changed since the last listing.
    const listing = new VmListingDecoder();
    this.vms = client(options.computeAddress, 'flotilla.compute.v1.VmService', {
      ListVms: (reply) => listing.decode(reply),
    });
    this.flavors = client(options.computeAddress, 'flotilla.compute.v1.FlavorService');
    this.hosts = client(options.computeAddress, 'flotilla.compute.v1.HostService');
    this.computeOperations = client(options.computeAddress, 'flotilla.common.v1.OperationService');
    this.images = client(options.storageAddress, 'flotilla.storage.v1.ImageService');
    this.vdis = client(options.storageAddress, 'flotilla.storage.v1.VdiService');
    this.srs = client(options.storageAddress, 'flotilla.storage.v1.SrService');
    this.storageOperations = client(options.storageAddress, 'flotilla.common.v1.OperationService');
    this.computeEvents = client(options.computeAddress, 'flotilla.compute.v1.EventService');
    this.storageEvents = client(options.storageAddress, 'flotilla.storage.v1.StorageEventService');
  }

  /** Call options acting as principal; requestId (≤ 128 chars) is logged by every service on the way. */
  as(principal: Principal, requestId?: string): { metadata: Metadata } {
    return { metadata: callerMetadata(principal, requestId) };
  }

  close(): void {
    for (const c of [
      this.vms,
      this.flavors,
      this.hosts,
      this.computeOperations,
      this.images,
      this.vdis,
      this.srs,
      this.storageOperations,
      this.computeEvents,
      this.storageEvents,
    ])
      c.close();
  }
}
