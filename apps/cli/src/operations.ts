import { status } from '@grpc/grpc-js';
import { SingleBar } from 'cli-progress';
import { commonV1 } from '@flotilla/contracts';
import type { Cloud } from './cloud';
import { CliError, ExitCode, grpcCodeName } from './errors';
import { word } from './format';
import type { Output } from './output';
import { sleep } from './sleep';

type Operation = commonV1.Operation;
const { OperationState } = commonV1;

export function isDone(op: Pick<Operation, 'state'>): boolean {
  return (
    op.state === OperationState.OPERATION_STATE_SUCCEEDED ||
    op.state === OperationState.OPERATION_STATE_FAILED ||
    op.state === OperationState.OPERATION_STATE_CANCELLED
  );
}

/** "vm.start web-1" — what the operation does to what. */
export function describeOperation(op: Pick<Operation, 'kind' | 'target'>): string {
  const target = op.target?.name || op.target?.id || '';
  return [op.kind, target].filter(Boolean).join(' ');
}

/** The one line for a FAILED or CANCELLED operation: its error, code and the fields at fault. */
export function operationErrorLine(op: Operation): string {
  const verb = op.state === OperationState.OPERATION_STATE_CANCELLED ? 'was cancelled' : 'failed';
  const err = op.error;
  const fields = (err?.details ?? []).map((d) => d.field).filter(Boolean);
  const reason = err?.message ? `: ${err.message}` : '';
  const code = err?.code ? ` [${grpcCodeName(err.code)}]` : '';
  const field = fields.length ? ` (field ${fields.join(', ')})` : '';
  return `operation ${op.id} (${describeOperation(op)}) ${verb}${reason}${code}${field}`;
}

/** Throws exit code 6 unless the operation SUCCEEDED. */
export function assertSucceeded(op: Operation): void {
  if (op.state !== OperationState.OPERATION_STATE_SUCCEEDED)
    throw new CliError(operationErrorLine(op), ExitCode.OperationFailed);
}

export interface WaitOptions {
  /** Give up after this long (the operation goes on); unset waits until it is done. */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Show a progress bar (on a terminal only). */
  progress: boolean;
}

/** How many UNAVAILABLE answers in a row a wait rides out (the gateway may be restarting under `up`). */
const transientRetries = 5;

/**
 * Waits for an operation with WaitOperation calls: short ones while a progress bar is shown so it moves,
 * long ones otherwise. Returns the operation as it is when done or when timeoutMs passed.
 */
export async function waitForOperation(
  cloud: Cloud,
  first: Operation,
  options: WaitOptions,
): Promise<Operation> {
  let op = first;
  const bar = options.progress ? startBar(op) : undefined;
  const deadline = options.timeoutMs === undefined ? undefined : Date.now() + options.timeoutMs;
  let failures = 0;
  try {
    while (!isDone(op)) {
      const remaining = deadline === undefined ? Infinity : deadline - Date.now();
      if (remaining <= 0) break;
      const waitMs = Math.max(1, Math.round(Math.min(bar ? 1000 : 30_000, remaining)));
      try {
        const res = await cloud.operations.call.waitOperation(
          { id: op.id, timeoutMs: waitMs },
          { deadlineMs: waitMs + 15_000, signal: options.signal },
        );
        if (res.operation) op = res.operation;
        failures = 0;
      } catch (e) {
        if (options.signal?.aborted) throw e;
        if ((e as { code?: number }).code !== status.UNAVAILABLE || ++failures > transientRetries) throw e;
        await sleep(1000, options.signal);
      }
      bar?.update(Math.round((op.progress ?? 0) * 100), { step: stepOf(op) });
    }
    if (op.state === OperationState.OPERATION_STATE_SUCCEEDED) bar?.update(100, { step: 'succeeded' });
    else if (isDone(op)) bar?.update({ step: word(op.state, 'OPERATION_STATE_') });
  } finally {
    bar?.stop();
  }
  return op;
}

function startBar(op: Operation): SingleBar {
  const bar = new SingleBar({
    format: `${describeOperation(op)} [{bar}] {percentage}% {step}`,
    barsize: 30,
    hideCursor: true,
    stream: process.stderr,
    clearOnComplete: false,
  });
  bar.start(100, Math.round((op.progress ?? 0) * 100), { step: stepOf(op) });
  return bar;
}

function stepOf(op: Operation): string {
  return op.step || word(op.state, 'OPERATION_STATE_');
}

/**
 * The common tail of every mutation that returns an operation: with --no-wait print its id (a script can
 * `op wait` it) and return undefined; else wait with progress, stop with exit 6 if it failed, and return
 * it. Ctrl-C stops the waiting, not the operation (exit 130).
 */
export async function settle(
  cloud: Cloud,
  out: Output,
  response: { operation?: Operation | undefined },
  options: { wait: boolean },
): Promise<Operation | undefined> {
  const operation = response.operation;
  if (!operation) throw new CliError('the server answered without an operation', ExitCode.Other);
  if (!options.wait) {
    printStarted(out, response, operation);
    return undefined;
  }
  const controller = new AbortController();
  const interrupt = () => controller.abort();
  process.once('SIGINT', interrupt);
  try {
    const done = await waitForOperation(cloud, operation, {
      progress: out.interactive,
      signal: controller.signal,
    });
    assertSucceeded(done);
    return done;
  } catch (e) {
    if (controller.signal.aborted)
      throw new CliError(
        `stopped waiting; operation ${operation.id} goes on (follow it with \`flotilla op wait ${operation.id}\`)`,
        ExitCode.Interrupted,
      );
    throw e;
  } finally {
    process.removeListener('SIGINT', interrupt);
  }
}

/** For --no-wait: the operation id alone on stdout (for scripts), a hint for people on stderr. */
export function printStarted(out: Output, response: unknown, operation: Operation): void {
  if (out.json) return out.printJson(response);
  out.line(operation.id);
  if (out.interactive)
    out.note(`${describeOperation(operation)}: started; follow it with \`flotilla op wait ${operation.id}\``);
}
