import { createHash } from 'node:crypto';
import { DataSource, In, IsNull } from 'typeorm';
import type { computeV1 } from '@flotilla/contracts';
import { wireDate } from '../compat/wire-date';
import { derivedInstanceIdOf } from './ids';
import { Ec2InstanceRow } from './persistence';

/** EC2 shows a terminated instance for this long after it is gone (then it is dropped from every answer). */
export const terminatedVisibleMs = 60 * 60_000;

/**
 * The EC2 instance id ↔ Flotilla VM map of one tenant, with what RunInstances recorded. VMs made through the
 * gRPC API or the CLI get a row (an id derived from the VM id) the first time a listing sees them; a row
 * whose VM a listing no longer sees is marked terminated then.
 */
export class InstanceMap {
  constructor(private readonly dataSource: DataSource) {}

  /**
   * Brings the tenant's rows up to date with a complete listing of its VMs and returns the visible rows:
   * those of listed VMs and those terminated less than an hour ago.
   */
  async sync(
    tenantId: string,
    vms: computeV1.Vm[],
    instanceTypeOf: (vm: computeV1.Vm) => string,
    now = new Date(),
  ): Promise<Ec2InstanceRow[]> {
    const m = this.dataSource.manager;
    let rows = await m.findBy(Ec2InstanceRow, { tenantId });
    const byVm = new Map(rows.map((r) => [r.vmId, r]));
    const unseen = vms.filter((vm) => !byVm.has(vm.id));
    if (unseen.length) {
      await m
        .createQueryBuilder()
        .insert()
        .into(Ec2InstanceRow)
        .values(
          unseen.map((vm) => ({
            instanceId: derivedInstanceIdOf(vm.id),
            vmId: vm.id,
            tenantId,
            reservationId: `r-${createHash('sha256').update(`vm-reservation:${vm.id}`).digest('hex').slice(0, 17)}`,
            launchIndex: 0,
            imageId: null,
            instanceType: instanceTypeOf(vm),
            keyName: null,
            userData: null,
            clientToken: null,
            launchTime: wireDate(vm.createdAt) ?? now,
            terminatedAt: null,
          })),
        )
        .orIgnore()
        .execute();
      rows = await m.findBy(Ec2InstanceRow, { tenantId });
    }
    const listed = new Set(vms.map((vm) => vm.id));
    // A row recorded by a launch that finished after this listing was taken may have been marked gone by
    // such a listing: its VM is listed again, so it is not terminated.
    const back = rows.filter((r) => r.terminatedAt && listed.has(r.vmId));
    if (back.length) {
      await m.update(
        Ec2InstanceRow,
        { instanceId: In(back.map((r) => r.instanceId)) },
        { terminatedAt: null },
      );
      for (const r of back) r.terminatedAt = null;
    }
    const gone = rows.filter((r) => !r.terminatedAt && !listed.has(r.vmId));
    if (gone.length) {
      await m.update(
        Ec2InstanceRow,
        { instanceId: In(gone.map((r) => r.instanceId)), terminatedAt: IsNull() },
        { terminatedAt: now },
      );
      for (const r of gone) r.terminatedAt = now;
    }
    return rows.filter(
      (r) =>
        listed.has(r.vmId) ||
        (r.terminatedAt && now.getTime() - r.terminatedAt.getTime() < terminatedVisibleMs),
    );
  }

  /**
   * Records an instance RunInstances launched. A listing may have recorded the VM a moment earlier under a
   * derived id: then that row keeps its id and gains the launch's fields. Returns the row as stored.
   */
  async record(row: Omit<Ec2InstanceRow, 'createdAt' | 'terminatedAt'>): Promise<Ec2InstanceRow> {
    const m = this.dataSource.manager;
    await m
      .createQueryBuilder()
      .insert()
      .into(Ec2InstanceRow)
      .values({ ...row, terminatedAt: null })
      .orIgnore()
      .execute();
    const stored = await m.findOneByOrFail(Ec2InstanceRow, { vmId: row.vmId });
    if (stored.instanceId !== row.instanceId) {
      // eslint-disable-next-line @typescript-eslint/no-unused-vars
      const { instanceId, vmId, ...fields } = row;
      await m.update(Ec2InstanceRow, { vmId }, fields);
      return { ...stored, ...fields };
    }
    return stored;
  }

  byReservation(tenantId: string, reservationId: string): Promise<Ec2InstanceRow[]> {
    return this.dataSource.manager.find(Ec2InstanceRow, {
      where: { tenantId, reservationId },
      order: { launchIndex: 'ASC' },
    });
  }

  async forget(vmIds: string[]): Promise<void> {
    if (vmIds.length) await this.dataSource.manager.delete(Ec2InstanceRow, { vmId: In(vmIds) });
  }
}
