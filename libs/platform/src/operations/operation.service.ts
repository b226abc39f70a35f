import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { EntityManager } from 'typeorm';
import {
  DomainError,
  ErrorCode,
  expectPresent,
  failedPrecondition,
  isCancellable,
  isTerminal,
  notFound,
  parsePage,
  validateId,
  validateIntRange,
  type OperationState,
} from '@flotilla/domain';
import type { Caller } from '../grpc/metadata';
import { fetchPage } from '../persistence/paging';
import { Emit, TransactionalStore } from '../persistence/store';
import { updateVersionedRow } from '../persistence/versioned';
import { operationEvent, OperationParams, OperationRow } from './operation-row';

export interface NewOperation {
  /** Chosen by the caller when other rows written in the same transaction refer to it. */
  id?: string;
  kind: string;
  target: { kind: string; id: string; name: string };
  tenantId: string;
  requestId?: string;
  params?: OperationParams;
  /** Record it as already done (work that completed in the creating transaction). */
  succeeded?: boolean;
  /** Result of an operation recorded as done; default `{<target kind>_id: <target id>}`. */
  result?: Record<string, string>;
  now?: Date;
}

/** What a service does to its own records when one of its operations is cancelled (same transaction). */
export type OnCancelled = (m: EntityManager, emit: Emit, op: OperationRow) => Promise<void>;

const waitPollMs = 500;

/** The record of a new operation, as OperationService.create inserts it (batched creates build it too). */
export function operationRow(spec: NewOperation): OperationRow {
  const now = spec.now ?? new Date();
  return {
    id: spec.id ?? randomUUID(),
    kind: spec.kind,
    targetKind: spec.target.kind,
    targetId: spec.target.id,
    targetName: spec.target.name,
    tenantId: spec.tenantId,
    requestId: spec.requestId ?? null,
    state: spec.succeeded ? 'SUCCEEDED' : 'PENDING',
    progress: spec.succeeded ? 1 : 0,
    step: spec.succeeded ? 'succeeded' : 'queued',
    params: spec.params ?? {},
    result: spec.succeeded ? (spec.result ?? { [`${spec.target.kind}_id`]: spec.target.id }) : {},
    errorCode: null,
    errorMessage: null,
    errorField: null,
    pointOfNoReturn: false,
    version: 1,
    createdAt: now,
    updatedAt: now,
    finishedAt: spec.succeeded ? now : null,
  };
}

/** The filter fields of ListOperations and the columns they compare. */
const filterColumns = new Map([
  ['state', 'o.state'],
  ['kind', 'o.kind'],
  ['target_id', 'o.target_id::text'],
]);

/**
 * Durable operation records of one service: created with the change that asks for them, advanced by the
 * service's runner, read, awaited and cancelled through OperationService RPCs scoped to the caller's tenant.
 */
export class OperationService {
  private readonly finished = new EventEmitter().setMaxListeners(0);

  constructor(private readonly store: TransactionalStore) {}

  async create(m: EntityManager, emit: Emit, spec: NewOperation): Promise<OperationRow> {
    const op = operationRow(spec);
    await m.insert(OperationRow, op);
    emit(operationEvent('CREATED', op));
    return op;
  }

  /** The earlier operation a repeated request (same tenant, kind, target and request_id) created. */
  findByRequest(m: EntityManager, spec: NewOperation): Promise<OperationRow | null> {
    if (!spec.requestId) return Promise.resolve(null);
    return m.findOneBy(OperationRow, {
      tenantId: spec.tenantId,
      kind: spec.kind,
      targetId: spec.target.id,
      requestId: spec.requestId,
    });
  }

  /** Records progress; returns the fresh row. */
  async advance(
    m: EntityManager,
    emit: Emit,
    op: OperationRow,
    changes: Partial<
      Pick<OperationRow, 'state' | 'progress' | 'step' | 'pointOfNoReturn' | 'result' | 'params'>
    >,
  ): Promise<OperationRow> {
    const fresh = await updateVersionedRow(
      m,
      OperationRow,
      { kind: 'operation', id: op.id, version: op.version },
      changes,
    );
    emit(operationEvent('UPDATED', fresh));
    return fresh;
  }

  async finish(
    m: EntityManager,
    emit: Emit,
    op: OperationRow,
    outcome: {
      state: Extract<OperationState, 'SUCCEEDED' | 'FAILED' | 'CANCELLED'>;
      error?: DomainError;
      result?: Record<string, string>;
    },
  ): Promise<OperationRow> {
    const fresh = await updateVersionedRow(
      m,
      OperationRow,
      { kind: 'operation', id: op.id, version: op.version },
      {
        state: outcome.state,
        progress: outcome.state === 'SUCCEEDED' ? 1 : op.progress,
        step: outcome.state.toLowerCase(),
        result: outcome.result ?? op.result,
        errorCode: outcome.error?.code ?? null,
        errorMessage: outcome.error?.message ?? null,
        errorField: outcome.error?.fields.field ?? null,
        finishedAt: new Date(),
      },
    );
    emit(operationEvent('UPDATED', fresh));
    return fresh;
  }

  /** Tells local waiters; call after the finishing transaction committed. */
  announce(op: OperationRow): void {
    this.finished.emit(op.id, op);
  }

  /** Inside a transaction pass its manager: on PGlite a read on another connection waits for the transaction. */
  async get(
    caller: Caller,
    id: string,
    m: EntityManager = this.store.manager,
    lock = false,
  ): Promise<OperationRow> {
    const opId = validateId('id', id, 'operation');
    const op = await m.findOne(OperationRow, {
      where: { id: opId },
      ...(lock ? { lock: { mode: 'pessimistic_write' as const } } : {}),
    });
    if (!op || (!caller.crossTenant && op.tenantId !== caller.tenantId)) throw notFound('operation', id);
    return op;
  }

  async list(
    caller: Caller,
    page: { pageSize?: number; pageToken?: string; filter?: string } | undefined,
  ): Promise<{ operations: OperationRow[]; nextPageToken: string }> {
    const spec = parsePage(page, [...filterColumns.keys()]);
    const qb = this.store.manager.createQueryBuilder(OperationRow, 'o');
    if (!caller.crossTenant) qb.andWhere('o.tenant_id = :tenant', { tenant: caller.tenantId });
    for (const [i, term] of spec.filter.entries()) {
      const column = expectPresent(filterColumns.get(term.field), `no column for filter field ${term.field}`);
      qb.andWhere(`${column} = :f${i}`, {
        [`f${i}`]: term.field === 'state' ? term.value.replace(/^OPERATION_STATE_/, '') : term.value,
      });
    }
    const { rows, nextPageToken } = await fetchPage(
      qb.orderBy('o.created_at', 'DESC').addOrderBy('o.id'),
      spec,
      page?.filter,
    );
    return { operations: rows, nextPageToken };
  }

  /** Waits until the operation is done or the timeout passes, then returns it as it is. */
  async wait(caller: Caller, id: string, timeoutMs: number): Promise<OperationRow> {
    const timeout = timeoutMs === 0 ? 30_000 : validateIntRange('timeout_ms', timeoutMs, 1, 60_000, ' ms');
    let op = await this.get(caller, id);
    const deadline = Date.now() + timeout;
    while (!isTerminal(op.state) && Date.now() < deadline) {
      const remaining = Math.min(waitPollMs, deadline - Date.now());
      // Local completions arrive at once; completions by another replica are seen by the poll.
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          resolve();
        };
        const timer = setTimeout(() => {
          this.finished.off(op.id, done);
          resolve();
        }, remaining);
        this.finished.once(op.id, done);
      });
      op = await this.get(caller, id);
    }
    return op;
  }

  async cancel(caller: Caller, id: string, onCancelled?: OnCancelled): Promise<OperationRow> {
    const cancelled = await this.store.tx(async (m, emit) => {
      // Locked: the worker's progress updates wait for the cancel (or the cancel for them) instead of one
      // of them failing ABORTED on a version that moved under it.
      const op = await this.get(caller, id, m, true);
      if (!isCancellable({ state: op.state, pointOfNoReturnPassed: op.pointOfNoReturn }))
        throw failedPrecondition(
          isTerminal(op.state)
            ? `operation ${op.id} already finished (${op.state})`
            : `operation ${op.id} passed its point of no return (${op.step}): it will finish on its own`,
          { resource: `operation ${op.id}` },
        );
      const done = await this.finish(m, emit, op, {
        state: 'CANCELLED',
        error: new DomainError(ErrorCode.Cancelled, 'cancelled by request'),
      });
      await onCancelled?.(m, emit, done);
      return done;
    });
    this.announce(cancelled);
    return cancelled;
  }

  unfinished(): Promise<OperationRow[]> {
    return this.store.manager
      .createQueryBuilder(OperationRow, 'o')
      .where('o.finished_at IS NULL')
      .orderBy('o.created_at')
      .getMany();
  }
}
