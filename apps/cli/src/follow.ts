import { status } from '@grpc/grpc-js';
import type { Cloud } from './cloud';
import { CliError, ExitCode } from './errors';
import type { Output } from './output';
import { statusLine } from './progress';
import { sleep } from './sleep';

/** How many UNAVAILABLE answers in a row following rides out (the service may be restarting). */
const transientRetries = 5;

export interface Followed<T> {
  first: T;
  /** Reads the resource again. */
  read(signal: AbortSignal): Promise<T>;
  done(t: T): boolean;
  /** Its operation: each step waits on it (WaitOperation answers at once when it ends). */
  operationId(t: T): string;
  /** The status line shown on a terminal while it runs. */
  line(t: T): string;
  /** What Ctrl-C prints: following stopped, the work goes on, and how to find it again. */
  detached(t: T): string;
}

/**
 * Follows a migration or an evacuation until it ends, with a status line on a terminal: each step waits on
 * its operation for up to a second, then reads the resource. Ctrl-C stops following (exit 130), not the
 * work.
 */
export async function follow<T>(cloud: Cloud, out: Output, f: Followed<T>): Promise<T> {
  const controller = new AbortController();
  const { signal } = controller;
  const interrupt = () => controller.abort();
  process.once('SIGINT', interrupt);
  const line = statusLine(out);
  let current = f.first;
  let failures = 0;
  try {
    while (!f.done(current)) {
      line.update(f.line(current));
      const started = Date.now();
      const operationId = f.operationId(current);
      try {
        if (operationId)
          await cloud.operations.call.waitOperation(
            { id: operationId, timeoutMs: 1000 },
            { deadlineMs: 16_000, signal },
          );
        else await sleep(1000, signal);
      } catch {
        // The resource is the answer; its operation only paces the reads.
        if (!signal.aborted) await sleep(1000, signal);
      }
      // Never more than 4 reads a second, whatever WaitOperation answers.
      await sleep(Math.max(0, 250 - (Date.now() - started)), signal);
      if (signal.aborted) break;
      try {
        current = await f.read(signal);
        failures = 0;
      } catch (e) {
        if (signal.aborted) break;
        if ((e as { code?: number }).code !== status.UNAVAILABLE || ++failures > transientRetries) throw e;
      }
    }
  } finally {
    line.stop();
    process.removeListener('SIGINT', interrupt);
  }
  if (signal.aborted && !f.done(current)) throw new CliError(f.detached(current), ExitCode.Interrupted);
  return current;
}
