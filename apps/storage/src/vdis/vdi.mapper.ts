import { storageV1 } from '@flotilla/contracts';
import { vdiAllowedOperations, VdiAttachment } from '@flotilla/domain';
import type { NewEvent } from '@flotilla/platform';
import { VdiRow } from '../persistence/entities';

/** What a VDI's message needs beside its row: its snapshots, VBDs, attachment and SR usability. */
export interface VdiExtras {
  snapshotIds: string[];
  vbdIds: string[];
  attachment: VdiAttachment;
  srUsable: boolean;
}

const noExtras: VdiExtras = { snapshotIds: [], vbdIds: [], attachment: 'NONE', srUsable: true };

export function vdiToProto(v: VdiRow, extras: VdiExtras = noExtras): storageV1.Vdi {
  return {
    id: v.id,
    name: v.name,
    tenantId: v.tenantId,
    labels: v.labels,
    createdAt: v.createdAt,
    updatedAt: v.updatedAt,
    etag: String(v.version),
    description: v.description,
    srId: v.srId,
    state: `VDI_STATE_${v.state}` as storageV1.VdiState,
    stateReason: v.stateReason,
    virtualSizeBytes: v.virtualSizeBytes,
    physicalUtilisationBytes: v.physicalUtilisationBytes,
    format: storageV1.DiskFormat.DISK_FORMAT_QCOW2,
    parentId: v.parentId ?? '',
    isSnapshot: v.isSnapshot,
    snapshotOf: v.snapshotOf ?? '',
    snapshotTime: v.snapshotTime ?? undefined,
    snapshotIds: extras.snapshotIds,
    readOnly: v.readOnly,
    sharable: v.sharable,
    managed: v.managed,
    imageId: v.imageId ?? '',
    vbdIds: extras.vbdIds,
    allowedOperations: vdiAllowedOperations({
      state: v.state,
      readOnly: v.readOnly,
      isSnapshot: v.isSnapshot,
      managed: v.managed,
      imageBase: v.imageBase,
      attachment: extras.attachment,
      srUsable: extras.srUsable,
      currentOperationId: v.currentOperationId,
    }).map((o) => `VDI_OPERATION_${o}` as storageV1.VdiOperation),
    currentOperationId: v.currentOperationId ?? '',
  };
}

export const vdiEvent = (type: NewEvent['type'], v: VdiRow): NewEvent => ({
  kind: 'vdi',
  type,
  resourceId: v.id,
  tenantId: v.tenantId,
  payload: vdiToProto(v),
});
