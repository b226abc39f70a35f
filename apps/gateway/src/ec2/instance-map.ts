import { createHash } from 'node:crypto';
import { DataSource, In, IsNull, Not } from 'typeorm';
import type { computeV1 } from '@flotilla/contracts';
import { quotedTable } from '@flotilla/platform';
import { wireDate } from '../compat/wire-date';
import { derivedInstanceIdOf } from './ids';
import { Ec2InstanceRow, Ec2InstanceVersionRow } from './persistence';

/** EC2 shows a terminated instance for this long after it is gone (then it is dropped from every answer). */
export const terminatedVisibleMs = 60 * 60_000;

/** An instance's row as the front reads it for answers (user data only where asked for). */
export type InstanceRecord = Omit<Ec2InstanceRow, 'createdAt' | 'userData'>;

interface RawRow {
  instance_id: string;
  vm_id: string;
  tenant_id: string;
  reservation_id: string;
  launch_index: number | string;
  image_id: string | null;
  instance_type: string | null;
  key_name: string | null;
  client_token: string | null;
  /** Milliseconds since the epoch: a listing reads a thousand rows, and the driver's date parsing is a regex each. */
  launch_ms: number | string;
  terminated_ms: number | string | null;
  user_data?: string | null;
}

const asDate = (ms: number | string): Date => new Date(Number(ms));

function stillShown(r: InstanceRecord, now: Date): boolean {
  return !!r.terminatedAt && now.getTime() - r.terminatedAt.getTime() < terminatedVisibleMs;
}

/**
 * The EC2 instance id ↔ Flotilla VM map of one tenant, with what RunInstances recorded. VMs made through the
 * gRPC API or the CLI get a row (an id derived from the VM id) the first time a listing sees them; a row
 * whose VM a listing no longer sees is marked terminated then.
 */
export class InstanceMap {
  private quoted?: string;
  private versions?: string;

  constructor(private readonly dataSource: DataSource) {}

  /**
   * Brings the tenant's rows up to date with a complete listing of its VMs and returns the visible rows:
   * those of listed VMs and those terminated less than an hour ago. `known`: the tenant's rows (rowsOf) when
   * the caller read them beside the listing.
   */
  async sync(
    tenantId: string,
    vms: computeV1.Vm[],
    instanceTypeOf: (vm: computeV1.Vm) => string,
    o: { now?: Date; known?: InstanceRecord[] } = {},
  ): Promise<InstanceRecord[]> {
    const m = this.dataSource.manager;
    const now = o.now ?? new Date();
    const rows = o.known ?? (await this.rowsOf(tenantId));
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
      // Only the new rows are read back: another gateway or a launch may have recorded some of them first.
      rows.push(
        ...(await this.select('tenant_id = $1 AND vm_id = ANY($2::uuid[])', [
          tenantId,
          unseen.map((vm) => vm.id),
        ])),
      );
    }
    const listed = new Set(vms.map((vm) => vm.id));
    // A row recorded by a launch that finished after this listing was taken may have been marked gone by
    // such a listing: its VM is listed again, so it is not terminated.
    await this.markBack(rows.filter((r) => r.terminatedAt && listed.has(r.vmId)));
    await this.markGone(
      rows.filter((r) => !r.terminatedAt && !listed.has(r.vmId)),
      now,
    );
    return rows.filter((r) => listed.has(r.vmId) || stillShown(r, now));
  }

  /** Every row of the tenant, as sync() takes them. */
  rowsOf(tenantId: string): Promise<InstanceRecord[]> {
    return this.select('tenant_id = $1', [tenantId]);
  }

  /** The tenant's rows' version: every change of them moves it (Ec2InstanceVersions); '0' before the first. */
  async versionOf(tenantId: string): Promise<string> {
    this.versions ??= quotedTable(this.dataSource.manager, Ec2InstanceVersionRow);
    const [row]: Array<{ version: string }> = await this.dataSource.query(
      `SELECT version FROM ${this.versions} WHERE tenant_id = $1`,
      [tenantId],
    );
    return row ? String(row.version) : '0';
  }

  /**
   * The tenant's rows of the named instances (user data included), each with its VM read from compute:
   * undefined when the VM is gone (the row is marked terminated then; rows terminated over an hour ago are
   * left out). Ids with no row are not in the answer: VMs made through another API get theirs from sync().
   */
  async named(
    tenantId: string,
    instanceIds: string[],
    getVm: (vmId: string) => Promise<computeV1.Vm | undefined>,
    now = new Date(),
  ): Promise<
    Array<{ row: InstanceRecord & Pick<Ec2InstanceRow, 'userData'>; vm: computeV1.Vm | undefined }>
  > {
    const rows = await this.select(
      'tenant_id = $1 AND instance_id = ANY($2::text[])',
      [tenantId, instanceIds],
      true,
    );
    return this.withVms(rows, getVm, now);
  }

  /** The rows given, each with its VM (see named()). */
  async withVms<R extends InstanceRecord>(
    rows: R[],
    getVm: (vmId: string) => Promise<computeV1.Vm | undefined>,
    now = new Date(),
  ): Promise<Array<{ row: R; vm: computeV1.Vm | undefined }>> {
    const found = await Promise.all(rows.map(async (row) => ({ row, vm: await getVm(row.vmId) })));
    await this.markBack(found.filter((f) => f.vm && f.row.terminatedAt).map((f) => f.row));
    await this.markGone(
      found.filter((f) => !f.vm && !f.row.terminatedAt).map((f) => f.row),
      now,
    );
    return found.filter((f) => f.vm || stillShown(f.row, now));
  }

  private async markBack(rows: InstanceRecord[]): Promise<void> {
    if (!rows.length) return;
    await this.dataSource.manager.update(
      Ec2InstanceRow,
      { instanceId: In(rows.map((r) => r.instanceId)) },
      { terminatedAt: null },
    );
    for (const r of rows) r.terminatedAt = null;
  }

  private async markGone(rows: InstanceRecord[], now: Date): Promise<void> {
    if (!rows.length) return;
    await this.dataSource.manager.update(
      Ec2InstanceRow,
      { instanceId: In(rows.map((r) => r.instanceId)), terminatedAt: IsNull() },
      { terminatedAt: now },
    );
    for (const r of rows) r.terminatedAt = now;
  }

  /** Rows as plain records (a listing reads a thousand: no entity hydration, no user data unless asked). */
  private async select(where: string, args: unknown[], withUserData?: false): Promise<InstanceRecord[]>;
  private async select(
    where: string,
    args: unknown[],
    withUserData: true,
  ): Promise<Array<InstanceRecord & Pick<Ec2InstanceRow, 'userData'>>>;
  private async select(where: string, args: unknown[], withUserData = false): Promise<InstanceRecord[]> {
    this.quoted ??= quotedTable(this.dataSource.manager, Ec2InstanceRow);
    const raw: RawRow[] = await this.dataSource.query(
      `SELECT instance_id, vm_id, tenant_id, reservation_id, launch_index, image_id, instance_type, key_name,
         client_token, (extract(epoch FROM launch_time) * 1000)::float8 AS launch_ms,
         (extract(epoch FROM terminated_at) * 1000)::float8 AS terminated_ms${withUserData ? ', user_data' : ''}
       FROM ${this.quoted} WHERE ${where}`,
      args,
    );
    return raw.map((r) => ({
      instanceId: r.instance_id,
      vmId: r.vm_id,
      tenantId: r.tenant_id,
      reservationId: r.reservation_id,
      launchIndex: Number(r.launch_index),
      imageId: r.image_id,
      instanceType: r.instance_type,
      keyName: r.key_name,
      clientToken: r.client_token,
      launchTime: asDate(r.launch_ms),
      terminatedAt: r.terminated_ms === null ? null : asDate(r.terminated_ms),
      ...(withUserData ? { userData: r.user_data ?? null } : {}),
    }));
  }

  /**
   * Records an instance RunInstances launched. A listing may have recorded the VM a moment earlier under a
   * derived id: then that row keeps its id and gains the launch's fields.
   */
  async record(row: Omit<Ec2InstanceRow, 'createdAt' | 'terminatedAt'>): Promise<InstanceRecord> {
    this.quoted ??= quotedTable(this.dataSource.manager, Ec2InstanceRow);
    const inserted: unknown[] = await this.dataSource.query(
      `INSERT INTO ${this.quoted} (instance_id, vm_id, tenant_id, reservation_id, launch_index, image_id,
         instance_type, key_name, user_data, client_token, launch_time, terminated_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULL)
       ON CONFLICT DO NOTHING RETURNING instance_id`,
      [
        row.instanceId,
        row.vmId,
        row.tenantId,
        row.reservationId,
        row.launchIndex,
        row.imageId,
        row.instanceType,
        row.keyName,
        row.userData,
        row.clientToken,
        row.launchTime,
      ],
    );
    // eslint-disable-next-line @typescript-eslint/no-unused-vars
    const { userData, ...record } = row;
    if (inserted.length) return { ...record, terminatedAt: null };
    const { instanceId, vmId, ...fields } = row;
    // A listing recorded the VM first under its derived id, which stays; recorded already under this id (a
    // retried launch): kept as it was.
    await this.dataSource.manager.update(Ec2InstanceRow, { vmId, instanceId: Not(instanceId) }, fields);
    const [stored] = await this.select('vm_id = $1', [vmId]);
    return stored;
  }

  byReservation(tenantId: string, reservationId: string): Promise<InstanceRecord[]> {
    return this.select('tenant_id = $1 AND reservation_id = $2 ORDER BY launch_index', [
      tenantId,
      reservationId,
    ]);
  }

  async forget(vmIds: string[]): Promise<void> {
    if (vmIds.length) await this.dataSource.manager.delete(Ec2InstanceRow, { vmId: In(vmIds) });
  }
}
