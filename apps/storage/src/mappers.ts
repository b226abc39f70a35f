import { storageV1 } from '@flotilla/contracts';
import { roleAtLeast, type Caller } from '@flotilla/platform';
import { ImageRow } from './persistence/entities';

/** Proto types stop here: rows in, contract messages out. */

/**
 * Host paths and base VDIs are returned to pool-operator and above only (and to services, which call as
 * pool-admin): tenants boot images by name and never see or choose host paths.
 */
export function imageToProto(image: ImageRow, viewer: Pick<Caller, 'role'> | 'operator'): storageV1.Image {
  const operator = viewer === 'operator' || roleAtLeast(viewer.role, 'pool-operator');
  return {
    id: image.id,
    name: image.name,
    tenantId: image.tenantId,
    labels: image.labels,
    createdAt: image.createdAt,
    updatedAt: image.updatedAt,
    etag: String(image.version),
    description: image.description,
    kind: `IMAGE_KIND_${image.kind}` as storageV1.ImageKind,
    visibility: `IMAGE_VISIBILITY_${image.visibility}` as storageV1.ImageVisibility,
    state: `IMAGE_STATE_${image.state}` as storageV1.ImageState,
    stateReason: image.stateReason,
    osType: image.osType,
    architecture: image.architecture,
    minDiskBytes: image.minDiskBytes,
    minMemoryMib: image.minMemoryMib,
    sha256: image.sha256,
    vdiId: operator ? (image.vdiId ?? '') : '',
    virtualSizeBytes: image.virtualSizeBytes,
    sizeBytes: image.sizeBytes,
    kernelPath: operator ? image.kernelPath : '',
    initrdPath: operator ? image.initrdPath : '',
    cmdline: image.cmdline,
    initrdSha256: image.initrdSha256,
  };
}
