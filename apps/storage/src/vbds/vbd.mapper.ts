import { storageV1 } from '@flotilla/contracts';
import { vbdAllowedOperations } from '@flotilla/domain';
import type { NewEvent } from '@flotilla/platform';
import { VbdRow } from './vbd.entity';

/** Proto types stop here: VBD rows in, contract messages out. */
export function vbdToProto(vbd: VbdRow): storageV1.Vbd {
  return {
    id: vbd.id,
    name: vbd.name,
    tenantId: vbd.tenantId,
    labels: vbd.labels,
    createdAt: vbd.createdAt,
    updatedAt: vbd.updatedAt,
    etag: String(vbd.version),
    vmId: vbd.vmId,
    vdiId: vbd.vdiId ?? '',
    devicePosition: vbd.devicePosition,
    device: vbd.state === 'ATTACHED' ? vbd.device : '',
    type: `VBD_TYPE_${vbd.type}` as storageV1.VbdType,
    mode: `VBD_MODE_${vbd.mode}` as storageV1.VbdMode,
    bootable: vbd.bootable,
    state: `VBD_STATE_${vbd.state}` as storageV1.VbdState,
    currentlyAttached: vbd.state === 'ATTACHED',
    hotPlugged: vbd.state === 'ATTACHED' && vbd.hotPlugged,
    unpluggable: vbd.unpluggable,
    hostId: vbd.state === 'DETACHED' ? '' : (vbd.hostId ?? ''),
    allowedOperations: vbdAllowedOperations(vbd).map((op) => `VBD_OPERATION_${op}` as storageV1.VbdOperation),
    currentOperationId: vbd.currentOperationId ?? '',
  };
}

export const vbdEvent = (type: NewEvent['type'], vbd: VbdRow): NewEvent => ({
  kind: 'vbd',
  type,
  resourceId: vbd.id,
  tenantId: vbd.tenantId,
  payload: vbdToProto(vbd),
});
