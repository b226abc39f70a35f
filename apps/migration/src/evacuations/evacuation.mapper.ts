import { migrationV1 } from '@flotilla/contracts';
import type { EvacuationRow, EvacuationVmRecord } from './evacuation.entity';

/** The one mapping from evacuation records to the contract. */
export function evacuationToProto(row: EvacuationRow): migrationV1.Evacuation {
  return {
    id: row.id,
    name: row.name,
    tenantId: row.tenantId,
    labels: row.labels,
    createdAt: row.createdAt,
    updatedAt: row.updatedAt,
    etag: String(row.version),
    hostId: row.hostId,
    state: `EVACUATION_STATE_${row.state}` as migrationV1.EvacuationState,
    stateReason: row.stateReason,
    maxParallel: row.maxParallel,
    onBlocked: `EVACUATION_BLOCKED_POLICY_${row.onBlocked}` as migrationV1.EvacuationBlockedPolicy,
    withStorage: row.withStorage,
    enterMaintenance: row.enterMaintenance,
    migrationOptions: row.migrationOptions,
    progress: row.progress,
    vms: row.vms.map(vmResultToProto),
    error: row.error ?? undefined,
    operationId: row.operationId,
    startedAt: row.startedAt,
    finishedAt: row.finishedAt ?? undefined,
  };
}

function vmResultToProto(vm: EvacuationVmRecord): migrationV1.EvacuationVmResult {
  return {
    vmId: vm.vmId,
    outcome: `EVACUATION_VM_OUTCOME_${vm.outcome}` as migrationV1.EvacuationVmOutcome,
    migrationId: vm.migrationId,
    destinationHostId: vm.destinationHostId,
    blockers: vm.blockers,
    error: vm.error ?? undefined,
  };
}

/** The policy of a request: UNSPECIFIED means FAIL. */
export function blockedPolicyOf(p: migrationV1.EvacuationBlockedPolicy): EvacuationRow['onBlocked'] {
  const name = String(p).replace(/^EVACUATION_BLOCKED_POLICY_/, '');
  return name === 'SKIP' || name === 'SHUTDOWN' ? name : 'FAIL';
}
