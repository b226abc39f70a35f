import { status } from '@grpc/grpc-js';
import { EntityManager, In } from 'typeorm';
import { migrationV1 } from '@flotilla/contracts';
import {
  DomainError,
  ErrorCode,
  isTerminal,
  evacuationEnd,
  evacuationProgress,
  isEvacuationFinished,
  vmsToStart,
} from '@flotilla/domain';
import {
  domainErrorFromGrpc,
  errorDetailsOf,
  Logger,
  OperationRow,
  OperationService,
  TransactionalStore,
  updateVersioned,
  updateVersionedRow,
} from '@flotilla/platform';
import type { MigrationPort } from '../migrations/migration-port';
import { isUnavailable, peerError } from '../migrations/peers';
import { EvacuationRow, EvacuationVmRecord } from './evacuation.entity';
import { statusOf } from './evacuation.errors';
import { evacuationEvent, EvacuationKicker } from './evacuation.service';
import type { HostControl } from './host-control';

const { MigrationState: M } = migrationV1;
/** Times a VM's migration is started again after its destination filled up before it could hold room. */
const destinationFullRestarts = 3;
const finishedMigration = new Set<string>([
  M.MIGRATION_STATE_SUCCEEDED,
  M.MIGRATION_STATE_FAILED,
  M.MIGRATION_STATE_CANCELLED,
]);

/**
 * Runs evacuations in this process, one loop each. Every step is decided from the evacuation's record and
 * written back before or right after its outside effect, and every outside effect is idempotent (a
 * migration's start carries a request id derived from the evacuation and the VM, a shutdown too): after a
 * restart, resumeUnfinished() picks every open evacuation up where its record says it was, following its
 * migrations again through the MigrationPort.
 */
export class EvacuationRunner implements EvacuationKicker {
  private readonly loops = new Map<string, Promise<void>>();
  private readonly wakers = new Map<string, () => void>();
  /** Shutdowns this process follows (a restart asks compute again with the same request id). */
  private readonly shutdowns = new Set<string>();
  private readonly abort = new AbortController();
  private stopping = false;

  constructor(
    private readonly deps: {
      store: TransactionalStore;
      operations: OperationService;
      migrations: MigrationPort;
      hosts: HostControl;
      logger: Logger;
      /** How often running migrations and the host are looked at. */
      pollIntervalMs: number;
    },
  ) {}

  kick(id: string): void {
    if (this.stopping) return;
    const wake = this.wakers.get(id);
    if (wake) return wake();
    if (this.loops.has(id)) return;
    const loop = this.loop(id).finally(() => this.loops.delete(id));
    this.loops.set(id, loop);
  }

  /** Picks up every evacuation left RUNNING or CANCELLING (after a restart). */
  async resumeUnfinished(): Promise<number> {
    const open = await this.deps.store.manager.findBy(EvacuationRow, {
      state: In(['RUNNING', 'CANCELLING']),
    });
    for (const row of open) this.kick(row.id);
    if (open.length) this.deps.logger.info({ count: open.length }, 'resuming unfinished evacuations');
    return open.length;
  }

  /** Stops as a crash would: loops end after their current step; nothing more is recorded. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.abort.abort();
    for (const wake of this.wakers.values()) wake();
    await Promise.allSettled([...this.loops.values()]);
  }

  private async loop(id: string): Promise<void> {
    const log = this.deps.logger.child({ evacuationId: id });
    while (!this.stopping) {
      try {
        if (await this.step(id)) return;
      } catch (e) {
        if (this.stopping) return;
        // Transient (compute, the database): the record is intact; the next round goes on from it.
        log.warn({ err: e }, 'evacuation step failed; retrying');
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, this.deps.pollIntervalMs);
        function done() {
          clearTimeout(timer);
          resolve();
        }
        this.wakers.set(id, done);
      });
      this.wakers.delete(id);
    }
  }

  /** One round: look, follow, cancel, start, finish. True once the evacuation is finished. */
  private async step(id: string): Promise<boolean> {
    let row = await this.deps.store.manager.findOneByOrFail(EvacuationRow, { id });
    if (isEvacuationFinished(row.state)) return true;
    await this.operationRunning(row);
    if (row.state === 'RUNNING' && !row.error) row = await this.checkHost(row);
    row = await this.follow(row);
    row = await this.recoverStarts(row);
    if (row.state === 'CANCELLING') row = await this.cancelRunning(row);
    if (row.state === 'CANCELLING' || row.error) row = await this.skipPending(row);
    this.runShutdowns(row);
    if (row.state === 'RUNNING' && !row.error) row = await this.startMigrations(row);
    if (row.vms.some((v) => v.outcome === 'PENDING' || v.outcome === 'MIGRATING')) return false;
    return this.finish(row);
  }

  /** A host that went DOWN stops the evacuation: nothing can migrate from it any more. */
  private async checkHost(row: EvacuationRow): Promise<EvacuationRow> {
    let down: DomainError | undefined;
    try {
      const host = await this.deps.hosts.host(row.hostId);
      if (host.state === 'DOWN')
        down = new DomainError(
          ErrorCode.Unavailable,
          `host ${row.hostName} went DOWN during the evacuation: its VMs cannot migrate from it; its remaining VMs are left where they are`,
          { resource: `host ${row.hostName}` },
        );
    } catch (e) {
      const err = peerError('compute', e);
      // Compute unreachable: the migrations are still followed; the host is looked at again next round.
      if (err.code !== ErrorCode.NotFound) return row;
      down = new DomainError(ErrorCode.NotFound, `host ${row.hostName} no longer exists`);
    }
    if (!down) return row;
    const error = statusOf(down);
    return this.mutate(row.id, (r) => {
      if (r.state !== 'RUNNING' || r.error) return false;
      r.error = error;
      r.stateReason = down.message;
    });
  }

  /** Records the end of every migration that finished. */
  private async follow(row: EvacuationRow): Promise<EvacuationRow> {
    for (const vm of row.vms.filter((v) => v.outcome === 'MIGRATING' && v.migrationId)) {
      let migration: migrationV1.Migration;
      try {
        migration = await this.deps.migrations.get(vm.migrationId);
      } catch (e) {
        const err = peerError('migration', e);
        if (err.code !== ErrorCode.NotFound) throw err;
        row = await this.mutate(row.id, (r) => {
          const v = vmOf(r, vm.vmId);
          if (v.outcome !== 'MIGRATING') return false;
          v.outcome = 'FAILED';
          v.error = statusOf(
            new DomainError(ErrorCode.Internal, `migration ${vm.migrationId} is not known any more`),
          );
        });
        continue;
      }
      if (
        migration.destinationHostId !== vm.destinationHostId ||
        finishedMigration.has(String(migration.state))
      )
        row = await this.mutate(row.id, (r) => settle(r, vm.vmId, migration));
    }
    return row;
  }

  /**
   * A start asked whose answer was not recorded (crash, UNAVAILABLE): asked again with the same request
   * id, which returns the migration the first ask created, or creates it.
   */
  private async recoverStarts(row: EvacuationRow): Promise<EvacuationRow> {
    for (const vm of row.vms.filter((v) => v.outcome === 'MIGRATING' && !v.migrationId))
      row = await this.start(row, vm);
    return row;
  }

  private async cancelRunning(row: EvacuationRow): Promise<EvacuationRow> {
    for (const vm of row.vms.filter((v) => v.outcome === 'MIGRATING' && v.migrationId && !v.cancelAsked)) {
      try {
        await this.deps.migrations.cancel(vm.migrationId);
      } catch (e) {
        const err = peerError('migration', e);
        // Past its point of no return or already finished: it ends on its own and is followed as usual.
        if (err.code !== ErrorCode.FailedPrecondition && err.code !== ErrorCode.NotFound) throw err;
      }
      row = await this.mutate(row.id, (r) => {
        vmOf(r, vm.vmId).cancelAsked = true;
      });
    }
    return row;
  }

  /** Cancelled or stopped for the host: VMs not started yet stay where they are. */
  private async skipPending(row: EvacuationRow): Promise<EvacuationRow> {
    if (!row.vms.some((v) => v.outcome === 'PENDING' && !v.shutdownAsked)) return row;
    return this.mutate(row.id, (r) => {
      const why =
        r.state === 'CANCELLING'
          ? statusOf(new DomainError(ErrorCode.Cancelled, 'not started: the evacuation was cancelled'))
          : { ...(r.error ?? statusOf(new DomainError(ErrorCode.Internal, 'stopped'))), details: [] };
      for (const v of r.vms)
        if (v.outcome === 'PENDING' && !v.shutdownAsked) {
          v.outcome = 'SKIPPED';
          v.error = why;
        }
    });
  }

  /** Shuts down (clean, hard after the timeout) the VMs the plan could not move under on_blocked SHUTDOWN. */
  private runShutdowns(row: EvacuationRow): void {
    const open = row.state === 'RUNNING' && !row.error;
    for (const vm of row.vms) {
      const key = `${row.id}:${vm.vmId}`;
      if (vm.action !== 'SHUTDOWN' || vm.outcome !== 'PENDING' || this.shutdowns.has(key)) continue;
      // A shutdown already asked is followed to its end whatever happens; a new one only while running.
      if (!vm.shutdownAsked && !open) continue;
      this.shutdowns.add(key);
      void this.shutdown(row, vm).finally(() => {
        this.shutdowns.delete(key);
        this.kick(row.id);
      });
    }
  }

  private async shutdown(row: EvacuationRow, vm: EvacuationVmRecord): Promise<void> {
    try {
      if (!vm.shutdownAsked)
        await this.mutate(row.id, (r) => {
          vmOf(r, vm.vmId).shutdownAsked = true;
        });
      await this.deps.hosts.shutdownVm({
        vmId: vm.vmId,
        requestId: `evacuation:${row.id}:${vm.vmId}:shutdown`,
        timeoutMs: row.migrationOptions.shutdownTimeoutMs || 60_000,
        signal: this.abort.signal,
      });
      await this.mutate(row.id, (r) => {
        const v = vmOf(r, vm.vmId);
        v.outcome = 'SHUT_DOWN';
        v.error = null;
      });
    } catch (e) {
      if (this.stopping) return;
      const err = peerError('compute', e);
      if (isUnavailable(err)) return; // asked again next round, with the same request id
      await this.mutate(row.id, (r) => {
        const v = vmOf(r, vm.vmId);
        v.outcome = 'FAILED';
        v.error = statusOf(err);
      }).catch((w: unknown) =>
        this.deps.logger.warn({ err: w, evacuationId: row.id }, 'could not record a shutdown'),
      );
    }
  }

  /** Starts migrations while slots are free (at most max_parallel migrating at once). */
  private async startMigrations(row: EvacuationRow): Promise<EvacuationRow> {
    for (const vmId of vmsToStart(row.vms, row.maxParallel)) {
      let asked = false;
      row = await this.mutate(row.id, (r) => {
        const v = vmOf(r, vmId);
        if (r.state !== 'RUNNING' || r.error || v.outcome !== 'PENDING') return false;
        // Recorded before the start: a crash in between is recovered by asking again (recoverStarts).
        v.outcome = 'MIGRATING';
        asked = true;
      });
      if (!asked) break;
      row = await this.start(row, vmOf(row, vmId));
    }
    return row;
  }

  private async start(row: EvacuationRow, vm: EvacuationVmRecord): Promise<EvacuationRow> {
    let migration: migrationV1.Migration;
    try {
      migration = await this.deps.migrations.start({
        requestId: `evacuation:${row.id}:${vm.vmId}${vm.restarts ? `:${vm.restarts}` : ''}`,
        evacuationId: row.id,
        spec: {
          vmId: vm.vmId,
          destinationHostId: '',
          mode: migrationV1.MigrationMode.MIGRATION_MODE_LIVE,
          withStorage: row.withStorage,
          vdiMap: {},
          options: row.migrationOptions,
        },
      });
    } catch (e) {
      const err = peerError('migration', e);
      if (isUnavailable(err)) throw err; // the start is asked again next round
      const details = errorDetailsOf(e);
      return this.mutate(row.id, (r) => {
        const v = vmOf(r, vm.vmId);
        v.outcome = 'FAILED';
        v.error = statusOf(err, details);
        // The scheduler found no room for it: the other hosts are full, so the evacuation stops.
        if (err.code === ErrorCode.ResourceExhausted && r.state === 'RUNNING' && !r.error)
          noCapacity(r, err.message);
      });
    }
    return this.mutate(row.id, (r) => {
      vmOf(r, vm.vmId).migrationId = migration.id;
      settle(r, vm.vmId, migration);
    });
  }

  private async finish(row: EvacuationRow): Promise<boolean> {
    const end = evacuationEnd({
      vms: row.vms,
      cancelled: row.state === 'CANCELLING',
      failedForHost: !!row.error,
    });
    let reason = endReason(row, end);
    if (end === 'SUCCEEDED' && row.enterMaintenance) {
      try {
        await this.deps.hosts.disable(row.hostId, {
          maintenance: true,
          reason: `evacuation ${row.id} emptied the host`,
        });
        reason = `every VM left the host; it is in MAINTENANCE`;
      } catch (e) {
        const err = peerError('compute', e);
        if (isUnavailable(err)) throw err;
        reason = `every VM left the host, but it could not enter MAINTENANCE: ${err.message}`;
      }
    }
    const done = await this.deps.store.tx(async (m, emit) => {
      const r = await m.findOneOrFail(EvacuationRow, {
        where: { id: row.id },
        lock: { mode: 'pessimistic_write' },
      });
      if (isEvacuationFinished(r.state)) return undefined;
      // A cancel that came in meanwhile wins: the state is decided on the locked record.
      const state = evacuationEnd({
        vms: r.vms,
        cancelled: r.state === 'CANCELLING',
        failedForHost: !!r.error,
      });
      const error =
        state === 'CANCELLED'
          ? statusOf(new DomainError(ErrorCode.Cancelled, 'cancelled by request; the host stays disabled'))
          : state === 'FAILED'
            ? r.error
            : null;
      const fresh = await updateVersionedRow(
        m,
        EvacuationRow,
        { kind: 'evacuation', id: r.id, version: r.version },
        {
          state,
          stateReason: state === end ? reason : endReason(r, state),
          error,
          progress: evacuationProgress(r.vms),
          finishedAt: new Date(),
        },
      );
      emit(evacuationEvent('UPDATED', fresh));
      const op = await m.findOne(OperationRow, {
        where: { id: r.operationId },
        lock: { mode: 'pessimistic_write' },
      });
      if (!op || isTerminal(op.state)) return undefined;
      return this.deps.operations.finish(m, emit, op, {
        state: state === 'FAILED' ? 'FAILED' : state === 'CANCELLED' ? 'CANCELLED' : 'SUCCEEDED',
        error:
          state === 'FAILED' || state === 'CANCELLED'
            ? domainErrorFromGrpc({ code: error?.code ?? status.INTERNAL, details: error?.message ?? state })
            : undefined,
        result: { evacuation_id: r.id, evacuation_state: state },
      });
    });
    if (done) this.deps.operations.announce(done);
    this.deps.logger.info({ evacuationId: row.id, hostId: row.hostId }, `evacuation finished ${end}`);
    return true;
  }

  /** The operation turns RUNNING with the first round. */
  private async operationRunning(row: EvacuationRow): Promise<void> {
    const op = await this.deps.store.manager.findOneBy(OperationRow, { id: row.operationId });
    if (!op || op.state !== 'PENDING') return;
    await this.deps.store.tx(async (m, emit) => {
      const fresh = await m.findOne(OperationRow, {
        where: { id: op.id },
        lock: { mode: 'pessimistic_write' },
      });
      if (fresh?.state === 'PENDING')
        await this.deps.operations.advance(m, emit, fresh, { state: 'RUNNING', step: 'evacuating' });
    });
  }

  /**
   * Changes the evacuation under a row lock (a cancel and this runner never lose each other's writes); the
   * progress and the operation's progress follow. `change` returns false when it changed nothing.
   */
  private async mutate(id: string, change: (row: EvacuationRow) => boolean | void): Promise<EvacuationRow> {
    return this.deps.store.tx(async (m, emit) => {
      const row = await m.findOneOrFail(EvacuationRow, {
        where: { id },
        lock: { mode: 'pessimistic_write' },
      });
      if (isEvacuationFinished(row.state) || change(row) === false) return row;
      row.progress = evacuationProgress(row.vms);
      await updateVersioned(
        m,
        EvacuationRow,
        { kind: 'evacuation', id, version: row.version },
        {
          vms: row.vms,
          error: row.error,
          stateReason: row.stateReason,
          progress: row.progress,
        },
      );
      const fresh = await m.findOneByOrFail(EvacuationRow, { id });
      emit(evacuationEvent('UPDATED', fresh));
      await this.operationProgress(m, emit, fresh);
      return fresh;
    });
  }

  private async operationProgress(
    m: EntityManager,
    emit: Parameters<OperationService['advance']>[1],
    row: EvacuationRow,
  ): Promise<void> {
    const op = await m.findOne(OperationRow, {
      where: { id: row.operationId },
      lock: { mode: 'pessimistic_write' },
    });
    if (op && !isTerminal(op.state) && op.progress !== row.progress)
      await this.deps.operations.advance(m, emit, op, { progress: row.progress });
  }
}

function vmOf(row: EvacuationRow, vmId: string): EvacuationVmRecord {
  const vm = row.vms.find((v) => v.vmId === vmId);
  if (!vm) throw new DomainError(ErrorCode.Internal, `evacuation ${row.id} has no vm ${vmId}`);
  return vm;
}

/** Records what the migration says of the VM: its destination, and its outcome once it finished. */
function settle(row: EvacuationRow, vmId: string, migration: migrationV1.Migration): boolean {
  const vm = vmOf(row, vmId);
  if (vm.outcome !== 'MIGRATING') return false;
  if (migration.destinationHostId) vm.destinationHostId = migration.destinationHostId;
  switch (migration.state) {
    case M.MIGRATION_STATE_SUCCEEDED:
      vm.outcome = 'MIGRATED';
      vm.error = null;
      break;
    case M.MIGRATION_STATE_CANCELLED:
      // Rolled back on the evacuation's cancel: left on the host, as a VM not started.
      vm.outcome = row.state === 'CANCELLING' ? 'SKIPPED' : 'FAILED';
      vm.error = migration.error ?? null;
      break;
    case M.MIGRATION_STATE_FAILED:
      vm.outcome = 'FAILED';
      vm.error = migration.error ?? null;
      if (migration.error?.code === status.RESOURCE_EXHAUSTED && row.state === 'RUNNING' && !row.error) {
        // The scheduler picked its destination when it was asked; other migrations (of this evacuation or
        // others) took the room there before it could hold it. That host is full, not the pool: a new
        // migration lets the scheduler pick again, and its start is refused if no host has room.
        if ((vm.restarts ?? 0) < destinationFullRestarts) {
          vm.outcome = 'PENDING';
          vm.restarts = (vm.restarts ?? 0) + 1;
          vm.migrationId = '';
          vm.destinationHostId = '';
        } else noCapacity(row, migration.error.message);
      }
      break;
    default:
      break;
  }
  return true;
}

function noCapacity(row: EvacuationRow, why: string): void {
  const message = `the other hosts have no room left for the VMs of host ${row.hostName} (${why}); the VMs not moved yet are left where they are`;
  row.error = statusOf(new DomainError(ErrorCode.ResourceExhausted, message));
  row.stateReason = message;
}

function endReason(row: EvacuationRow, state: ReturnType<typeof evacuationEnd>): string {
  const count = (o: EvacuationVmRecord['outcome']) => row.vms.filter((v) => v.outcome === o).length;
  const summary = `${count('MIGRATED')} migrated, ${count('SHUT_DOWN')} shut down, ${count('SKIPPED')} skipped, ${count('FAILED')} failed`;
  switch (state) {
    case 'SUCCEEDED':
      return `every VM left the host (${summary}); it stays disabled`;
    case 'PARTIAL':
      return `some VMs are still on the host (${summary}); it stays disabled`;
    case 'FAILED':
      return `${row.error?.message ?? 'failed'} (${summary})`;
    case 'CANCELLED':
      return `cancelled (${summary}); the host stays disabled`;
  }
}
