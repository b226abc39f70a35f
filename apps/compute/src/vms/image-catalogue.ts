import { status } from '@grpc/grpc-js';
import { storageV1 } from '@flotilla/contracts';
import { DomainError, ErrorCode } from '@flotilla/domain';
import { domainErrorFromGrpc, GrpcClient, isGrpcStatus, md } from '@flotilla/platform';

/** What a host needs to boot a KERNEL image: paths relative to its catalogue directory. */
export interface KernelBoot {
  kernel: string;
  initrd: string;
  cmdline: string;
  /** What the catalogue recorded; the agent checks the files against them. Empty: unchecked. */
  kernelSha256: string;
  initrdSha256: string;
}

/** A DISK image: VMs get a copy-on-write root disk of it (VmDiskService.ProvisionRootDisk) and boot from it. */
export interface DiskImage {
  id: string;
  name: string;
  virtualSizeBytes: number;
  minDiskBytes: number;
}

export type BootImage = ({ kind: 'KERNEL' } & KernelBoot) | ({ kind: 'DISK' } & DiskImage);

/** Resolves the image a VM names; an interface so that compute's logic never depends on storage's wire. */
export interface ImageCatalogue {
  /**
   * The image as the VM's tenant may use it. NOT_FOUND naming the image and how to get it;
   * FAILED_PRECONDITION when it is not AVAILABLE.
   */
  resolve(tenantId: string, image: string): Promise<BootImage>;
  close(): void;
}

/**
 * Asks the pool's storage service (ImageService.GetImage). The call carries the service identity only:
 * storage answers a service as pool-admin, with the host paths it hides from tenants; the tenant's
 * visibility (PUBLIC, or PRIVATE of the VM's own tenant) is checked here, so another tenant's PRIVATE image
 * stays NOT_FOUND. KERNEL images boot directly; DISK images give VMs a root disk in storage.
 */
export class StorageImageCatalogue implements ImageCatalogue {
  private readonly images: GrpcClient<storageV1.ImageServiceClient>;

  constructor(storageUrl: string, serviceToken: string) {
    this.images = new GrpcClient({
      address: storageUrl,
      service: 'flotilla.storage.v1.ImageService',
      defaultDeadlineMs: 10_000,
      staticMetadata: { [md.serviceToken]: serviceToken },
    });
  }

  async resolve(tenantId: string, name: string): Promise<BootImage> {
    let image: storageV1.Image | undefined;
    try {
      ({ image } = await this.images.call.getImage({ id: name }));
    } catch (e) {
      if (isGrpcStatus(e, status.NOT_FOUND)) throw this.notFound(name);
      const err = domainErrorFromGrpc(e);
      throw new DomainError(err.code, `image ${name}: ${err.message}`, err.fields);
    }
    if (!image) throw new DomainError(ErrorCode.Internal, `image ${name}: storage answered without an image`);
    if (String(image.visibility) !== 'IMAGE_VISIBILITY_PUBLIC' && image.tenantId !== tenantId)
      throw this.notFound(name);
    if (String(image.state) !== 'IMAGE_STATE_AVAILABLE')
      throw new DomainError(
        ErrorCode.FailedPrecondition,
        `image ${name} is ${String(image.state).replace('IMAGE_STATE_', '')}${image.stateReason ? `: ${image.stateReason}` : ''}`,
        { field: 'boot.image' },
      );
    if (String(image.kind) === 'IMAGE_KIND_DISK')
      return {
        kind: 'DISK',
        id: image.id,
        name: image.name,
        virtualSizeBytes: image.virtualSizeBytes,
        minDiskBytes: image.minDiskBytes,
      };
    return {
      kind: 'KERNEL',
      kernel: image.kernelPath,
      initrd: image.initrdPath,
      cmdline: image.cmdline,
      kernelSha256: image.sha256,
      initrdSha256: image.initrdSha256,
    };
  }

  close(): void {
    this.images.close();
  }

  private notFound(name: string): DomainError {
    return new DomainError(
      ErrorCode.NotFound,
      `image ${name} not found: list images with "flotilla image list"${name === 'demo' ? '; build the demo guest with "flotilla image build-demo"' : ''}`,
      { field: 'boot.image' },
    );
  }
}
