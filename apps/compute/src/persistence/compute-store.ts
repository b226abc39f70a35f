import { DataSource, EntityManager } from 'typeorm';
import {
  EventFeed,
  NewEvent,
  operationEvent,
  quotedTable,
  TransactionalStore,
  updateVersionedRow,
  type Emit,
} from '@flotilla/platform';
import { flavorToProto, HostAllocation, hostToProto, vmToProto } from '../mappers';
import { FlavorRow, HostRow, OperationRow, VmRow } from './entities';

export type { Emit };

/** The compute service's store: the shared transactional store, plus compute's own queries. */
export class ComputeStore extends TransactionalStore {
  declare readonly feed: EventFeed;

  constructor(dataSource: DataSource, feed: EventFeed) {
    super(dataSource, feed);
  }

  /**
   * The host a VM last ran on, from its last successful start: a halted VM's definition and console
   * history stay there until the VM is destroyed or starts elsewhere.
   */
  async lastHostOf(vmId: string, m: EntityManager = this.manager): Promise<string | null> {
    const rows: { host_id: string }[] = await m.query(
      `SELECT result ->> 'host_id' AS host_id FROM ${quotedTable(m, OperationRow)}
        WHERE target_id = $1 AND state = 'SUCCEEDED' AND result ? 'host_id'
        ORDER BY finished_at DESC LIMIT 1`,
      [vmId],
    );
    return rows[0]?.host_id ?? null;
  }

  /**
   * vCPUs, memory and VM count held on each host by VMs that occupy it. A VM held by a live migration
   * counts on both hosts of the move (migration_host_id is the other one) until the migration ends.
   * `exceptVmId` leaves one VM out: a migration's check does not count the VM against itself.
   */
  async allocations(
    m: EntityManager,
    hostIds?: string[],
    exceptVmId?: string,
  ): Promise<Map<string, HostAllocation>> {
    const rows: Array<{ host_id: string; vcpus: string; memory_mib: string; vms: string }> = await m.query(
      `SELECT host_id, sum(vcpus)::text AS vcpus, sum(memory_mib)::text AS memory_mib, count(*)::text AS vms
         FROM (${vmsOnHosts(m)}) AS placed
        WHERE ($1::uuid[] IS NULL OR host_id = ANY($1::uuid[])) AND id IS DISTINCT FROM $2::uuid
        GROUP BY host_id`,
      [hostIds ?? null, exceptVmId ?? null],
    );
    return new Map(
      rows.map((r) => [
        r.host_id,
        { vcpus: Number(r.vcpus), memoryMib: Number(r.memory_mib), vmCount: Number(r.vms) },
      ]),
    );
  }
}

/**
 * One row per VM and host it holds capacity on: its host, and the other host of a migration holding it.
 * Columns: id, host_id, vcpus, memory_mib, anti_affinity_group.
 */
export function vmsOnHosts(m: EntityManager): string {
  const vms = quotedTable(m, VmRow);
  return `SELECT id, host_id, vcpus, memory_mib, anti_affinity_group FROM ${vms} WHERE host_id IS NOT NULL
    UNION ALL
    SELECT id, migration_host_id, vcpus, memory_mib, anti_affinity_group FROM ${vms}
     WHERE migration_host_id IS NOT NULL`;
}

export const noAllocation: HostAllocation = { vcpus: 0, memoryMib: 0, vmCount: 0 };

/** Outbox events of each resource kind, carrying the resource as the API shows it. */
export const events = {
  vm: (type: NewEvent['type'], vm: VmRow): NewEvent => ({
    kind: 'vm',
    type,
    resourceId: vm.id,
    tenantId: vm.tenantId,
    payload: vmToProto(vm),
  }),
  host: (type: NewEvent['type'], host: HostRow, allocation: HostAllocation = noAllocation): NewEvent => ({
    kind: 'host',
    type,
    resourceId: host.id,
    payload: hostToProto(host, allocation),
  }),
  flavor: (type: NewEvent['type'], flavor: FlavorRow): NewEvent => ({
    kind: 'flavor',
    type,
    resourceId: flavor.id,
    payload: flavorToProto(flavor),
  }),
  operation: operationEvent,
};

/** A versioned write of a VM (ABORTED when `vm.version` is stale) with its event; the VM as written. */
export async function writeVm(
  m: EntityManager,
  emit: Emit,
  vm: Pick<VmRow, 'id' | 'version'>,
  changes: Partial<VmRow>,
): Promise<VmRow> {
  const saved = await updateVersionedRow(m, VmRow, { kind: 'vm', id: vm.id, version: vm.version }, changes);
  emit(events.vm('UPDATED', saved));
  return saved;
}
