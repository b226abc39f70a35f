import { storageV1 } from '@flotilla/contracts';
import { wireDate } from '../compat/wire-date';
import { diskFormatLabel, glanceIdOf, sizeLabel } from './pool-lists';

/** An image created with POST /v2/images whose data has not been uploaded yet (Glance's "queued"). */
export interface QueuedImage {
  id: string;
  tenantId: string;
  name: string;
  diskFormat: string | null;
  containerFormat: string | null;
  visibility: 'public' | 'private';
  minDisk: number;
  minRam: number;
  status: 'queued' | 'saving';
  createdAt: Date;
}

/** Disk formats the pool imports (ImportVdi) and exports (ExportVdi: not VHD). */
export const importFormats: Record<string, storageV1.DiskFormat> = {
  raw: storageV1.DiskFormat.DISK_FORMAT_RAW,
  qcow2: storageV1.DiskFormat.DISK_FORMAT_QCOW2,
  vmdk: storageV1.DiskFormat.DISK_FORMAT_VMDK,
  vhd: storageV1.DiskFormat.DISK_FORMAT_VHD,
};
export const exportFormats: Record<string, storageV1.DiskFormat> = {
  raw: storageV1.DiskFormat.DISK_FORMAT_RAW,
  qcow2: storageV1.DiskFormat.DISK_FORMAT_QCOW2,
  vmdk: storageV1.DiskFormat.DISK_FORMAT_VMDK,
};

const glanceTime = (t: unknown) => {
  const d = wireDate(t);
  return d ? d.toISOString().replace(/\.\d{3}Z$/, 'Z') : null;
};

const statuses: Record<string, string> = {
  IMAGE_STATE_REGISTERING: 'saving',
  IMAGE_STATE_AVAILABLE: 'active',
  IMAGE_STATE_UNAVAILABLE: 'deactivated',
};

function links(id: string) {
  return { self: `/v2/images/${id}`, file: `/v2/images/${id}/file`, schema: '/v2/schemas/image' };
}

/** A catalogue image as Glance v2 shows it. KERNEL images read as Amazon kernel images ("aki"). */
export function imageDocument(i: storageV1.Image) {
  const id = glanceIdOf(i);
  const kernel = i.kind === storageV1.ImageKind.IMAGE_KIND_KERNEL;
  return {
    id,
    name: i.name,
    status: statuses[i.state] ?? 'deactivated',
    visibility: i.visibility === storageV1.ImageVisibility.IMAGE_VISIBILITY_PUBLIC ? 'public' : 'private',
    protected: false,
    os_hidden: false,
    owner: i.tenantId || null,
    checksum: null,
    os_hash_algo: i.sha256 ? 'sha256' : null,
    os_hash_value: i.sha256 || null,
    size: Number(i.labels?.[sizeLabel] ?? i.sizeBytes) || null,
    virtual_size: Number(i.virtualSizeBytes) || null,
    min_disk: Math.ceil(Number(i.minDiskBytes) / 2 ** 30),
    min_ram: Number(i.minMemoryMib),
    disk_format: kernel ? 'aki' : (i.labels?.[diskFormatLabel] ?? 'qcow2'),
    container_format: kernel ? 'aki' : 'bare',
    description: i.description || undefined,
    os_type: i.osType || undefined,
    architecture: i.architecture || undefined,
    tags: [],
    created_at: glanceTime(i.createdAt),
    updated_at: glanceTime(i.updatedAt),
    ...links(id),
  };
}

export function queuedDocument(q: QueuedImage) {
  const t = glanceTime(q.createdAt);
  return {
    id: q.id,
    name: q.name,
    status: q.status,
    visibility: q.visibility,
    protected: false,
    os_hidden: false,
    owner: q.tenantId,
    checksum: null,
    os_hash_algo: null,
    os_hash_value: null,
    size: null,
    virtual_size: null,
    min_disk: q.minDisk,
    min_ram: q.minRam,
    disk_format: q.diskFormat,
    container_format: q.containerFormat,
    tags: [],
    created_at: t,
    updated_at: t,
    ...links(q.id),
  };
}

export function glanceVersions(base: string) {
  const v = (id: string, status: string) => ({ id, status, links: [{ rel: 'self', href: `${base}/v2/` }] });
  return {
    versions: [v('v2.9', 'CURRENT'), v('v2.7', 'SUPPORTED'), v('v2.1', 'SUPPORTED'), v('v2.0', 'SUPPORTED')],
  };
}
