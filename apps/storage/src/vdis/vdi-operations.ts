import { EntityManager, In } from 'typeorm';
import { storageV1 } from '@flotilla/contracts';
import { DomainError, ErrorCode, expectPresent, isTerminal } from '@flotilla/domain';
import { Emit, Logger, OperationRow, TransactionalStore } from '@flotilla/platform';
import { ImageRow, SrRow, VdiRow } from '../persistence/entities';
import { imageEvent } from '../images/image.service';
import { PoolHost, StorageAgents } from '../srs/agents';
import {
  asDomainError,
  OperationSteps,
  OperationSuperseded,
  RetryLater,
  StorageRunner,
} from '../srs/operation-runner';
import { SrHosts } from '../srs/sr-space';
import { liveWriter, VbdHook } from './vbd-hook';
import { vdiEvent } from './vdi.mapper';
import { newVdiRow, VdiService } from './vdi.service';

const progressEveryMs = 500;

/** Where a file lives, as the agent contract names it. */
export const diskAt = (sr: Pick<SrRow, 'id' | 'path'>, file: string): storageV1.DiskLocation => ({
  srId: sr.id,
  srPath: sr.path,
  file,
});

/**
 * Carries out VDI operations against the host agents. Each handler re-reads the records, repeats agent
 * calls that may have been made already (the agent treats a file that exists as asked as success), and
 * applies the outcome to the records in the transaction that finishes the operation. A failure before the
 * finishing transaction leaves the old records; the rollback (ChainKeeper) deletes what the operation made.
 */
export class VdiOperations {
  constructor(
    private readonly store: TransactionalStore,
    private readonly steps: OperationSteps,
    private readonly vdis: VdiService,
    private readonly agents: StorageAgents,
    private readonly srHosts: SrHosts,
    private readonly vbds: () => VbdHook,
    private readonly logger: Logger,
    private readonly afterChange: (op: OperationRow) => void,
  ) {}

  register(runner: StorageRunner): void {
    const handlers: Record<string, (op: OperationRow, signal: AbortSignal) => Promise<void>> = {
      'vdi.create': (op, s) => this.create(op, s),
      'vdi.resize': (op) => this.resize(op),
      'vdi.destroy': (op) => this.destroy(op),
      'vdi.snapshot': (op) => this.snapshot(op),
      'vdi.clone': (op) => this.clone(op),
      'vdi.copy': (op, s) => this.copy(op, s),
      'vdi.revert': (op) => this.revert(op),
      'vdi.coalesce': (op) => this.coalesce(op),
      'image.register': (op, s) => this.registerImage(op, s),
    };
    for (const [kind, handler] of Object.entries(handlers))
      runner.register(kind, (op, signal) => this.run(op, signal, handler));
  }

  private async run(
    queued: OperationRow,
    signal: AbortSignal,
    handler: (op: OperationRow, signal: AbortSignal) => Promise<void>,
  ): Promise<void> {
    const log = this.logger.child({ operationId: queued.id, kind: queued.kind, vdiId: queued.targetId });
    let op = await this.steps.fresh(queued.id);
    if (isTerminal(op.state)) return this.afterChange(op);
    try {
      if (op.state === 'PENDING') op = await this.steps.step(op, { state: 'RUNNING', step: 'running' });
      await handler(op, signal);
      this.afterChange(op);
    } catch (e) {
      if (signal.aborted) return;
      if (e instanceof OperationSuperseded) {
        log.info('operation was cancelled');
        return this.afterChange(op);
      }
      const error = asDomainError(e);
      const fresh = await this.steps.fresh(op.id);
      // Past the point of no return, an unreachable host is waited for: the work must complete.
      if (fresh.pointOfNoReturn && error.code === ErrorCode.Unavailable) throw new RetryLater(error);
      if (error.code === ErrorCode.Internal) log.error({ err: e }, 'VDI operation failed unexpectedly');
      else log.info({ code: error.code, reason: error.message }, 'VDI operation failed');
      await this.steps.fail(op.id, error);
      this.afterChange(op);
    }
  }

  // ---- create -------------------------------------------------------------------------------------------

  private async create(op: OperationRow, signal: AbortSignal): Promise<void> {
    const vdi = await this.vdi(op.targetId);
    const sr = await this.sr(vdi.srId);
    let base: VdiRow | null = null;
    if (typeof op.params.baseId === 'string') {
      base = await this.waitForBase(op, op.params.baseId, signal);
    }
    const host = await this.srHosts.hostFor(sr, sr.hostId);
    op = await this.steps.step(op, {
      step: `creating ${vdi.file} on host ${host.name}`,
      progress: Math.max(op.progress, 0.9),
    });
    const { info } = await this.agents.call(host, (a) =>
      a.createDisk({
        disk: diskAt(sr, vdi.file),
        virtualSizeBytes: vdi.virtualSizeBytes,
        backingFile: base?.file ?? '',
      }),
    );
    await this.steps.succeed(op, { vdi_id: vdi.id }, async (m, emit) => {
      await this.ready(m, emit, vdi.id, { physicalUtilisationBytes: info?.physicalBytes ?? 0 });
    });
  }

  /** The image base in the VDI's SR: copied by this operation, or by another one that is copying it now. */
  private async waitForBase(op: OperationRow, baseId: string, signal: AbortSignal): Promise<VdiRow> {
    for (;;) {
      const base = await this.store.manager.findOneBy(VdiRow, { id: baseId });
      if (!base)
        throw new DomainError(
          ErrorCode.FailedPrecondition,
          'the copy of the image base into this SR failed: retry the create',
        );
      if (base.state === 'READY') return base;
      if (base.currentOperationId === op.id) return this.copyBase(op, base, signal);
      const owner = base.currentOperationId
        ? await this.store.manager.findOneBy(OperationRow, { id: base.currentOperationId })
        : null;
      if (!owner || isTerminal(owner.state))
        throw new DomainError(
          ErrorCode.FailedPrecondition,
          'the copy of the image base into this SR failed: retry the create',
        );
      await new Promise((r) => setTimeout(r, 300));
      if (signal.aborted) throw new OperationSuperseded();
    }
  }

  private async copyBase(op: OperationRow, base: VdiRow, signal: AbortSignal): Promise<VdiRow> {
    const source = await this.vdi(String(op.params.baseSourceId));
    const info = await this.copyFile(op, source, base, signal, 0.85);
    return this.store.tx(async (m, emit) => {
      await this.steps.freshIn(m, op);
      return this.ready(m, emit, base.id, { physicalUtilisationBytes: info.physicalBytes });
    });
  }

  // ---- copy ---------------------------------------------------------------------------------------------

  private async copy(op: OperationRow, signal: AbortSignal): Promise<void> {
    const target = await this.vdi(op.targetId);
    const source = await this.vdi(String(op.params.sourceId));
    const info = await this.copyFile(op, source, target, signal, 1);
    await this.steps.succeed(op, { vdi_id: target.id }, async (m, emit) => {
      await this.ready(m, emit, target.id, { physicalUtilisationBytes: info.physicalBytes });
      await this.release(m, emit, op, [source.id]);
    });
  }

  /**
   * A flattened copy of `source`'s chain as `target`'s file, on a host that sees both SRs (qemu-img
   * convert with progress), or streamed from the source's host to the target's (export, then import).
   */
  private async copyFile(
    op: OperationRow,
    source: VdiRow,
    target: VdiRow,
    signal: AbortSignal,
    share: number,
  ): Promise<storageV1.DiskInfo> {
    const [from, to] = [await this.sr(source.srId), await this.sr(target.srId)];
    const host = await this.srHosts.hostForBoth(from, to);
    let last = 0;
    const progress = async (fraction: number) => {
      if (Date.now() - last < progressEveryMs) return;
      last = Date.now();
      op = await this.steps.step(op, { progress: Math.min(0.99, fraction * share) });
    };
    if (host) {
      op = await this.steps.step(op, { step: `copying on host ${host.name}` });
      return this.agents.copyDisk(
        host,
        {
          sourceDisk: diskAt(from, source.file),
          sourceFormat: storageV1.DiskFormat.DISK_FORMAT_QCOW2,
          target: diskAt(to, target.file),
          targetFormat: storageV1.DiskFormat.DISK_FORMAT_QCOW2,
          targetBackingFile: '',
        },
        { onFraction: progress },
        signal,
      );
    }
    const [sourceHost, targetHost] = [
      await this.srHosts.hostFor(from, from.hostId),
      await this.srHosts.hostFor(to, to.hostId),
    ];
    op = await this.steps.step(op, {
      step: `streaming from host ${sourceHost.name} to host ${targetHost.name}`,
    });
    return this.relay(sourceHost, targetHost, from, to, source, target, progress, signal);
  }

  /** Cross-host copy: the source agent exports a flattened qcow2, the target agent imports it. */
  private async relay(
    sourceHost: PoolHost,
    targetHost: PoolHost,
    from: SrRow,
    to: SrRow,
    source: VdiRow,
    target: VdiRow,
    progress: (fraction: number) => Promise<void>,
    signal: AbortSignal,
  ): Promise<storageV1.DiskInfo> {
    const exported = this.agents.exportDisk(
      sourceHost,
      {
        disk: diskAt(from, source.file),
        format: storageV1.DiskFormat.DISK_FORMAT_QCOW2,
        compress: false,
        stagingFile: `${target.id}.export`,
      },
      signal,
    );
    const { stream, done } = this.agents.importDisk(targetHost);
    done.catch(() => undefined);
    signal.addEventListener('abort', () => stream.cancel(), { once: true });
    let size = 0;
    let sent = 0;
    try {
      for await (const msg of exported) {
        if (msg.stagingProgress !== undefined) await progress(msg.stagingProgress * 0.3);
        else if (msg.header) {
          size = msg.header.sizeBytes;
          stream.write({
            header: {
              target: diskAt(to, target.file),
              format: storageV1.DiskFormat.DISK_FORMAT_QCOW2,
              sizeBytes: size,
              sha256: '',
            },
          });
        } else if (msg.chunk) {
          sent += msg.chunk.length;
          if (!stream.write({ chunk: msg.chunk })) await new Promise((r) => stream.once('drain', r));
          await progress(0.3 + (0.7 * sent) / Math.max(1, size));
        }
      }
      stream.end();
      const res = await done;
      return expectPresent(
        res.info,
        `the agent of host ${targetHost.name} answered ImportDisk without the disk's info`,
      );
    } catch (e) {
      stream.cancel();
      throw asDomainError(e);
    }
  }

  // ---- image.register (DISK from a VDI) ----------------------------------------------------------------

  private async registerImage(op: OperationRow, signal: AbortSignal): Promise<void> {
    const base = await this.vdi(String(op.params.baseId));
    const source = await this.vdi(String(op.params.sourceId));
    const info = await this.copyFile(op, source, base, signal, 1);
    await this.steps.succeed(op, { image_id: op.targetId, vdi_id: base.id }, async (m, emit) => {
      await this.ready(m, emit, base.id, { physicalUtilisationBytes: info.physicalBytes });
      await this.release(m, emit, op, [source.id]);
      const image = await m.findOneByOrFail(ImageRow, { id: op.targetId });
      await m.update(
        ImageRow,
        { id: image.id },
        {
          state: 'AVAILABLE',
          stateReason: '',
          sizeBytes: info.physicalBytes,
          virtualSizeBytes: info.virtualSizeBytes || image.virtualSizeBytes,
          version: image.version + 1,
        },
      );
      emit(imageEvent('UPDATED', await m.findOneByOrFail(ImageRow, { id: image.id })));
    });
  }

  // ---- resize -------------------------------------------------------------------------------------------

  private async resize(op: OperationRow): Promise<void> {
    const vdi = await this.vdi(op.targetId);
    const sr = await this.sr(vdi.srId);
    const writer = liveWriter(await this.vbds().vbdsOf(this.store.manager, [vdi.id]));
    const host = await this.srHosts.hostFor(sr, writer?.hostId ?? sr.hostId);
    const { info } = await this.agents.call(host, (a) =>
      a.resizeDisk({
        disk: diskAt(sr, vdi.file),
        virtualSizeBytes: Number(op.params.newSize),
        vmId: writer?.vmId ?? '',
      }),
    );
    await this.steps.succeed(op, { vdi_id: vdi.id }, async (m, emit) => {
      const row = await m.findOneByOrFail(VdiRow, { id: vdi.id });
      await this.vdis.update(m, emit, row, {
        physicalUtilisationBytes: info?.physicalBytes ?? row.physicalUtilisationBytes,
        currentOperationId: null,
      });
    });
  }

  // ---- destroy ------------------------------------------------------------------------------------------

  /**
   * The record goes (the point of no return): the VDI becomes a hidden node, deleted by the chain keeper
   * when nothing is backed by it, or coalesced into its one child.
   */
  private async destroy(op: OperationRow): Promise<void> {
    const vdi = await this.store.manager.findOneBy(VdiRow, { id: op.targetId });
    if (!vdi) return void (await this.steps.succeed(op, { vdi_id: op.targetId }));
    await this.steps.succeed(op, { vdi_id: vdi.id }, async (m, emit) => {
      const vbds = await this.vbds().vbdsOf(m, [vdi.id]);
      const attached = vbds.find((b) => b.state !== 'DETACHED');
      if (attached)
        throw new DomainError(
          ErrorCode.FailedPrecondition,
          `vdi ${vdi.id} was attached to vm ${attached.vmId} meanwhile: unplug it first`,
        );
      await this.vbds().removeVbdsOf(m, emit, [vdi.id]);
      const row = await m.findOneByOrFail(VdiRow, { id: vdi.id });
      const hasChildren = (await m.countBy(VdiRow, { parentId: vdi.id })) > 0;
      await m.update(VdiRow, { snapshotOf: vdi.id }, { snapshotOf: null });
      if (row.state === 'MISSING' && !hasChildren) {
        await m.delete(VdiRow, { id: vdi.id });
        emit(vdiEvent('DELETED', row));
        return;
      }
      await this.vdis.update(m, emit, row, {
        managed: false,
        readOnly: true,
        currentOperationId: null,
        imageBase: false,
        sharable: false,
      });
      emit(vdiEvent('DELETED', row));
    });
  }

  // ---- snapshot, clone, revert ------------------------------------------------------------------------

  private async snapshot(op: OperationRow): Promise<void> {
    const source = await this.vdi(String(op.params.sourceId));
    const snapshotId = String(op.params.snapshotId);
    const newTop = String(op.params.newTopFile);
    const sr = await this.sr(source.srId);
    const writer = liveWriter(await this.vbds().vbdsOf(this.store.manager, [source.id]));
    const host = await this.srHosts.hostFor(sr, writer?.hostId ?? sr.hostId);
    if (!op.pointOfNoReturn)
      op = await this.steps.step(op, {
        step: `snapshotting on host ${host.name}`,
        progress: 0.3,
        pointOfNoReturn: true,
      });
    const res = await this.agents.call(host, (a) =>
      a.snapshotDisk({ disk: diskAt(sr, source.file), newTopFile: newTop, vmId: writer?.vmId ?? '' }),
    );
    await this.steps.succeed(op, { vdi_id: snapshotId }, async (m, emit) => {
      const cur = await m.findOneByOrFail(VdiRow, { id: source.id });
      // The VDI moves to its new top first: one record per file at every moment.
      await this.vdis.update(m, emit, cur, {
        file: newTop,
        parentId: snapshotId,
        physicalUtilisationBytes: res.newTop?.physicalBytes ?? 0,
        currentOperationId: null,
      });
      await this.ready(m, emit, snapshotId, {
        file: cur.file,
        parentId: cur.parentId,
        physicalUtilisationBytes: res.frozen?.physicalBytes ?? cur.physicalUtilisationBytes,
      });
    });
  }

  private async clone(op: OperationRow): Promise<void> {
    const source = await this.vdi(String(op.params.sourceId));
    const clone = await this.vdi(String(op.params.cloneId));
    const sr = await this.sr(source.srId);
    const host = await this.srHosts.hostFor(sr, sr.hostId);
    const hiddenId = typeof op.params.hiddenId === 'string' ? op.params.hiddenId : undefined;
    const sourceNewFile = String(op.params.sourceNewFile ?? '');
    let frozen: storageV1.DiskInfo | undefined;
    let top: storageV1.DiskInfo | undefined;
    if (hiddenId) {
      ({ frozen, newTop: top } = await this.agents.call(host, (a) =>
        a.snapshotDisk({ disk: diskAt(sr, source.file), newTopFile: sourceNewFile, vmId: '' }),
      ));
    }
    const { info } = await this.agents.call(host, (a) =>
      a.createDisk({
        disk: diskAt(sr, clone.file),
        virtualSizeBytes: source.virtualSizeBytes,
        backingFile: source.file,
      }),
    );
    await this.steps.succeed(op, { vdi_id: clone.id }, async (m, emit) => {
      const cur = await m.findOneByOrFail(VdiRow, { id: source.id });
      if (hiddenId) {
        await this.vdis.update(m, emit, cur, {
          file: sourceNewFile,
          parentId: hiddenId,
          physicalUtilisationBytes: top?.physicalBytes ?? 0,
          currentOperationId: null,
        });
        await this.ready(m, emit, hiddenId, {
          file: cur.file,
          parentId: cur.parentId,
          physicalUtilisationBytes: frozen?.physicalBytes ?? cur.physicalUtilisationBytes,
        });
      } else await this.release(m, emit, op, [source.id]);
      await this.ready(m, emit, clone.id, { physicalUtilisationBytes: info?.physicalBytes ?? 0 });
    });
  }

  private async revert(op: OperationRow): Promise<void> {
    const vdi = await this.vdi(op.targetId);
    const snap = await this.vdi(String(op.params.snapshotId));
    const sr = await this.sr(vdi.srId);
    const host = await this.srHosts.hostFor(sr, sr.hostId);
    const newTop = String(op.params.newTopFile);
    const { info } = await this.agents.call(host, (a) =>
      a.createDisk({
        disk: diskAt(sr, newTop),
        virtualSizeBytes: snap.virtualSizeBytes,
        backingFile: snap.file,
      }),
    );
    // The swap is the point of no return: the old top becomes a hidden node the chain keeper deletes.
    await this.steps.succeed(op, { vdi_id: vdi.id }, async (m, emit) => {
      const cur = await m.findOneByOrFail(VdiRow, { id: vdi.id });
      if (cur.file !== newTop) {
        const old = newVdiRow({
          name: `reverted top of ${cur.name}`,
          tenantId: cur.tenantId,
          srId: cur.srId,
          state: 'READY',
          file: cur.file,
          parentId: cur.parentId,
          virtualSizeBytes: cur.virtualSizeBytes,
          physicalUtilisationBytes: cur.physicalUtilisationBytes,
          readOnly: true,
          managed: false,
        });
        await this.vdis.update(m, emit, cur, {
          file: newTop,
          parentId: snap.id,
          virtualSizeBytes: snap.virtualSizeBytes,
          physicalUtilisationBytes: info?.physicalBytes ?? 0,
          currentOperationId: null,
        });
        await m.insert(VdiRow, old);
      }
    });
  }

  // ---- coalesce -----------------------------------------------------------------------------------------

  /**
   * Merges hidden node `nodeId` into its one child: the child is rebased onto the node's parent (through
   * the running VM's QEMU when one writes the child), then points at it; the node, now childless, is
   * deleted by the chain keeper's next pass.
   */
  private async coalesce(op: OperationRow): Promise<void> {
    const node = await this.vdi(op.targetId);
    const child = await this.vdi(String(op.params.childId));
    const newParentId = typeof op.params.newParentId === 'string' ? op.params.newParentId : null;
    const newParent = newParentId ? await this.vdi(newParentId) : null;
    const sr = await this.sr(node.srId);
    const writer = liveWriter(await this.vbds().vbdsOf(this.store.manager, [child.id]));
    const host = await this.srHosts.hostFor(sr, writer?.hostId ?? sr.hostId);
    if (!op.pointOfNoReturn)
      op = await this.steps.step(op, {
        step: `coalescing ${node.file} into ${child.file} on host ${host.name}`,
        pointOfNoReturn: true,
      });
    const { info } = await this.agents.call(host, (a) =>
      a.rebaseDisk({
        disk: diskAt(sr, child.file),
        newBackingFile: newParent?.file ?? '',
        vmId: writer?.vmId ?? '',
      }),
    );
    await this.steps.succeed(op, { vdi_id: child.id }, async (m, emit) => {
      const cur = await m.findOneByOrFail(VdiRow, { id: child.id });
      await this.vdis.update(m, emit, cur, {
        parentId: newParentId,
        physicalUtilisationBytes: info?.physicalBytes ?? cur.physicalUtilisationBytes,
        currentOperationId: cur.currentOperationId === op.id ? null : cur.currentOperationId,
      });
      await this.release(m, emit, op, [node.id]);
    });
  }

  // ---- helpers ------------------------------------------------------------------------------------------

  private async ready(m: EntityManager, emit: Emit, id: string, changes: Partial<VdiRow>): Promise<VdiRow> {
    const row = await m.findOneByOrFail(VdiRow, { id });
    return this.vdis.update(m, emit, row, {
      ...changes,
      state: 'READY',
      stateReason: '',
      reservedPhysicalBytes: 0,
      currentOperationId: null,
    });
  }

  private async release(m: EntityManager, emit: Emit, op: OperationRow, ids: string[]): Promise<void> {
    for (const row of await m.findBy(VdiRow, { id: In(ids) }))
      if (row.currentOperationId === op.id)
        await this.vdis.update(m, emit, row, { currentOperationId: null });
  }

  private async vdi(id: string): Promise<VdiRow> {
    const row = await this.store.manager.findOneBy(VdiRow, { id });
    if (!row) throw new DomainError(ErrorCode.NotFound, `vdi ${id} no longer exists`);
    return row;
  }

  private async sr(id: string): Promise<SrRow> {
    const row = await this.store.manager.findOneBy(SrRow, { id });
    if (!row) throw new DomainError(ErrorCode.NotFound, `sr ${id} no longer exists`);
    return row;
  }
}
