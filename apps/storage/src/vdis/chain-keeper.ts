import { EntityManager, In } from 'typeorm';
import { ChainNode, isTerminal, planChainRepairs } from '@flotilla/domain';
import { Emit, Logger, OperationRow, OperationService, TransactionalStore } from '@flotilla/platform';
import { ImageRow, SrRow, VdiRow } from '../persistence/entities';
import { StorageAgents } from '../srs/agents';
import { asDomainError, StorageRunner } from '../srs/operation-runner';
import { SrHosts } from '../srs/sr-space';
import { noVbds, VbdHook } from './vbd-hook';
import { vdiEvent } from './vdi.mapper';
import { imageEvent } from '../images/image.service';
import { diskAt } from './vdi-operations';

const passEveryMs = 10_000;

/**
 * The SRs' reconciler. It (1) rolls back failed and cancelled VDI operations — deletes the files and
 * CREATING records they made, gives back reserved sizes and frees their VDIs — and (2) repairs chains:
 * deletes hidden nodes nothing is backed by and starts a vdi.coalesce for hidden nodes with one child.
 * Everything it does is derived from the records and idempotent, so it runs at start, after changes and
 * periodically, and a crash at any point is repaired by the next pass.
 */
export class ChainKeeper {
  private timer?: NodeJS.Timeout;
  private soon?: NodeJS.Timeout;
  private running?: Promise<void>;
  private again = false;
  private stopped = false;

  constructor(
    private readonly store: TransactionalStore,
    private readonly operations: OperationService,
    private readonly runner: StorageRunner,
    private readonly agents: StorageAgents,
    private readonly srHosts: SrHosts,
    private readonly logger: Logger,
    private readonly vbds: () => VbdHook = () => noVbds,
  ) {}

  start(): void {
    this.kick();
    this.timer = setInterval(() => this.kick(), passEveryMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    clearTimeout(this.soon);
    await this.running;
  }

  /** Runs a pass soon (debounced); a pass asked while one runs runs again after it. */
  kick(delayMs = 50): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    clearTimeout(this.soon);
    this.soon = setTimeout(() => {
      this.running = this.pass()
        .catch((e) => this.logger.warn({ err: e }, 'chain keeper pass failed; the next one retries'))
        .finally(() => {
          this.running = undefined;
          if (this.again) {
            this.again = false;
            this.kick();
          }
        });
    }, delayMs);
  }

  /** One pass over every SR; exposed for tests. */
  async pass(): Promise<void> {
    await this.rollBackEnded();
    const srs = await this.store.manager.find(SrRow);
    const liveImages = new Set(
      (await this.store.manager.find(ImageRow, { select: { id: true } })).map((i) => i.id),
    );
    for (const sr of srs) {
      if (sr.state !== 'AVAILABLE' && sr.state !== 'DEGRADED') continue;
      if (sr.currentOperationKind === 'sr.destroy') continue;
      await this.repair(sr, liveImages).catch((e) =>
        this.logger.info({ srId: sr.id, reason: asDomainError(e).message }, 'chain repair deferred'),
      );
    }
  }

  private async repair(sr: SrRow, liveImages: Set<string>): Promise<void> {
    const rows = await this.store.manager.findBy(VdiRow, { srId: sr.id });
    const nodes: ChainNode[] = rows.map((r) => ({
      id: r.id,
      parentId: r.parentId,
      file: r.file,
      managed: r.managed,
      readOnly: r.readOnly,
      state: r.state,
      imageId: r.imageBase ? r.imageId : null,
      currentOperationId: r.currentOperationId,
    }));
    const repairs = planChainRepairs(nodes, liveImages);
    if (!repairs.length) return;
    const inUse = await this.chainsInUse(rows);
    const host = await this.srHosts.hostFor(sr, sr.hostId);
    for (const r of repairs) {
      if (r.kind === 'delete') {
        if (r.node.file) await this.agents.call(host, (a) => a.deleteDisk({ disk: diskAt(sr, r.node.file) }));
        await this.store.tx(async (m, emit) => {
          const row = await m.findOneBy(VdiRow, { id: r.node.id });
          if (!row || row.managed || row.currentOperationId) return;
          if ((await m.countBy(VdiRow, { parentId: row.id })) > 0) return;
          await m.delete(VdiRow, { id: row.id });
          emit(vdiEvent('DELETED', row));
        });
        continue;
      }
      // Coalescing under a running VM (block-stream in its QEMU) is deferred until the VM lets the chain go:
      // once QEMU 7.2 died when a disk was unplugged right after a live stream. Chains still do not grow
      // without bound: they are merged when the VM halts or the disk is unplugged.
      if (inUse.has(r.child.id)) continue;
      // A coalesce is an operation of its own: durable, resumable, and it claims both nodes.
      const op = await this.store.tx(async (m, emit) => {
        const [node, child] = [
          await m.findOneBy(VdiRow, { id: r.node.id }),
          await m.findOneBy(VdiRow, { id: r.child.id }),
        ];
        if (
          !node ||
          !child ||
          node.currentOperationId ||
          child.currentOperationId ||
          child.parentId !== node.id
        )
          return undefined;
        const created = await this.operations.create(m, emit, {
          kind: 'vdi.coalesce',
          target: { kind: 'vdi', id: node.id, name: node.name },
          tenantId: '',
          params: { childId: child.id, newParentId: r.newParent?.id ?? null },
        });
        await m.update(VdiRow, { id: In([node.id, child.id]) }, { currentOperationId: created.id });
        return created;
      });
      if (op) this.runner.enqueue(op);
    }
  }

  /** Rolls back every ended (FAILED, CANCELLED) VDI operation whose rollback has not run yet. */
  private async rollBackEnded(): Promise<void> {
    const ended = await this.store.manager
      .createQueryBuilder(OperationRow, 'o')
      .where("(o.kind LIKE 'vdi.%' OR o.kind = 'image.register')")
      .andWhere("o.state IN ('FAILED', 'CANCELLED')")
      .andWhere("NOT (o.params ? 'rolledBack')")
      .getMany();
    for (const op of ended) {
      if (this.runner.isRunning(op.id)) continue;
      await this.rollback(op).catch((e) =>
        this.logger.info({ operationId: op.id, reason: asDomainError(e).message }, 'rollback deferred'),
      );
    }
  }

  async rollback(op: OperationRow): Promise<void> {
    if (!isTerminal(op.state) || op.state === 'SUCCEEDED') return;
    const ids = String(op.params.rollbackVdiIds ?? '')
      .split(',')
      .filter(Boolean);
    const files = String(op.params.rollbackFiles ?? '')
      .split(',')
      .filter(Boolean);
    const made = (
      await this.store.manager.findBy(VdiRow, {
        id: In(ids.length ? ids : ['00000000-0000-0000-0000-000000000000']),
      })
    ).filter((r) => r.state === 'CREATING' && r.currentOperationId === op.id);
    const homeId = String(op.params.sourceId ?? op.targetId);
    const home = await this.store.manager.findOneBy(VdiRow, { id: homeId });
    const work: Array<{ srId: string; file: string }> = [
      ...made.filter((r) => r.file).map((r) => ({ srId: r.srId, file: r.file })),
      ...(home ? files.filter((f) => f !== home.file).map((file) => ({ srId: home.srId, file })) : []),
    ];
    for (const w of work) {
      const sr = await this.store.manager.findOneByOrFail(SrRow, { id: w.srId });
      const host = await this.srHosts.hostFor(sr, sr.hostId);
      await this.agents.call(host, (a) => a.deleteDisk({ disk: diskAt(sr, w.file) }));
    }
    await this.store.tx(async (m, emit) => {
      const fresh = await m.findOneByOrFail(OperationRow, { id: op.id });
      if (fresh.params.rolledBack) return;
      for (const r of made) {
        await m.delete(VdiRow, { id: r.id });
        emit(vdiEvent('DELETED', r));
      }
      await this.freeVdis(m, emit, op);
      if (op.kind === 'image.register') {
        const image = await m.findOneBy(ImageRow, { id: op.targetId });
        if (image && image.state === 'REGISTERING') {
          await m.delete(ImageRow, { id: image.id });
          emit(imageEvent('DELETED', image));
        }
      }
      await this.operations.advance(m, emit, fresh, { params: { ...fresh.params, rolledBack: true } });
    });
    this.logger.info({ operationId: op.id, files: work.length, records: made.length }, 'rolled back');
  }

  /** Gives the VDIs an ended operation held back their stable state (and a failed resize its size). */
  private async freeVdis(m: EntityManager, emit: Emit, op: OperationRow): Promise<void> {
    const held = await m.findBy(VdiRow, { currentOperationId: op.id });
    const target = await m.findOneBy(VdiRow, { id: op.targetId });
    if (target && op.kind === 'vdi.resize' && target.virtualSizeBytes === Number(op.params.newSize))
      await m.update(VdiRow, { id: target.id }, { virtualSizeBytes: Number(op.params.oldSize) });
    for (const r of held) {
      await m.update(VdiRow, { id: r.id }, { currentOperationId: null, version: r.version + 1 });
      emit(vdiEvent('UPDATED', { ...r, currentOperationId: null, version: r.version + 1 }));
    }
  }

  /** VDIs of the SR whose file a running VM has open: attached ones and every node below them. */
  private async chainsInUse(rows: VdiRow[]): Promise<Set<string>> {
    const attached = (
      await this.vbds().vbdsOf(
        this.store.manager,
        rows.map((r) => r.id),
      )
    )
      .filter((v) => v.state !== 'DETACHED')
      .map((v) => v.vdiId);
    const parentOf = new Map(rows.map((r) => [r.id, r.parentId]));
    const inUse = new Set<string>();
    for (let id of attached) {
      for (let hops = 0; id && !inUse.has(id) && hops < 1000; hops++) {
        inUse.add(id);
        id = parentOf.get(id) ?? '';
      }
    }
    return inUse;
  }
}
