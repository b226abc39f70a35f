import { Logger, OperationService } from '@flotilla/platform';
import { OperationRow } from '../persistence/entities';

export type OperationHandler = (op: OperationRow) => Promise<void>;

/**
 * Runs operations in this process. Each handler is idempotent and restartable: at start-up every
 * unfinished operation is handed to its handler again, which continues from what the records say was done.
 */
export class OperationRunner {
  private readonly handlers = new Map<string, OperationHandler>();
  private readonly inFlight = new Map<string, Promise<void>>();
  private stopping = false;

  constructor(
    private readonly operations: OperationService,
    private readonly logger: Logger,
  ) {}

  register(kind: string, handler: OperationHandler): void {
    this.handlers.set(kind, handler);
  }

  enqueue(op: OperationRow): void {
    if (this.stopping || this.inFlight.has(op.id)) return;
    const handler = this.handlers.get(op.kind);
    if (!handler) {
      this.logger.error({ operationId: op.id, kind: op.kind }, 'no handler for operation kind');
      return;
    }
    const run = (async () => {
      await new Promise((r) => setImmediate(r));
      try {
        await handler(op);
      } catch (e) {
        // Handlers record their own failures; reaching here means the record could not be written
        // (database gone): the operation stays unfinished and is resumed at the next start.
        this.logger.error({ err: e, operationId: op.id }, 'operation handler failed');
      } finally {
        this.inFlight.delete(op.id);
      }
    })();
    this.inFlight.set(op.id, run);
  }

  /** Hands every unfinished operation to its handler again (after a restart). */
  async resumeUnfinished(): Promise<number> {
    const ops = await this.operations.unfinished();
    for (const op of ops) this.enqueue(op);
    if (ops.length) this.logger.info({ count: ops.length }, 'resuming unfinished operations');
    return ops.length;
  }

  /** Waits (bounded) for running handlers so that a clean stop does not cut them mid-step. */
  async drain(timeoutMs: number): Promise<void> {
    this.stopping = true;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.allSettled([...this.inFlight.values()]),
      new Promise((r) => (timer = setTimeout(r, timeoutMs))),
    ]);
    // A stopped service must not keep its process (or a test run) alive for the rest of the grace period.
    clearTimeout(timer);
  }
}
