import { EntityManager } from 'typeorm';
import { DomainError, ErrorCode, isDomainError, isTerminal } from '@flotilla/domain';
import {
  domainErrorFromGrpc,
  Emit,
  Logger,
  OperationRow,
  OperationService,
  TransactionalStore,
} from '@flotilla/platform';

export type OperationHandler = (op: OperationRow, signal: AbortSignal) => Promise<void>;

/** The operation record changed under its handler (it was cancelled): stop and let the rollback run. */
export class OperationSuperseded extends Error {}

/** Work that cannot go on now (a host is unreachable past the point of no return): run it again later. */
export class RetryLater extends Error {
  constructor(readonly error: DomainError) {
    super(error.message);
  }
}

const retryDelayMs = 3000;

/**
 * Runs the storage service's operations in this process. Each handler is idempotent and restartable: at
 * start-up every unfinished operation is handed to its handler again, which continues from what the
 * records say was done. stop() aborts running handlers without recording anything, as a crash would: the
 * next start resumes them.
 */
export class StorageRunner {
  private readonly handlers = new Map<string, OperationHandler>();
  private readonly inFlight = new Map<string, { run: Promise<void>; abort: AbortController }>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private stopping = false;

  constructor(
    private readonly operations: OperationService,
    private readonly logger: Logger,
  ) {}

  register(kind: string, handler: OperationHandler): void {
    this.handlers.set(kind, handler);
  }

  kinds(): string[] {
    return [...this.handlers.keys()];
  }

  isRunning(opId: string): boolean {
    return this.inFlight.has(opId);
  }

  enqueue(op: Pick<OperationRow, 'id' | 'kind'>): void {
    if (this.stopping || this.inFlight.has(op.id)) return;
    const handler = this.handlers.get(op.kind);
    if (!handler) return;
    const abort = new AbortController();
    const run = (async () => {
      await new Promise((r) => setImmediate(r));
      try {
        await handler(op as OperationRow, abort.signal);
      } catch (e) {
        if (abort.signal.aborted) return;
        if (e instanceof RetryLater) {
          this.logger.info({ operationId: op.id, reason: e.message }, 'operation waits to retry');
          this.later(op, retryDelayMs);
          return;
        }
        // Handlers record their own failures; reaching here means the record could not be written.
        this.logger.error({ err: e, operationId: op.id }, 'storage operation handler failed');
        this.later(op, retryDelayMs);
      } finally {
        this.inFlight.delete(op.id);
      }
    })();
    this.inFlight.set(op.id, { run, abort });
  }

  /** Hands every unfinished operation of a known kind to its handler again (after a restart). */
  async resumeUnfinished(): Promise<number> {
    const ops = (await this.operations.unfinished()).filter((o) => this.handlers.has(o.kind));
    for (const op of ops) this.enqueue(op);
    if (ops.length) this.logger.info({ count: ops.length }, 'resuming unfinished storage operations');
    return ops.length;
  }

  /** Stops as a crash would: handlers are aborted mid-step and nothing more is recorded. */
  async stop(): Promise<void> {
    this.stopping = true;
    for (const t of this.timers) clearTimeout(t);
    for (const { abort } of this.inFlight.values()) abort.abort(new OperationSuperseded('service stopping'));
    await Promise.allSettled([...this.inFlight.values()].map((f) => f.run));
  }

  /** Aborts the running handler of an operation (cancelled): its agent streams are cut. */
  abort(opId: string): Promise<void> | undefined {
    const f = this.inFlight.get(opId);
    if (!f) return undefined;
    f.abort.abort(new OperationSuperseded('operation cancelled'));
    return f.run;
  }

  private later(op: Pick<OperationRow, 'id' | 'kind'>, ms: number): void {
    if (this.stopping) return;
    const t = setTimeout(() => {
      this.timers.delete(t);
      this.enqueue(op);
    }, ms);
    this.timers.add(t);
  }
}

/** Records an operation's steps and its end, with version checks against a concurrent cancel. */
export class OperationSteps {
  constructor(
    readonly store: TransactionalStore,
    readonly operations: OperationService,
  ) {}

  async fresh(id: string, m: EntityManager = this.store.manager): Promise<OperationRow> {
    return m.findOneByOrFail(OperationRow, { id });
  }

  /** The fresh record inside a transaction; OperationSuperseded when it already ended. */
  async freshIn(m: EntityManager, op: Pick<OperationRow, 'id'>): Promise<OperationRow> {
    const now = await m.findOneByOrFail(OperationRow, { id: op.id });
    if (isTerminal(now.state)) throw new OperationSuperseded();
    return now;
  }

  async step(
    op: OperationRow,
    changes: Partial<
      Pick<OperationRow, 'state' | 'step' | 'progress' | 'pointOfNoReturn' | 'params' | 'result'>
    >,
  ): Promise<OperationRow> {
    try {
      return await this.store.tx(async (m, emit) =>
        this.operations.advance(m, emit, await this.freshIn(m, op), changes),
      );
    } catch (e) {
      const now = await this.store.manager.findOneBy(OperationRow, { id: op.id });
      if (now && isTerminal(now.state)) throw new OperationSuperseded();
      throw e;
    }
  }

  /** Finishes the operation SUCCEEDED with `apply` (the record changes) in one transaction. */
  async succeed(
    op: Pick<OperationRow, 'id'>,
    result: Record<string, string>,
    apply?: (m: EntityManager, emit: Emit) => Promise<void>,
  ): Promise<OperationRow> {
    const done = await this.store.tx(async (m, emit) => {
      const current = await this.freshIn(m, op);
      await apply?.(m, emit);
      return this.operations.finish(m, emit, current, { state: 'SUCCEEDED', result });
    });
    this.operations.announce(done);
    return done;
  }

  /** Fails the operation; `release` undoes its resources in the same transaction, so no reader sees one without the other. */
  async fail(
    opId: string,
    error: DomainError,
    release?: (m: EntityManager, emit: Emit, op: OperationRow) => Promise<void>,
  ): Promise<OperationRow | undefined> {
    const done = await this.store.tx(async (m, emit) => {
      const op = await m.findOneByOrFail(OperationRow, { id: opId });
      if (isTerminal(op.state)) return undefined;
      await release?.(m, emit, op);
      return this.operations.finish(m, emit, op, { state: 'FAILED', error });
    });
    if (done) this.operations.announce(done);
    return done;
  }
}

export function asDomainError(e: unknown): DomainError {
  return isDomainError(e) ? e : domainErrorFromGrpc(e);
}

export const isUnavailable = (e: DomainError): boolean => e.code === ErrorCode.Unavailable;
