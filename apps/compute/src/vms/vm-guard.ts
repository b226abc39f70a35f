import { assertOperationAllowed, failedPrecondition, type VmOperation } from '@flotilla/domain';
import { VmRow } from '../persistence/entities';

/**
 * The one guard of VM lifecycle requests: the domain's table, after compute's own rule that a VM a live
 * migration holds takes no other operation until the migration ends (its operation is the migration
 * service's, which `flotilla op wait` in compute would not find).
 */
export function assertVmOperationAllowed(
  vm: Pick<VmRow, 'id' | 'name' | 'powerState' | 'currentOperationId' | 'isSnapshot' | 'migrationId'>,
  op: VmOperation,
): void {
  if (vm.migrationId)
    throw failedPrecondition(
      `vm ${vm.name} (${vm.id}) is being migrated (migration ${vm.migrationId}, operation ${vm.currentOperationId ?? ''}): ${op} is refused until the migration ends; wait for it (flotilla migration get ${vm.migrationId}) or cancel it, then retry`,
      {
        resource: `vm ${vm.id}`,
        metadata: { migration_id: vm.migrationId, current_operation_id: vm.currentOperationId ?? '' },
      },
    );
  assertOperationAllowed(vm, op);
}
