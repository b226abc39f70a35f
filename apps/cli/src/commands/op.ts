import { Command } from 'commander';
import { commonV1 } from '@flotilla/contracts';
import { intInRange } from '../args';
import { action, type CommandContext } from '../context';
import { CliError, ExitCode, grpcCodeName } from '../errors';
import { labels, percent, timestamp, word } from '../format';
import type { Output } from '../output';
import { assertSucceeded, isDone, waitForOperation } from '../operations';

export function opCommand(): Command {
  const op = new Command('op').description('long-running operations (every mutation returns one)');
  op.command('show')
    .description('show an operation: state, progress, current step, error, result')
    .argument('<id>', 'operation id')
    .action(action(showOp));
  op.command('wait')
    .description(
      'wait until an operation is done; exit 6 if it FAILED or was CANCELLED, 5 if --timeout-ms passed',
    )
    .argument('<id>', 'operation id')
    .option(
      '--timeout-ms <ms>',
      'give up waiting after this long (the operation goes on); default: wait until done',
      intInRange(1, 2 ** 31 - 1),
    )
    .action(action(waitOp));
  return op;
}

async function showOp(ctx: CommandContext, id: string): Promise<void> {
  const { operation } = await ctx.cloud().operations.call.getOperation({ id });
  if (ctx.out.json) return ctx.out.printJson({ operation });
  if (operation) printOperation(ctx.out, operation);
}

async function waitOp(ctx: CommandContext, id: string, o: { timeoutMs?: number }): Promise<void> {
  const cloud = ctx.cloud();
  const { operation } = await cloud.operations.call.getOperation({ id });
  if (!operation) throw new CliError(`operation ${id} not found`, ExitCode.NotFound);
  const controller = new AbortController();
  const interrupt = () => controller.abort();
  process.once('SIGINT', interrupt);
  let done: commonV1.Operation;
  try {
    done = await waitForOperation(cloud, operation, {
      timeoutMs: o.timeoutMs,
      signal: controller.signal,
      progress: ctx.out.interactive && !isDone(operation),
    });
  } catch (e) {
    if (controller.signal.aborted)
      throw new CliError(`stopped waiting for operation ${id}; it goes on`, ExitCode.Interrupted);
    throw e;
  } finally {
    process.removeListener('SIGINT', interrupt);
  }
  if (ctx.out.json) ctx.out.printJson({ operation: done });
  else printOperation(ctx.out, done);
  if (!isDone(done))
    throw new CliError(
      `operation ${id} is still ${word(done.state, 'OPERATION_STATE_')} after ${o.timeoutMs} ms; it goes on`,
      ExitCode.Unavailable,
    );
  assertSucceeded(done);
}

export function printOperation(out: Output, op: commonV1.Operation): void {
  const err = op.error;
  out.details([
    ['id', op.id],
    ['kind', op.kind],
    [
      'target',
      op.target ? `${op.target.kind} ${[op.target.name, op.target.id].filter(Boolean).join(' ')}` : '',
    ],
    ['state', word(op.state, 'OPERATION_STATE_')],
    ['progress', percent(op.progress)],
    ['step', op.step],
    ['error', err?.code || err?.message ? `${err.message} [${grpcCodeName(err.code)}]` : ''],
    ...(err?.details ?? []).map((d): [string, string] => [
      '  detail',
      [d.reason, d.field && `field ${d.field}`, d.description, labels(d.metadata)]
        .filter(Boolean)
        .join(' · '),
    ]),
    ['result', labels(op.result)],
    ['request id', op.requestId],
    ['tenant', op.tenantId],
    ['created', timestamp(op.createdAt)],
    ['updated', timestamp(op.updatedAt)],
    ['finished', timestamp(op.finishedAt)],
  ]);
}
