import { randomUUID } from 'node:crypto';
import { EntityManager } from 'typeorm';
import { storageV1 } from '@flotilla/contracts';
import {
  DomainError,
  ErrorCode,
  idOfDiskFile,
  isTerminal,
  SrHostAttachment,
  srStateFromHosts,
} from '@flotilla/domain';
import { Emit, Logger, OperationRow, TransactionalStore, updateVersionedRow } from '@flotilla/platform';
import { SrRow, VdiRow } from '../persistence/entities';
import { VbdHook } from '../vdis/vbd-hook';
import { vdiEvent } from '../vdis/vdi.mapper';
import { newVdiRow } from '../vdis/vdi.service';
import { PoolHost, StorageAgents } from './agents';
import {
  asDomainError,
  OperationSteps,
  OperationSuperseded,
  RetryLater,
  StorageRunner,
} from './operation-runner';
import { srEvent } from './sr.mapper';
import { SrHosts } from './sr-space';

/** Files the agent writes for a moment that a scan must not take for disks. */
const transientFile = /\.(export|staging|part|tmp)$/;

/**
 * Carries out SR operations (create, scan, destroy) against the host agents, and keeps each SR's view of
 * its hosts, capacity and utilisation fresh. Every agent call is idempotent and every step reads what was
 * already done from the records, so a restarted service resumes where it stopped.
 */
export class SrOperations {
  /** When each SR was last looked at by refresh(), in this process (monitoring rounds pace themselves by it). */
  private readonly checkedAt = new Map<string, number>();
  private readonly startedAt = Date.now();
  private monitoring = false;

  constructor(
    private readonly store: TransactionalStore,
    private readonly steps: OperationSteps,
    private readonly agents: StorageAgents,
    private readonly srHosts: SrHosts,
    private readonly vbds: () => VbdHook,
    private readonly logger: Logger,
  ) {}

  register(runner: StorageRunner): void {
    runner.register('sr.create', (op) => this.run(op, () => this.create(op)));
    runner.register('sr.scan', (op) => this.run(op, () => this.scan(op)));
    runner.register('sr.destroy', (op) => this.run(op, () => this.destroy(op)));
  }

  private async run(queued: OperationRow, work: () => Promise<void>): Promise<void> {
    const log = this.logger.child({ operationId: queued.id, kind: queued.kind, srId: queued.targetId });
    const op = await this.steps.fresh(queued.id);
    if (isTerminal(op.state)) return;
    try {
      await work();
    } catch (e) {
      if (e instanceof OperationSuperseded) return log.info('operation was cancelled');
      if (e instanceof RetryLater) throw e;
      const error = asDomainError(e);
      log.info({ code: error.code, reason: error.message }, 'SR operation failed');
      await this.failAndRelease(op, error);
    }
  }

  private async failAndRelease(op: OperationRow, error: DomainError): Promise<void> {
    await this.steps.fail(op.id, error, async (m, emit) => {
      const sr = await m.findOneBy(SrRow, { id: op.targetId });
      if (sr && sr.currentOperationId === op.id) {
        if (op.kind === 'sr.create') {
          await m.delete(SrRow, { id: sr.id });
          emit(srEvent('DELETED', sr));
        } else await this.updateSr(m, emit, sr, { currentOperationId: null, currentOperationKind: null });
      }
      await m.update(VdiRow, { srId: op.targetId, currentOperationId: op.id }, { currentOperationId: null });
    });
  }

  // ---- sr.create ---------------------------------------------------------------------------------------

  private async create(queued: OperationRow): Promise<void> {
    let op = await this.steps.step(queued, {
      state: 'RUNNING',
      step: 'preparing the directory',
      pointOfNoReturn: true,
    });
    let sr = await this.srOf(op);
    const adopt = op.params.adoptExisting === true;
    const targets = await this.srHosts.targets(sr);
    const attachments: Array<SrHostAttachment & { hostName: string }> = [];
    let stat: { capacityBytes: number; freeBytes: number; physical: number } | undefined;
    let marked = false;
    let createdDirectory = sr.createdDirectory;
    let firstError: DomainError | undefined;
    for (const host of targets) {
      try {
        if (!marked) {
          // The first host that answers writes the marker (or finds it); the others must read it.
          const res = await this.agents.call(host, (a) =>
            a.attachSr({ srId: sr.id, srPath: sr.path, createDirectory: true, adoptExisting: adopt }),
          );
          marked = true;
          createdDirectory ||= res.createdDirectory;
          if (res.srId && res.srId !== sr.id) sr = await this.rekey(sr, res.srId);
        }
        const s = await this.agents.call(host, (a) => a.statSr({ srId: sr.id, srPath: sr.path }));
        stat ??= {
          capacityBytes: s.capacityBytes,
          freeBytes: s.freeBytes,
          physical: s.physicalUtilisationBytes,
        };
        attachments.push({ hostId: host.id, hostName: host.name, attached: true, reason: '' });
      } catch (e) {
        const err = asDomainError(e);
        // A refused path or a foreign marker is the request's fault: no other host will do better.
        if (!marked && (err.code === ErrorCode.InvalidArgument || err.code === ErrorCode.AlreadyExists))
          throw err;
        firstError ??= err;
        attachments.push({ hostId: host.id, hostName: host.name, attached: false, reason: err.message });
      }
    }
    if (!stat)
      throw firstError ?? new DomainError(ErrorCode.Unavailable, `no host could prepare SR ${sr.name}`);
    const { state, reason } = srStateFromHosts(sr.type, attachments);
    const srId = sr.id;
    op = await this.steps.succeed(op, { sr_id: srId }, async (m, emit) => {
      const row = await m.findOneByOrFail(SrRow, { id: srId });
      await this.updateSr(m, emit, row, {
        state,
        stateReason: reason,
        hosts: attachments.map(({ hostId, attached, reason: r }) => ({ hostId, attached, reason: r })),
        capacityBytes: stat.capacityBytes,
        freeBytes: stat.freeBytes,
        physicalUtilisationBytes: stat.physical,
        createdDirectory,
        currentOperationId: null,
        currentOperationKind: null,
      });
    });
    // An adopted directory brings its VDIs back.
    if (adopt)
      await this.scanFiles(await this.store.manager.findOneByOrFail(SrRow, { id: srId })).catch((e) =>
        this.logger.warn({ err: e, srId }, 'scan of an adopted SR failed; scan it again'),
      );
  }

  /** With adopt_existing the SR takes the id in the marker it found (nothing refers to it yet). */
  private async rekey(sr: SrRow, markerId: string): Promise<SrRow> {
    return this.store.tx(async (m, emit) => {
      const other = await m.findOneBy(SrRow, { id: markerId });
      if (other)
        throw new DomainError(
          ErrorCode.AlreadyExists,
          `${sr.path} holds the marker of SR ${other.name} (${markerId}), which this pool already knows: use that SR`,
          { field: 'path', resource: `sr ${markerId}` },
        );
      await m.update(SrRow, { id: sr.id }, { id: markerId, version: sr.version + 1 });
      const row = await m.findOneByOrFail(SrRow, { id: markerId });
      emit(srEvent('DELETED', sr));
      emit(srEvent('CREATED', row));
      return row;
    });
  }

  // ---- sr.scan ----------------------------------------------------------------------------------------

  private async scan(queued: OperationRow): Promise<void> {
    const op = await this.steps.step(queued, { state: 'RUNNING', step: 'scanning', progress: 0.1 });
    const sr = await this.srOf(op);
    const result = await this.scanFiles(sr, op);
    await this.steps.succeed(op, result, async (m, emit) => {
      const row = await m.findOneByOrFail(SrRow, { id: sr.id });
      await this.updateSr(m, emit, row, {
        currentOperationId: null,
        currentOperationKind: null,
        lastScannedAt: new Date(),
      });
    });
  }

  /**
   * Reconciles the SR's records with its files: refreshes space, marks MISSING/READY, introduces unknown
   * qcow2 files that are safe (no backing file, or backed by a file of this SR; the agent's inspector read
   * each one first), and reports the refused ones.
   */
  async scanFiles(sr: SrRow, op?: OperationRow): Promise<Record<string, string>> {
    await this.refresh(sr.id);
    const fresh = await this.store.manager.findOneByOrFail(SrRow, { id: sr.id });
    const host = await this.srHosts.hostFor(fresh, fresh.hostId);
    const scanned = await this.agents.call(host, (a) => a.scanSrFiles({ srId: sr.id, srPath: sr.path }));
    // A file the scan cannot name (no info, or info without a file) has nothing to reconcile.
    const files = scanned.files.flatMap(({ info, refusedReason }) =>
      info?.file ? [{ info, refusedReason }] : [],
    );
    return this.store.tx(async (m, emit) => {
      if (op) await this.steps.freshIn(m, op);
      const rows = await m.findBy(VdiRow, { srId: sr.id });
      const byFile = new Map(rows.filter((r) => r.file).map((r) => [r.file, r]));
      const present = new Map(files.map((f) => [f.info.file, f]));
      const result: Record<string, string> = {};
      let missing = 0;
      let recovered = 0;
      for (const row of rows) {
        if (!row.file || row.state === 'CREATING' || row.currentOperationId) continue;
        const found = present.get(row.file);
        if (row.state === 'READY' && !found) {
          missing++;
          await this.updateVdi(m, emit, row, {
            state: 'MISSING',
            stateReason: `file ${row.file} not found by the scan of SR ${sr.name}`,
          });
        } else if (row.state === 'MISSING' && found && !found.refusedReason) {
          recovered++;
          await this.updateVdi(m, emit, row, {
            state: 'READY',
            stateReason: '',
            physicalUtilisationBytes: found.info.physicalBytes,
          });
        } else if (
          found &&
          !found.refusedReason &&
          found.info.physicalBytes !== row.physicalUtilisationBytes
        ) {
          await this.updateVdi(m, emit, row, { physicalUtilisationBytes: found.info.physicalBytes });
        }
      }
      // Unknown files, introduced parents first: a file backed by another unknown file waits for it.
      let pending = files.filter((f) => !byFile.has(f.info.file) && !transientFile.test(f.info.file));
      for (const f of pending.filter((p) => p.refusedReason))
        result[`refused.${f.info.file}`] = f.refusedReason;
      pending = pending.filter((f) => !f.refusedReason);
      for (const f of pending.filter((p) => String(p.info.format) !== 'DISK_FORMAT_QCOW2'))
        result[`refused.${f.info.file}`] =
          `not a qcow2 image (${String(f.info.format).replace('DISK_FORMAT_', '').toLowerCase()}): import it with ImportVdi instead`;
      pending = pending.filter((f) => String(f.info.format) === 'DISK_FORMAT_QCOW2');
      const backsOthers = new Set(pending.map((f) => f.info.backingFile).filter(Boolean));
      let introduced = 0;
      for (let progress = true; progress;) {
        progress = false;
        for (const f of [...pending]) {
          const { info } = f;
          const parent = info.backingFile ? byFile.get(info.backingFile) : undefined;
          if (info.backingFile && !parent) continue;
          if (parent && !parent.readOnly) {
            // A writable disk changes under its children: such a file would read garbage.
            result[`refused.${info.file}`] =
              `backed by ${info.backingFile}, a writable VDI: a backing file must never change`;
            pending.splice(pending.indexOf(f), 1);
            continue;
          }
          const row = newVdiRow({
            id: await this.freeId(m, info.file),
            name: info.file,
            tenantId: sr.tenantId,
            description: `introduced by the scan of SR ${sr.name}`,
            srId: sr.id,
            state: 'READY',
            virtualSizeBytes: info.virtualSizeBytes,
            physicalUtilisationBytes: info.physicalBytes,
            file: info.file,
            parentId: parent?.id ?? null,
            // A file others are backed by must not change: it is introduced read-only.
            readOnly: backsOthers.has(info.file),
          });
          await m.insert(VdiRow, row);
          emit(vdiEvent('CREATED', row));
          byFile.set(info.file, row);
          pending.splice(pending.indexOf(f), 1);
          introduced++;
          progress = true;
        }
      }
      for (const f of pending)
        result[`refused.${f.info.file}`] =
          `backed by ${f.info.backingFile}, which is not a VDI of SR ${sr.name}`;
      return {
        ...result,
        sr_id: sr.id,
        introduced: String(introduced),
        missing: String(missing),
        recovered: String(recovered),
      };
    });
  }

  private async freeId(m: EntityManager, file: string): Promise<string> {
    const fromName = idOfDiskFile(file);
    if (fromName && !(await m.findOneBy(VdiRow, { id: fromName }))) return fromName;
    return randomUUID();
  }

  // ---- sr.destroy ---------------------------------------------------------------------------------------

  private async destroy(queued: OperationRow): Promise<void> {
    let op = await this.steps.step(queued, { state: 'RUNNING', step: 'checking the SR', progress: 0.05 });
    const sr = await this.srOf(op);
    const host = await this.srHosts.hostFor(sr, sr.hostId).catch((e: DomainError) => {
      throw e.code === ErrorCode.Unavailable && op.pointOfNoReturn ? new RetryLater(e) : e;
    });
    // The point of no return: from the first deleted file on, the destroy always completes.
    if (!op.pointOfNoReturn)
      op = await this.steps.step(op, { step: 'deleting files', progress: 0.1, pointOfNoReturn: true });
    const rows = await this.store.manager.findBy(VdiRow, { srId: sr.id });
    // Leaves first: the agent refuses to delete a file another file is backed by.
    const depth = (r: VdiRow): number => {
      let d = 0;
      for (let p = r.parentId; p; p = rows.find((x) => x.id === p)?.parentId ?? null) d++;
      return d;
    };
    const ordered = [...rows].sort((a, b) => depth(b) - depth(a));
    try {
      for (const [i, row] of ordered.entries()) {
        if (row.file)
          await this.agents.call(host, (a) =>
            a.deleteDisk({ disk: { srId: sr.id, srPath: sr.path, file: row.file } }),
          );
        await this.store.tx(async (m, emit) => {
          await this.vbds().removeVbdsOf(m, emit, [row.id]);
          await m.delete(VdiRow, { id: row.id });
          emit(vdiEvent('DELETED', row));
        });
        if (i % 10 === 9) op = await this.steps.step(op, { progress: 0.1 + (0.8 * i) / ordered.length });
      }
      await this.agents.call(host, (a) =>
        a.detachSr({ srId: sr.id, srPath: sr.path, removeDirectory: sr.createdDirectory }),
      );
    } catch (e) {
      const err = asDomainError(e);
      if (err.code === ErrorCode.Unavailable) throw new RetryLater(err);
      throw err;
    }
    await this.steps.succeed(op, { sr_id: sr.id }, async (m, emit) => {
      await m.delete(SrRow, { id: sr.id });
      emit(srEvent('DELETED', sr));
    });
  }

  // ---- monitoring ---------------------------------------------------------------------------------------

  /**
   * Asks the hosts that should see the SR whether they do (StatSr), and records state, reasons, capacity
   * and utilisation. Skips SRs being created.
   */
  async refresh(srId: string): Promise<void> {
    this.checkedAt.set(srId, Date.now());
    const sr = await this.store.manager.findOneBy(SrRow, { id: srId });
    if (!sr || sr.state === 'CREATING') return;
    const targets = await this.srHosts.targets(sr);
    const attachments: Array<SrHostAttachment & { hostName: string }> = [];
    let stat: storageV1.StatSrResponse | undefined;
    for (const host of targets) {
      const reason = await this.statOn(host, sr).then(
        (s) => {
          stat ??= s;
          return '';
        },
        (e: unknown) => asDomainError(e).message,
      );
      attachments.push({ hostId: host.id, hostName: host.name, attached: !reason, reason });
    }
    const { state, reason } = srStateFromHosts(sr.type, attachments);
    await this.store
      .tx(async (m, emit) => {
        const row = await m.findOneBy(SrRow, { id: srId });
        if (!row || row.state === 'CREATING') return;
        const changes: Partial<SrRow> = {
          state,
          stateReason: reason,
          hosts: attachments.map(({ hostId, attached, reason: r }) => ({ hostId, attached, reason: r })),
          ...(stat
            ? {
                capacityBytes: stat.capacityBytes,
                freeBytes: stat.freeBytes,
                physicalUtilisationBytes: stat.physicalUtilisationBytes,
              }
            : {}),
        };
        const same = (Object.keys(changes) as Array<keyof SrRow>).every(
          (k) => JSON.stringify(changes[k]) === JSON.stringify(row[k]),
        );
        if (!same) await this.updateSr(m, emit, row, changes);
      })
      .catch((e: unknown) =>
        this.logger.debug({ err: e, srId }, 'SR refresh lost a race; the next one records it'),
      );
  }

  private async statOn(host: PoolHost, sr: SrRow): Promise<storageV1.StatSrResponse> {
    if (host.state === 'DOWN') throw new DomainError(ErrorCode.Unavailable, `host ${host.name} is DOWN`);
    return this.agents.call(host, (a) => a.statSr({ srId: sr.id, srPath: sr.path }));
  }

  /**
   * One monitoring round: every SR not looked at for `everyMs`, and an SR some host does not see (DEGRADED,
   * UNAVAILABLE) already after `unwellEveryMs` — a host that comes back (an agent restarted) has its SRs
   * usable again within seconds, not at the next full round. Rounds never overlap.
   */
  async monitor(everyMs: number, unwellEveryMs: number): Promise<void> {
    if (this.monitoring) return;
    this.monitoring = true;
    try {
      for (const sr of await this.store.manager.find(SrRow)) {
        const unwell = sr.state === 'DEGRADED' || sr.state === 'UNAVAILABLE';
        const since = Date.now() - (this.checkedAt.get(sr.id) ?? this.startedAt);
        if (since < (unwell ? Math.min(everyMs, unwellEveryMs) : everyMs)) continue;
        await this.refresh(sr.id).catch((e) =>
          this.logger.warn({ err: e, srId: sr.id }, 'SR refresh failed'),
        );
      }
    } finally {
      this.monitoring = false;
    }
  }

  private async srOf(op: OperationRow): Promise<SrRow> {
    const sr = await this.store.manager.findOneBy(SrRow, { id: op.targetId });
    if (!sr) throw new DomainError(ErrorCode.NotFound, `sr ${op.targetId} no longer exists`);
    return sr;
  }

  private async updateSr(m: EntityManager, emit: Emit, sr: SrRow, changes: Partial<SrRow>): Promise<void> {
    const saved = await updateVersionedRow(m, SrRow, { kind: 'sr', id: sr.id, version: sr.version }, changes);
    emit(srEvent('UPDATED', saved));
  }

  private async updateVdi(
    m: EntityManager,
    emit: Emit,
    vdi: VdiRow,
    changes: Partial<VdiRow>,
  ): Promise<void> {
    const saved = await updateVersionedRow(
      m,
      VdiRow,
      { kind: 'vdi', id: vdi.id, version: vdi.version },
      changes,
    );
    emit(vdiEvent('UPDATED', saved));
  }
}
