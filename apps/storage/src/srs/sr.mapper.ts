import { storageV1 } from '@flotilla/contracts';
import { srAllowedOperations } from '@flotilla/domain';
import { roleAtLeast, type Caller, type NewEvent } from '@flotilla/platform';
import { SrRow } from '../persistence/entities';

/** Proto types stop here: SR rows in, contract messages out. Paths go to pool-operator and above only. */
export function srToProto(
  sr: SrRow,
  viewer: Pick<Caller, 'role'> | 'operator',
  virtualAllocationBytes: number,
): storageV1.Sr {
  const operator = viewer === 'operator' || roleAtLeast(viewer.role, 'pool-operator');
  return {
    id: sr.id,
    name: sr.name,
    tenantId: sr.tenantId,
    labels: sr.labels,
    createdAt: sr.createdAt,
    updatedAt: sr.updatedAt,
    etag: String(sr.version),
    description: sr.description,
    type: `SR_TYPE_${sr.type}` as storageV1.SrType,
    hostId: sr.hostId ?? '',
    path: operator ? sr.path : '',
    state: `SR_STATE_${sr.state}` as storageV1.SrState,
    stateReason: sr.stateReason,
    capacityBytes: sr.capacityBytes,
    physicalUtilisationBytes: sr.physicalUtilisationBytes,
    virtualAllocationBytes,
    overprovisionRatio: sr.overprovisionRatio,
    hosts: sr.hosts.map((h) => ({ hostId: h.hostId, attached: h.attached, reason: h.reason })),
    allowedOperations: srAllowedOperations(sr).map((o) => `SR_OPERATION_${o}` as storageV1.SrOperation),
    currentOperationId: sr.currentOperationId ?? '',
    lastScannedAt: sr.lastScannedAt ?? undefined,
  };
}

/** The operator's view: the Watch stream empties the path for tenants (events/event-stream.ts). */
export const srEvent = (type: NewEvent['type'], sr: SrRow, virtualAllocationBytes = 0): NewEvent => ({
  kind: 'sr',
  type,
  resourceId: sr.id,
  tenantId: sr.tenantId,
  payload: srToProto(sr, 'operator', virtualAllocationBytes),
});
