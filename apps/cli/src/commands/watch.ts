import { status } from '@grpc/grpc-js';
import { Command } from 'commander';
import { commonV1, computeV1 } from '@flotilla/contracts';
import { collectList } from '../args';
import { action, type CommandContext } from '../context';
import { cleanDetails } from '../errors';
import { word } from '../format';
import { sleep } from '../sleep';

const { EventType } = commonV1;

/** Errors a reconnect cannot fix: the request or the token is wrong. */
const fatal = new Set<number>([
  status.INVALID_ARGUMENT,
  status.OUT_OF_RANGE,
  status.UNAUTHENTICATED,
  status.PERMISSION_DENIED,
  status.NOT_FOUND,
  status.UNIMPLEMENTED,
  status.FAILED_PRECONDITION,
]);

interface WatchOptions {
  kinds?: string[];
  resumeToken?: string;
  bookmarks?: boolean;
}

export function watchCommand(): Command {
  return new Command('watch')
    .summary('stream changes (vm, host, flavor, operation events) as they commit')
    .description(
      'stream changes as they commit: one line per event (token, type, kind, id, state), or one JSON object per ' +
        'line with --json. On a disconnect it reconnects from the last token it saw, so nothing is missed, and says so',
    )
    .option(
      '--kinds <kinds>',
      'only these kinds, comma-separated: vm, host, flavor, operation (default: all)',
      collectList,
    )
    .option('--resume-token <token>', 'start after this event token (default: from now)')
    .option('--bookmarks', 'also print BOOKMARK events (checkpoints sent while nothing changes)')
    .action(action(watch));
}

async function watch(ctx: CommandContext, o: WatchOptions): Promise<void> {
  const cloud = ctx.cloud();
  const controller = new AbortController();
  const stop = () => controller.abort();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  let token = o.resumeToken ?? '';
  let delayMs = 1000;
  let disconnected = false;
  try {
    while (!controller.signal.aborted) {
      let reason = 'the server ended the stream';
      try {
        const stream = cloud.events.stream<computeV1.WatchResponse>(
          'Watch',
          { cursor: { resumeToken: token, kinds: o.kinds ?? [] } },
          { signal: controller.signal },
        );
        for await (const message of stream) {
          if (disconnected) {
            process.stderr.write(`flotilla: watch reconnected${token ? ` after token ${token}` : ''}\n`);
            disconnected = false;
          }
          delayMs = 1000;
          if (message.event?.token) token = message.event.token;
          print(ctx, message, Boolean(o.bookmarks));
        }
      } catch (e) {
        if (controller.signal.aborted) return;
        const code = (e as { code?: number }).code;
        if (code === undefined || fatal.has(code)) throw e;
        reason = cleanDetails((e as { details?: string }).details || (e as Error).message);
      }
      if (controller.signal.aborted) return;
      process.stderr.write(
        `flotilla: watch disconnected (${reason}); reconnecting ${token ? `from token ${token}` : 'from now'} in ${delayMs / 1000} s\n`,
      );
      disconnected = true;
      await sleep(delayMs, controller.signal);
      delayMs = Math.min(delayMs * 2, 30_000);
    }
  } finally {
    process.removeListener('SIGINT', stop);
    process.removeListener('SIGTERM', stop);
  }
}

function print(ctx: CommandContext, m: computeV1.WatchResponse, bookmarks: boolean): void {
  const e = m.event;
  if (!e) return;
  if (e.type === EventType.EVENT_TYPE_BOOKMARK && !bookmarks) return;
  if (ctx.out.json) return ctx.out.printJsonLine(m);
  ctx.out.line(
    [
      e.token,
      word(e.type, 'EVENT_TYPE_').padEnd(8),
      (e.kind || '-').padEnd(9),
      e.resourceId || '-',
      stateOf(m) || '-',
    ].join('  '),
  );
}

/** The state worth seeing for each kind of resource. */
export function stateOf(m: computeV1.WatchResponse): string {
  if (m.vm) return word(m.vm.powerState, 'POWER_STATE_');
  if (m.host) return word(m.host.state, 'HOST_STATE_');
  if (m.operation) return word(m.operation.state, 'OPERATION_STATE_');
  if (m.flavor) return m.flavor.name;
  return '';
}
