import { EntityManager, In, IsNull, Not } from 'typeorm';
import { isTerminal, notFound } from '@flotilla/domain';
import {
  domainErrorFromGrpc,
  Emit,
  OperationRow,
  OperationService,
  TransactionalStore,
  updateVersionedRow,
} from '@flotilla/platform';
import { MigrationPhaseName, MigrationRow, MigrationStateName } from '../persistence/entities';
import { migrationEvent } from './migration.mapper';

export const finishedStates: readonly MigrationStateName[] = ['SUCCEEDED', 'FAILED', 'CANCELLED'];
export const isFinished = (m: Pick<MigrationRow, 'state'>): boolean => finishedStates.includes(m.state);

export type MigrationChanges = Partial<Omit<MigrationRow, 'id' | 'version' | 'createdAt' | 'updatedAt'>>;

/** The phase list with the open phase closed and `phase` opened (unless it is already the open one). */
export function withPhase(m: MigrationRow, phase: MigrationPhaseName, detail = '', now = new Date()) {
  const phases = m.phases.map((p) => ({ ...p }));
  const open = phases[phases.length - 1];
  if (open && !open.endedAt && open.phase === phase) {
    if (detail) open.detail = detail;
    return { phase, phases };
  }
  if (open && !open.endedAt) open.endedAt = now.toISOString();
  phases.push({
    phase,
    startedAt: now.toISOString(),
    ...(phase === 'DONE' ? { endedAt: now.toISOString() } : {}),
    detail,
  });
  return { phase, phases };
}

/** The phase list with the open phase's detail set. */
export function withDetail(m: MigrationRow, detail: string): Pick<MigrationRow, 'phases'> {
  const phases = m.phases.map((p) => ({ ...p }));
  const open = phases[phases.length - 1];
  if (open && !open.endedAt) open.detail = detail;
  return { phases };
}

/**
 * Reads and writes migration records. Every write locks the operation row, then the migration row (the
 * order OperationService.cancel takes them in), so a cancel and a step of the run never both win.
 */
export class MigrationRecords {
  constructor(
    readonly store: TransactionalStore,
    readonly operations: OperationService,
  ) {}

  async get(id: string, m: EntityManager = this.store.manager): Promise<MigrationRow> {
    const row = await m.findOneBy(MigrationRow, { id });
    if (!row) throw notFound('migration', id);
    return row;
  }

  /**
   * Applies `decide(fresh row)` in one transaction with its outbox event; the operation follows the
   * migration's progress, step, point of no return and end. `decide` returning undefined changes nothing.
   */
  async change(id: string, decide: (m: MigrationRow) => MigrationChanges | undefined): Promise<MigrationRow> {
    const { row, finishedOp } = await this.store.tx(async (tm, emit) => {
      // The operation found through the migration and locked in one statement (a migration's operation never
      // changes), then the migration.
      const op = await tm
        .createQueryBuilder(OperationRow, 'o')
        .where(
          (qb) =>
            `o.id = ${qb.subQuery().select('m.operationId').from(MigrationRow, 'm').where('m.id = :id').getQuery()}`,
          { id },
        )
        .setLock('pessimistic_write')
        .getOne();
      const locked = await tm.findOne(MigrationRow, {
        where: { id },
        lock: { mode: 'pessimistic_write' },
      });
      if (!locked) throw notFound('migration', id);
      const changes = decide(locked);
      if (!changes) return { row: locked, finishedOp: undefined };
      const fresh = await this.write(tm, emit, locked, changes);
      return { row: fresh, finishedOp: op ? await this.follow(tm, emit, op, fresh) : undefined };
    });
    if (finishedOp) this.operations.announce(finishedOp);
    return row;
  }

  /** Writes the changes and the event inside the caller's transaction (the row must be locked or new). */
  async write(
    tm: EntityManager,
    emit: Emit,
    row: MigrationRow,
    changes: MigrationChanges,
  ): Promise<MigrationRow> {
    const fresh = await updateVersionedRow(
      tm,
      MigrationRow,
      { kind: 'migration', id: row.id, version: row.version },
      changes,
    );
    emit(migrationEvent('UPDATED', fresh));
    return fresh;
  }

  /** Brings the operation in line with the migration; returns it when this write finished it. */
  private async follow(
    tm: EntityManager,
    emit: Emit,
    op: OperationRow,
    m: MigrationRow,
  ): Promise<OperationRow | undefined> {
    if (isTerminal(op.state)) return undefined;
    if (isFinished(m)) {
      const state = m.state as 'SUCCEEDED' | 'FAILED' | 'CANCELLED';
      return this.operations.finish(tm, emit, op, {
        state,
        error: m.error ? domainErrorFromGrpc({ code: m.error.code, details: m.error.message }) : undefined,
        result: {
          vm_id: m.vmId,
          migration_id: m.id,
          host_id: m.state === 'SUCCEEDED' ? m.destinationHostId : m.sourceHostId,
        },
      });
    }
    const changes: Partial<OperationRow> = {};
    const opState = m.state === 'QUEUED' ? 'PENDING' : 'RUNNING';
    if (op.state !== opState) changes.state = opState;
    if (Math.abs(op.progress - m.progress) > 1e-9) changes.progress = m.progress;
    const step = m.phase.toLowerCase();
    if (op.step !== step) changes.step = step;
    if (m.pointOfNoReturnPassed && !op.pointOfNoReturn) changes.pointOfNoReturn = true;
    if (Object.keys(changes).length) await this.operations.advance(tm, emit, op, changes);
    return undefined;
  }

  /** Migrations not finished, oldest first. */
  unfinished(): Promise<MigrationRow[]> {
    return this.store.manager.find(MigrationRow, {
      where: { finishedAt: IsNull() },
      order: { createdAt: 'ASC' },
    });
  }

  /**
   * Destinations of unfinished migrations still in PREFLIGHT (queued or checking): compute holds no room
   * for them there yet, so the scheduler does not count them.
   */
  async destinationsNotHeld(): Promise<string[]> {
    const rows = await this.store.manager
      .createQueryBuilder(MigrationRow, 'm')
      .select('DISTINCT m.destination_host_id', 'id')
      .where('m.finished_at IS NULL')
      .andWhere(`m.phase = 'PREFLIGHT'`)
      // Compute takes at most 1000 hosts to exclude.
      .limit(1000)
      .getRawMany<{ id: string }>();
    return rows.map((r) => r.id).filter(Boolean);
  }

  /** Finished migrations with calls still to make (an agent was down). */
  withLeftovers(): Promise<MigrationRow[]> {
    return this.store.manager
      .createQueryBuilder(MigrationRow, 'm')
      .where('m.finished_at IS NOT NULL')
      .andWhere(`m.pending <> '[]'::jsonb`)
      .orderBy('m.created_at')
      .getMany();
  }

  /** Unfinished migrations of a VM (a VM moves by one migration at a time). */
  activeForVm(vmId: string, m: EntityManager = this.store.manager): Promise<MigrationRow[]> {
    return m.find(MigrationRow, {
      where: { vmId, state: Not(In([...finishedStates])) },
    });
  }
}
