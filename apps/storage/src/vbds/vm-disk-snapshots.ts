import { randomUUID } from 'node:crypto';
import { In } from 'typeorm';
import { storageV1 } from '@flotilla/contracts';
import {
  DomainError,
  ErrorCode,
  failedPrecondition,
  invalidArgument,
  isDomainError,
  validateId,
} from '@flotilla/domain';
import { Logger, OperationService, TransactionalStore } from '@flotilla/platform';
import { VdiRow } from '../persistence/entities';
import { VdiService } from '../vdis/vdi.service';
import { serviceCaller, VdiStore } from '../vdis/vdi-store';
import { diskSource, vmDisk } from './disk-files';
import { VbdRow } from './vbd.entity';
import { vbdEvent } from './vbd.mapper';
import { insertVbdIfAbsent, NewVbd } from './vbd.service';
import { RootDiskVdis } from './vm-disk.service';

/** A VDI operation started for a VM-level one: the VDI it makes or changes, and its operation. */
export interface StartedVdiWork {
  vdiId: string;
  operationId: string;
}

/**
 * What whole-VM snapshots need from the VDI side: its own snapshot, clone and revert operations (each
 * idempotent by requestId within the tenant), waiting for them, and destroying what a failure leaves.
 */
export interface VmSnapshotVdis {
  snapshot(req: {
    vdiId: string;
    name: string;
    tenantId: string;
    requestId: string;
  }): Promise<StartedVdiWork>;
  clone(req: { vdiId: string; name: string; tenantId: string; requestId: string }): Promise<StartedVdiWork>;
  revert(req: {
    vdiId: string;
    snapshotId: string;
    tenantId: string;
    requestId: string;
  }): Promise<StartedVdiWork>;
  /** Resolves when the operation SUCCEEDED; rejects with its error otherwise. */
  wait(work: StartedVdiWork): Promise<void>;
  /** Whether the operation SUCCEEDED (false while it runs or after it failed). */
  succeeded(operationId: string): Promise<boolean>;
  destroy(vdiId: string): Promise<void>;
}

const waitTimeoutMs = 30 * 60_000;

/** The VDI side's API (VdiService) acting for the VM's tenant, as root disks use it. */
export class VdiServiceSnapshots implements VmSnapshotVdis {
  constructor(
    private readonly vdis: VdiService,
    private readonly store: VdiStore,
    private readonly operations: OperationService,
    private readonly rootDisks: RootDiskVdis,
  ) {}

  async snapshot(req: Parameters<VmSnapshotVdis['snapshot']>[0]): Promise<StartedVdiWork> {
    const { vdi, operation } = await this.vdis.snapshot(serviceCaller(req.tenantId), {
      id: req.vdiId,
      requestId: req.requestId,
      name: req.name,
      labels: {},
    });
    return { vdiId: vdi.id, operationId: operation.id };
  }

  async clone(req: Parameters<VmSnapshotVdis['clone']>[0]): Promise<StartedVdiWork> {
    const { vdi, operation } = await this.vdis.clone(serviceCaller(req.tenantId), {
      id: req.vdiId,
      requestId: req.requestId,
      name: req.name,
      labels: {},
      sharable: false,
    });
    return { vdiId: vdi.id, operationId: operation.id };
  }

  async revert(req: Parameters<VmSnapshotVdis['revert']>[0]): Promise<StartedVdiWork> {
    const op = await this.vdis.revert(serviceCaller(req.tenantId), {
      id: req.vdiId,
      snapshotId: req.snapshotId,
      requestId: req.requestId,
      etag: '',
    });
    return { vdiId: req.vdiId, operationId: op.id };
  }

  async wait(work: StartedVdiWork): Promise<void> {
    await this.store.waitReady(work.operationId, work.vdiId, waitTimeoutMs);
  }

  async succeeded(operationId: string): Promise<boolean> {
    const op = await this.operations.get(serviceCaller(''), operationId).catch(() => undefined);
    return op?.state === 'SUCCEEDED';
  }

  destroy(vdiId: string): Promise<void> {
    return this.rootDisks.destroy(vdiId);
  }
}

/**
 * Whole-VM snapshots on the storage side (VmDiskService SnapshotVmDisks, CloneVmDisks, RevertVmDisks):
 * storage keeps the VBD and VDI records, compute keeps the VM records and the pause around a live set.
 * Every step is keyed by the VM ids (request ids of the VDI operations and VBDs), so a call repeated after
 * a crash finds what the first one made; a failure undoes everything the call made.
 */
export class VmDiskSnapshots {
  constructor(
    private readonly store: TransactionalStore,
    private readonly vdis: VmSnapshotVdis,
    private readonly logger: Logger,
  ) {}

  /**
   * Snapshots every writable disk of the VM (all requested before any is awaited, so that the agent works
   * through them back to back while compute holds the VM paused) and gives the snapshot VM a VBD to each.
   */
  async snapshotVmDisks(req: storageV1.SnapshotVmDisksRequest): Promise<storageV1.VmDisk[]> {
    const vmId = validateId('vm_id', req.vmId, 'VM');
    const snapshotVmId = validateId('snapshot_vm_id', req.snapshotVmId, 'VM');
    const label = req.snapshotName || `snapshot ${snapshotVmId}`;
    const vbds = await this.vbdsOf(vmId);
    const started: StartedVdiWork[] = [];
    try {
      for (const vbd of vbds) {
        const vdi = vbd.vdiId ? await this.store.manager.findOneBy(VdiRow, { id: vbd.vdiId }) : null;
        // CD-ROMs and read-only disks (image bases, snapshots, shared data) are referred to, not copied.
        if (vbd.type !== 'DISK' || !vdi || vdi.readOnly) {
          await this.addVbd(snapshotVmId, vbd, {
            vdiId: vbd.vdiId,
            mode: 'RO',
            owns: false,
            key: 'vm-snapshot',
          });
          continue;
        }
        const work = await this.vdis.snapshot({
          vdiId: vdi.id,
          name: `${label}: ${vdi.name}`.slice(0, 255),
          tenantId: vbd.tenantId,
          requestId: `vm-snapshot:${snapshotVmId}:${vbd.id}`,
        });
        started.push(work);
        await this.addVbd(snapshotVmId, vbd, {
          vdiId: work.vdiId,
          mode: 'RO',
          owns: true,
          key: 'vm-snapshot',
        });
      }
      await this.all(started);
    } catch (e) {
      await this.undo(snapshotVmId, started, e, 'snapshot');
    }
    return this.disksOf(snapshotVmId);
  }

  /** Gives the new VM a linked clone of each disk snapshot of the VM snapshot, at the same positions. */
  async cloneVmDisks(req: storageV1.CloneVmDisksRequest): Promise<storageV1.VmDisk[]> {
    const snapshotVmId = validateId('snapshot_vm_id', req.snapshotVmId, 'VM');
    const vmId = validateId('vm_id', req.vmId, 'VM');
    const vbds = await this.vbdsOf(snapshotVmId);
    const started: StartedVdiWork[] = [];
    try {
      for (const vbd of vbds) {
        if (!vbd.ownsVdi || !vbd.vdiId) {
          await this.addVbd(vmId, vbd, { vdiId: vbd.vdiId, mode: vbd.mode, owns: false, key: 'vm-clone' });
          continue;
        }
        const source = await this.store.manager.findOneBy(VdiRow, { id: vbd.vdiId });
        const work = await this.vdis.clone({
          vdiId: vbd.vdiId,
          name: `${req.vmName || vmId} ${vbd.name || `disk ${vbd.devicePosition}`}`.slice(0, 255),
          tenantId: vbd.tenantId,
          requestId: `vm-clone:${vmId}:${vbd.id}`,
        });
        started.push(work);
        await this.addVbd(vmId, vbd, {
          vdiId: work.vdiId,
          mode: 'RW',
          owns: true,
          key: 'vm-clone',
          exclusiveWriter: !source?.sharable,
        });
      }
      await this.all(started);
    } catch (e) {
      await this.undo(vmId, started, e, 'clone');
    }
    return this.disksOf(vmId);
  }

  /**
   * Reverts each disk of the VM that the VM snapshot holds a snapshot of. Every pair is checked before
   * any disk changes, so a refused revert changes nothing.
   */
  async revertVmDisks(req: storageV1.RevertVmDisksRequest): Promise<void> {
    const vmId = validateId('vm_id', req.vmId, 'VM');
    const snapshotVmId = validateId('snapshot_vm_id', req.snapshotVmId, 'VM');
    if (!req.requestId) throw invalidArgument('request_id', "is required: the revert operation's id");
    const m = this.store.manager;
    const mine = await this.vbdsOf(vmId);
    const pairs: Array<{ vdiId: string; snapshotId: string; tenantId: string }> = [];
    for (const vbd of await this.vbdsOf(snapshotVmId)) {
      if (!vbd.ownsVdi || !vbd.vdiId) continue;
      const snap = await m.findOneBy(VdiRow, { id: vbd.vdiId });
      if (!snap?.isSnapshot)
        throw invalidArgument('snapshot_vm_id', `vm ${snapshotVmId} is not a snapshot of vm ${vmId}`);
      const target = snap.snapshotOf ? mine.find((b) => b.vdiId === snap.snapshotOf) : undefined;
      if (!target)
        throw failedPrecondition(
          `the disk at position ${vbd.devicePosition} of snapshot ${snapshotVmId} was taken of ${snap.snapshotOf ? `vdi ${snap.snapshotOf}, which is no longer attached to vm ${vmId}` : 'a VDI that has been destroyed'}: clone the snapshot into a new VM instead`,
          { resource: `vdi ${snap.id}` },
        );
      pairs.push({ vdiId: target.vdiId ?? '', snapshotId: snap.id, tenantId: target.tenantId });
    }
    const started: StartedVdiWork[] = [];
    for (const p of pairs)
      started.push(await this.vdis.revert({ ...p, requestId: `vm-revert:${req.requestId}:${p.vdiId}` }));
    await this.all(started);
  }

  /** Waits for every operation (none is left running), then throws the first failure. */
  private async all(started: StartedVdiWork[]): Promise<void> {
    const results = await Promise.allSettled(started.map((w) => this.vdis.wait(w)));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  }

  /**
   * A snapshot or clone that failed: the VDIs it made are destroyed (those whose operation failed are
   * rolled back by the chain keeper already) and the VM's VBDs removed; then the first error is thrown.
   */
  private async undo(vmId: string, started: StartedVdiWork[], cause: unknown, what: string): Promise<never> {
    const error = isDomainError(cause)
      ? cause
      : new DomainError(ErrorCode.Internal, `${what} of the disks failed: ${String(cause)}`);
    this.logger.info(
      { vmId, code: error.code, reason: error.message },
      `undoing a failed ${what} of a VM's disks`,
    );
    // Nothing may still run: an operation that goes on would make a VDI after the undo.
    await Promise.allSettled(started.map((w) => this.vdis.wait(w)));
    for (const work of started)
      if (await this.vdis.succeeded(work.operationId)) await this.vdis.destroy(work.vdiId);
    await this.store.tx(async (m, emit) => {
      const rows = await m.find(VbdRow, { where: { vmId }, lock: { mode: 'pessimistic_write' } });
      if (!rows.length) return;
      await m.delete(VbdRow, { id: In(rows.map((v) => v.id)) });
      for (const v of rows) emit(vbdEvent('DELETED', v));
    });
    throw error;
  }

  private vbdsOf(vmId: string): Promise<VbdRow[]> {
    return this.store.manager.find(VbdRow, { where: { vmId }, order: { devicePosition: 'ASC' } });
  }

  private async disksOf(vmId: string): Promise<storageV1.VmDisk[]> {
    const disks: storageV1.VmDisk[] = [];
    for (const vbd of await this.vbdsOf(vmId))
      if (vbd.vdiId) disks.push(vmDisk(vbd, await diskSource(this.store.manager, vbd)));
    return disks;
  }

  /** The VBD of `vmId` at `like`'s position, made once (keyed by the VM and the position). */
  private async addVbd(
    vmId: string,
    like: VbdRow,
    o: { vdiId: string | null; mode: VbdRow['mode']; owns: boolean; key: string; exclusiveWriter?: boolean },
  ): Promise<void> {
    const now = new Date();
    const row: NewVbd = {
      id: randomUUID(),
      name: like.name,
      tenantId: like.tenantId,
      labels: like.labels,
      vmId,
      vdiId: o.vdiId,
      devicePosition: like.devicePosition,
      type: like.type,
      mode: o.mode,
      bootable: like.bootable,
      unpluggable: like.unpluggable,
      state: 'DETACHED',
      device: '',
      hotPlugged: false,
      hostId: null,
      currentOperationId: null,
      exclusiveWriter: o.exclusiveWriter ?? false,
      ownsVdi: o.owns,
      requestTenantId: like.tenantId,
      requestId: `${o.key}:${vmId}:${like.devicePosition}`,
      version: 1,
      createdAt: now,
      updatedAt: now,
    };
    const made = await this.store.tx(async (m, emit) => {
      if (!(await insertVbdIfAbsent(m, row))) return false;
      emit(vbdEvent('CREATED', row));
      return true;
    });
    if (made) return;
    const earlier = await this.store.manager.findOneBy(VbdRow, {
      requestTenantId: row.requestTenantId,
      requestId: row.requestId ?? '',
    });
    if (!earlier || earlier.vdiId !== o.vdiId)
      throw failedPrecondition(
        `vm ${vmId} already has a VBD at position ${like.devicePosition}: it was not made by this ${o.key.slice(3)}`,
        { resource: `vm ${vmId}` },
      );
  }
}
