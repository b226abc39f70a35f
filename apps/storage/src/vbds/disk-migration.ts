import { randomUUID } from 'node:crypto';
import { EntityManager } from 'typeorm';
import { commonV1, storageV1 } from '@flotilla/contracts';
import {
  DiskMigrationPlan,
  DomainError,
  ErrorCode,
  failedPrecondition,
  fullCopyBytes,
  invalidArgument,
  isDomainError,
  isUuid,
  MigrationSr,
  planDiskMigration,
  srAllowedOperations,
  validateId,
} from '@flotilla/domain';
import { Emit, Logger, TransactionalStore } from '@flotilla/platform';
import { SrRow, VdiRow } from '../persistence/entities';
import { StorageAgents } from '../srs/agents';
import { lockSr, srSpace, SrHosts, srVisibleFromHost } from '../srs/sr-space';
import { diskAt } from '../vdis/vdi-operations';
import { newVdiRow, VdiService } from '../vdis/vdi.service';
import { vdiEvent } from '../vdis/vdi.mapper';
import { DiskCopy, DiskMigrationRow } from './disk-migration.entity';
import { diskSource, vmDisk } from './disk-files';
import { VbdRow } from './vbd.entity';
import { attachVmDisks } from './vm-disk.service';

export interface DiskMigrationDeps {
  store: TransactionalStore;
  vdis: VdiService;
  agents: StorageAgents;
  srHosts: SrHosts;
  /** Asks the chain keeper for a pass (it deletes the hidden nodes an abort or clean-up let go). */
  afterChange: () => void;
  logger: Logger;
}

interface MigrationRequest {
  vmId: string;
  sourceHostId: string;
  destinationHostId: string;
  withStorage: boolean;
  vdiMap: Record<string, string>;
}

/**
 * The storage side of VM migrations (VmDiskService Check/Prepare/Commit/Abort/CleanUpVmDiskMigration).
 * Every step is a durable record first and agent calls after, each repeatable, so a restart between any
 * two calls loses nothing:
 *
 *   prepare   record PREPARED; hold each copied VDI (current operation = the migration id); a hidden
 *             CREATING node for each target file holds its space; then CreateDisk on the destination
 *   commit    (the point of no return) each VDI takes its target file, no parent; its old top file becomes
 *             a hidden node held by the migration, so the chain keeper neither coalesces into it nor
 *             deletes it while the source QEMU has it open; VBDs attached on the destination
 *   abort     target nodes let go (hidden, READY, idle: the chain keeper deletes their files), VDIs freed
 *   clean-up  the old top files deleted through the source host's agent, their nodes dropped
 */
export class VmDiskMigrations {
  constructor(private readonly deps: DiskMigrationDeps) {}

  async check(req: storageV1.CheckVmDiskMigrationRequest): Promise<storageV1.CheckVmDiskMigrationResponse> {
    const spec = validate(req);
    const destinationHostName = await this.hostName(spec.destinationHostId);
    const plan = await this.plan(this.deps.store.manager, spec, destinationHostName, false);
    return {
      disks: plan.disks.map(planToProto),
      blockers: plan.blockers.map((b): commonV1.ErrorDetail => ({
        reason: b.kind,
        field: '',
        description: b.message,
        metadata: { resource_kind: b.resourceKind, resource_id: b.resourceId },
      })),
      storageBytesToCopy: plan.storageBytesToCopy,
    };
  }

  async prepare(
    req: storageV1.PrepareVmDiskMigrationRequest,
  ): Promise<storageV1.PrepareVmDiskMigrationResponse> {
    const spec = validate(req);
    const migrationId = validateId('migration_id', req.migrationId, 'migration');
    let row = await this.known(migrationId, spec.vmId);
    if (!row) {
      try {
        row = await this.record(migrationId, spec);
      } catch (e) {
        // A concurrent prepare of the same id recorded it first: answer as a repeat.
        row = await this.known(migrationId, spec.vmId);
        if (!row) throw e;
      }
    }
    if (row.state === 'ABORTED')
      throw failedPrecondition(
        `migration ${migrationId} was aborted: prepare the next attempt under a new migration id`,
        { resource: `migration ${migrationId}` },
      );
    if (row.state !== 'PREPARED')
      throw failedPrecondition(
        `migration ${migrationId} is already ${row.state}: its disks live on the destination`,
        { resource: `migration ${migrationId}` },
      );
    await this.createTargetFiles(row);
    return this.destinationView(row);
  }

  async commit(req: storageV1.CommitVmDiskMigrationRequest): Promise<storageV1.VmDisk[]> {
    const row = await this.existing(req);
    if (row.state === 'ABORTED')
      throw failedPrecondition(
        `migration ${row.migrationId} was aborted: its disks stayed on the source and cannot be committed`,
        { resource: `migration ${row.migrationId}` },
      );
    if (row.state !== 'PREPARED') return this.currentDisks(row.vmId);
    const measured = await this.measureTargets(row);
    return this.deps.store.tx(async (m, emit) => {
      const cur = await m.findOne(DiskMigrationRow, {
        where: { migrationId: row.migrationId },
        lock: { mode: 'pessimistic_write' },
      });
      if (!cur || cur.state === 'ABORTED')
        throw failedPrecondition(`migration ${row.migrationId} was aborted meanwhile`);
      if (cur.state !== 'PREPARED') return this.disksIn(m, cur.vmId);
      for (const copy of cur.copies) await this.moveVdi(m, emit, cur, copy, measured.get(copy.vdiId));
      const disks = await attachVmDisks(m, emit, cur.vmId, cur.destinationHostId);
      await setState(m, cur, 'COMMITTED');
      this.deps.logger.info(
        { migrationId: cur.migrationId, vmId: cur.vmId, copied: cur.copies.length },
        'disk migration committed',
      );
      return disks;
    });
  }

  async abort(req: storageV1.AbortVmDiskMigrationRequest): Promise<void> {
    const vmId = validateId('vm_id', req.vmId, 'VM');
    const migrationId = validateId('migration_id', req.migrationId, 'migration');
    const row = await this.known(migrationId, vmId);
    if (!row) return;
    if (row.state === 'COMMITTED' || row.state === 'CLEANED')
      throw failedPrecondition(
        `migration ${migrationId} is ${row.state}: past its point of no return the VM's disks live on the destination; clean up instead`,
        { resource: `migration ${migrationId}` },
      );
    if (row.state === 'PREPARED')
      await this.deps.store.tx(async (m, emit) => {
        const cur = await m.findOne(DiskMigrationRow, {
          where: { migrationId },
          lock: { mode: 'pessimistic_write' },
        });
        if (!cur || cur.state !== 'PREPARED') return;
        for (const copy of cur.copies) {
          const vdi = await m.findOneBy(VdiRow, { id: copy.vdiId });
          if (vdi?.currentOperationId === migrationId)
            await this.deps.vdis.update(m, emit, vdi, { currentOperationId: null });
          const node = await m.findOneBy(VdiRow, { id: copy.targetNodeId });
          // Let go: a hidden node nothing is backed by, which the chain keeper deletes (file, then record).
          if (node?.currentOperationId === migrationId)
            await this.deps.vdis.update(m, emit, node, {
              state: 'READY',
              readOnly: true,
              reservedPhysicalBytes: 0,
              currentOperationId: null,
            });
        }
        await setState(m, cur, 'ABORTED');
      });
    await this.deleteAbandonedTargets(row);
  }

  async cleanUp(req: storageV1.CleanUpVmDiskMigrationRequest): Promise<void> {
    const row = await this.existing(req);
    if (row.state === 'PREPARED')
      throw failedPrecondition(
        `migration ${row.migrationId} is not committed: commit it, or abort it to keep the VM on the source`,
        { resource: `migration ${row.migrationId}` },
      );
    if (row.state !== 'COMMITTED') return;
    const m = this.deps.store.manager;
    for (const copy of row.copies) {
      const old = await m.findOneBy(VdiRow, { id: copy.oldTopNodeId });
      if (!old) continue;
      const sr = await m.findOneByOrFail(SrRow, { id: old.srId });
      const host = await this.deps.srHosts.hostFor(sr, row.sourceHostId);
      // Refused while the source QEMU still has the file open: the caller calls again later.
      await this.deps.agents.call(host, (a) => a.deleteDisk({ disk: diskAt(sr, old.file) }));
    }
    await this.deps.store.tx(async (tm, emit) => {
      const cur = await tm.findOne(DiskMigrationRow, {
        where: { migrationId: row.migrationId },
        lock: { mode: 'pessimistic_write' },
      });
      if (!cur || cur.state !== 'COMMITTED') return;
      for (const copy of cur.copies) {
        const old = await tm.findOneBy(VdiRow, { id: copy.oldTopNodeId });
        if (!old) continue;
        await tm.delete(VdiRow, { id: old.id });
        emit(vdiEvent('DELETED', old));
      }
      await setState(tm, cur, 'CLEANED');
    });
    this.deps.logger.info({ migrationId: row.migrationId }, 'disk migration cleaned up');
    // The snapshots' chains on the source may now hold hidden nodes to merge or delete.
    this.deps.afterChange();
  }

  // ---- planning ----------------------------------------------------------------------------------------

  /**
   * The plan over the records now (`lock`: the target SRs and VBDs locked for the caller's transaction).
   * The destination's name (for messages) is looked up by the caller beforehand: it may ask compute, and no
   * remote call is made while a transaction holds locks.
   */
  private async plan(
    m: EntityManager,
    spec: MigrationRequest,
    destinationHostName: string,
    lock: boolean,
  ): Promise<DiskMigrationPlan> {
    const vbds = await m.find(VbdRow, {
      where: { vmId: spec.vmId },
      order: { devicePosition: 'ASC' },
      ...(lock ? { lock: { mode: 'pessimistic_write' as const } } : {}),
    });
    const sources = [];
    for (const vbd of vbds) if (vbd.vdiId) sources.push({ vbd, ...(await diskSource(m, vbd)) });
    const vdiIds = new Set(sources.map((s) => s.vdi.id));
    const mapped = new Map<string, SrRow>();
    for (const [key, value] of Object.entries(spec.vdiMap)) {
      const field = `spec.vdi_map[${key}]`;
      if (!vdiIds.has(key.toLowerCase()))
        throw invalidArgument(
          field,
          `${key} is not a disk of vm ${spec.vmId}: vdi_map keys are the ids of the VM's VDIs`,
        );
      const sr = isUuid(value)
        ? await m.findOneBy(SrRow, { id: value.toLowerCase() })
        : await m.findOneBy(SrRow, { name: value });
      if (!sr)
        throw new DomainError(ErrorCode.NotFound, `${field}: SR ${JSON.stringify(value)} not found`, {
          field,
          resource: `sr ${value}`,
        });
      mapped.set(key.toLowerCase(), sr);
    }
    const destinationFileSrs = await m.findBy(SrRow, { type: 'FILE', hostId: spec.destinationHostId });
    const targets = new Map([...destinationFileSrs, ...mapped.values()].map((s) => [s.id, s]));
    const view = new Map<string, MigrationSr>();
    const srView = async (sr: SrRow): Promise<MigrationSr> => {
      let v = view.get(sr.id);
      if (!v) {
        const current = lock && targets.has(sr.id) ? await lockSr(m, sr.id) : sr;
        v = {
          id: sr.id,
          name: sr.name,
          type: sr.type,
          hostId: sr.hostId,
          tenantId: sr.tenantId,
          seenByDestination: srVisibleFromHost(current, spec.destinationHostId),
          usable: srAllowedOperations(current).includes('VDI_CREATE'),
          space: await srSpace(m, current),
        };
        view.set(sr.id, v);
      }
      return v;
    };
    // Target SRs are locked in one order, so two prepares cannot deadlock.
    for (const id of [...targets.keys()].sort()) await srView(targets.get(id) as SrRow);
    const disks = [];
    for (const { vbd, vdi, sr } of sources)
      disks.push({
        vbdId: vbd.id,
        vdiId: vdi.id,
        vdiName: vdi.name,
        tenantId: vdi.tenantId,
        readOnly: vbd.mode === 'RO' || vdi.readOnly,
        virtualSizeBytes: vdi.virtualSizeBytes,
        chainPhysicalBytes: await this.deps.vdis.chainPhysicalBytes(m, vdi),
        sr: await srView(sr),
      });
    return planDiskMigration({
      disks,
      srs: [...targets.keys()].map((id) => view.get(id) as MigrationSr),
      destinationHostName,
      withStorage: spec.withStorage,
      vdiMap: Object.fromEntries([...mapped].map(([vdiId, sr]) => [vdiId, sr.id])),
    });
  }

  private async hostName(id: string): Promise<string> {
    return this.deps.srHosts.directory.get(id).then(
      (h) => h.name,
      () => id,
    );
  }

  // ---- prepare -----------------------------------------------------------------------------------------

  /** Plans again and records the migration, its holds and its reservations in one transaction. */
  private async record(migrationId: string, spec: MigrationRequest): Promise<DiskMigrationRow> {
    const destinationHostName = await this.hostName(spec.destinationHostId);
    return this.deps.store.tx(async (m, emit) => {
      const other = await m.findOneBy(DiskMigrationRow, { vmId: spec.vmId, state: 'PREPARED' });
      if (other)
        throw failedPrecondition(
          `vm ${spec.vmId} has migration ${other.migrationId} prepared: commit or abort it first`,
          { resource: `vm ${spec.vmId}` },
        );
      const plan = await this.plan(m, spec, destinationHostName, true);
      if (plan.blockers.length) throw refusal(plan);
      const copies: DiskCopy[] = [];
      for (const entry of plan.disks) {
        if (!entry.targetSrId) continue;
        const vdi = await m.findOneOrFail(VdiRow, {
          where: { id: entry.vdiId },
          lock: { mode: 'pessimistic_write' },
        });
        if (vdi.state !== 'READY' || vdi.currentOperationId)
          throw failedPrecondition(
            `vdi ${vdi.name} (${vdi.id}) is ${vdi.state}${vdi.currentOperationId ? ` with operation ${vdi.currentOperationId} in progress` : ''}: wait for it and retry the migration`,
            { resource: `vdi ${vdi.id}` },
          );
        await this.deps.vdis.update(m, emit, vdi, { currentOperationId: migrationId });
        const node = newVdiRow({
          name: `migration target of ${vdi.name}`.slice(0, 255),
          tenantId: vdi.tenantId,
          srId: entry.targetSrId,
          virtualSizeBytes: vdi.virtualSizeBytes,
          managed: false,
          reservedPhysicalBytes: fullCopyBytes(
            vdi.virtualSizeBytes,
            await this.deps.vdis.chainPhysicalBytes(m, vdi),
          ),
          currentOperationId: migrationId,
        });
        await m.insert(VdiRow, node);
        copies.push({
          vbdId: entry.vbdId,
          vdiId: vdi.id,
          sourceSrId: vdi.srId,
          sourceFile: vdi.file,
          targetSrId: entry.targetSrId,
          targetFile: node.file,
          targetNodeId: node.id,
          oldTopNodeId: randomUUID(),
          virtualSizeBytes: vdi.virtualSizeBytes,
        });
      }
      const row: DiskMigrationRow = {
        migrationId,
        vmId: spec.vmId,
        sourceHostId: spec.sourceHostId,
        destinationHostId: spec.destinationHostId,
        state: 'PREPARED',
        copies,
        version: 1,
        createdAt: new Date(),
        updatedAt: new Date(),
      };
      await m.insert(DiskMigrationRow, row);
      return row;
    });
  }

  /** Empty thin qcow2 files, no backing file (the mirror flattens the chain into them); repeats are safe. */
  private async createTargetFiles(row: DiskMigrationRow): Promise<void> {
    const m = this.deps.store.manager;
    for (const copy of row.copies) {
      const sr = await m.findOneByOrFail(SrRow, { id: copy.targetSrId });
      const host = await this.deps.srHosts.hostFor(sr, row.destinationHostId);
      await this.deps.agents.call(host, (a) =>
        a.createDisk({
          disk: diskAt(sr, copy.targetFile),
          virtualSizeBytes: copy.virtualSizeBytes,
          backingFile: '',
        }),
      );
    }
  }

  /** Every disk of the VM as the destination opens it, and the plan, from the records. */
  private async destinationView(row: DiskMigrationRow): Promise<storageV1.PrepareVmDiskMigrationResponse> {
    const m = this.deps.store.manager;
    const vbds = await m.find(VbdRow, { where: { vmId: row.vmId }, order: { devicePosition: 'ASC' } });
    const copyOf = new Map(row.copies.map((c) => [c.vbdId, c]));
    const disks: storageV1.VmDisk[] = [];
    const plan: storageV1.DiskMigrationPlan[] = [];
    for (const vbd of vbds) {
      if (!vbd.vdiId) continue;
      const source = await diskSource(m, vbd);
      const copy = copyOf.get(vbd.id);
      const disk = vmDisk(vbd, source);
      if (copy) {
        const target = await m.findOneByOrFail(SrRow, { id: copy.targetSrId });
        Object.assign(disk, { srId: target.id, srPath: target.path, file: copy.targetFile });
      }
      disks.push(disk);
      plan.push({
        vbdId: vbd.id,
        vdiId: source.vdi.id,
        srId: copy?.sourceSrId ?? source.sr.id,
        targetSrId: copy?.targetSrId ?? '',
        sizeBytes: copy?.virtualSizeBytes ?? 0,
      });
    }
    return { disks, plan };
  }

  // ---- commit ------------------------------------------------------------------------------------------

  /** Bytes on disk of each target file; a target file that is missing refuses the commit. */
  private async measureTargets(row: DiskMigrationRow): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    const m = this.deps.store.manager;
    for (const copy of row.copies) {
      const sr = await m.findOneByOrFail(SrRow, { id: copy.targetSrId });
      try {
        const host = await this.deps.srHosts.hostFor(sr, row.destinationHostId);
        const { info } = await this.deps.agents.call(host, (a) =>
          a.getDiskInfo({ disk: diskAt(sr, copy.targetFile) }),
        );
        out.set(copy.vdiId, info?.physicalBytes ?? 0);
      } catch (e) {
        if (isDomainError(e) && e.code === ErrorCode.NotFound)
          throw failedPrecondition(
            `the target file ${copy.targetFile} of vdi ${copy.vdiId} is missing on SR ${sr.name}: the disk was never copied; abort the migration`,
            { resource: `vdi ${copy.vdiId}` },
          );
        // Not measurable now (the QEMU holds it, the host is slow): the next SR scan measures it.
        this.deps.logger.info({ vdiId: copy.vdiId, err: e }, 'target file not measured at the commit');
      }
    }
    return out;
  }

  /** The VDI takes its target file (no parent); its old top stays a hidden node held by the migration. */
  private async moveVdi(
    m: EntityManager,
    emit: Emit,
    row: DiskMigrationRow,
    copy: DiskCopy,
    physicalBytes: number | undefined,
  ): Promise<void> {
    const vdi = await m.findOneOrFail(VdiRow, {
      where: { id: copy.vdiId },
      lock: { mode: 'pessimistic_write' },
    });
    const node = await m.findOneBy(VdiRow, { id: copy.targetNodeId });
    if (node) await m.delete(VdiRow, { id: node.id });
    // One record per file at every moment: the VDI leaves its old file before the old file gets a record.
    await this.deps.vdis.update(m, emit, vdi, {
      srId: copy.targetSrId,
      file: copy.targetFile,
      parentId: null,
      physicalUtilisationBytes: physicalBytes ?? 0,
      reservedPhysicalBytes: 0,
      currentOperationId: vdi.currentOperationId === row.migrationId ? null : vdi.currentOperationId,
    });
    await m.insert(
      VdiRow,
      newVdiRow({
        id: copy.oldTopNodeId,
        name: `top of ${vdi.name} before its migration`.slice(0, 255),
        tenantId: vdi.tenantId,
        srId: copy.sourceSrId,
        state: 'READY',
        file: copy.sourceFile,
        parentId: vdi.parentId,
        virtualSizeBytes: vdi.virtualSizeBytes,
        physicalUtilisationBytes: vdi.physicalUtilisationBytes,
        readOnly: true,
        managed: false,
        currentOperationId: row.migrationId,
      }),
    );
  }

  // ---- abort -------------------------------------------------------------------------------------------

  /**
   * Deletes the target files an abort let go now, through the destination's agent; what fails here (the
   * host is away, its QEMU still holds the file) the chain keeper deletes on a later pass.
   */
  private async deleteAbandonedTargets(row: DiskMigrationRow): Promise<void> {
    const m = this.deps.store.manager;
    for (const copy of row.copies) {
      const node = await m.findOneBy(VdiRow, { id: copy.targetNodeId });
      if (!node || node.managed || node.currentOperationId) continue;
      try {
        const sr = await m.findOneByOrFail(SrRow, { id: node.srId });
        const host = await this.deps.srHosts.hostFor(sr, row.destinationHostId);
        await this.deps.agents.call(host, (a) => a.deleteDisk({ disk: diskAt(sr, node.file) }));
        await this.deps.store.tx(async (tm) => {
          const cur = await tm.findOneBy(VdiRow, { id: node.id });
          if (!cur || cur.managed || cur.currentOperationId) return;
          if ((await tm.countBy(VdiRow, { parentId: cur.id })) > 0) return;
          await tm.delete(VdiRow, { id: cur.id });
        });
      } catch (e) {
        this.deps.logger.info(
          { migrationId: row.migrationId, file: node.file, err: e },
          'target file of an aborted migration left to the chain keeper',
        );
        this.deps.afterChange();
      }
    }
  }

  // ---- reads -------------------------------------------------------------------------------------------

  private async known(migrationId: string, vmId: string): Promise<DiskMigrationRow | null> {
    const row = await this.deps.store.manager.findOneBy(DiskMigrationRow, { migrationId });
    if (row && row.vmId !== vmId)
      throw invalidArgument(
        'migration_id',
        `migration ${migrationId} moves vm ${row.vmId}, not vm ${vmId}: give that VM's id or a new migration id`,
      );
    return row;
  }

  private async existing(req: { vmId: string; migrationId: string }): Promise<DiskMigrationRow> {
    const vmId = validateId('vm_id', req.vmId, 'VM');
    const migrationId = validateId('migration_id', req.migrationId, 'migration');
    const row = await this.known(migrationId, vmId);
    if (!row)
      throw new DomainError(
        ErrorCode.NotFound,
        `no disk migration ${migrationId} of vm ${vmId} was prepared: prepare it first`,
        { resource: `migration ${migrationId}` },
      );
    return row;
  }

  private currentDisks(vmId: string): Promise<storageV1.VmDisk[]> {
    return this.disksIn(this.deps.store.manager, vmId);
  }

  private async disksIn(m: EntityManager, vmId: string): Promise<storageV1.VmDisk[]> {
    const vbds = await m.find(VbdRow, { where: { vmId }, order: { devicePosition: 'ASC' } });
    const out: storageV1.VmDisk[] = [];
    for (const vbd of vbds) if (vbd.vdiId) out.push(vmDisk(vbd, await diskSource(m, vbd)));
    return out;
  }
}

function validate(req: {
  vmId: string;
  sourceHostId: string;
  destinationHostId: string;
  withStorage: boolean;
  vdiMap: Record<string, string>;
}): MigrationRequest {
  const vmId = validateId('vm_id', req.vmId, 'VM');
  const sourceHostId = validateId('source_host_id', req.sourceHostId, 'host');
  const destinationHostId = validateId('destination_host_id', req.destinationHostId, 'host');
  if (sourceHostId === destinationHostId)
    throw invalidArgument('destination_host_id', 'is the source host: a migration goes to another host');
  return { vmId, sourceHostId, destinationHostId, withStorage: req.withStorage, vdiMap: req.vdiMap ?? {} };
}

/** Prepare refused: every blocker in one message; RESOURCE_EXHAUSTED when space is all that is missing. */
function refusal(plan: DiskMigrationPlan): DomainError {
  const onlySpace = plan.blockers.every((b) => b.kind === 'INSUFFICIENT_STORAGE');
  const [first] = plan.blockers;
  return new DomainError(
    onlySpace ? ErrorCode.ResourceExhausted : ErrorCode.FailedPrecondition,
    plan.blockers.map((b) => `${b.kind}: ${b.message}`).join('; '),
    {
      resource: `${first.resourceKind} ${first.resourceId}`,
      metadata: { blockers: plan.blockers.map((b) => b.kind).join(',') },
    },
  );
}

function planToProto(p: DiskMigrationPlan['disks'][number]): storageV1.DiskMigrationPlan {
  return {
    vbdId: p.vbdId,
    vdiId: p.vdiId,
    srId: p.srId,
    targetSrId: p.targetSrId ?? '',
    sizeBytes: p.sizeBytes,
  };
}

async function setState(m: EntityManager, row: DiskMigrationRow, state: DiskMigrationRow['state']) {
  const res = await m.update(
    DiskMigrationRow,
    { migrationId: row.migrationId, version: row.version },
    { state, version: row.version + 1 },
  );
  if (res.affected !== 1)
    throw new DomainError(ErrorCode.Conflict, `migration ${row.migrationId} changed meanwhile: retry`);
}
