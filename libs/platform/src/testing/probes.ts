import { Metadata, status } from '@grpc/grpc-js';
import type { ClientReadableStream } from '@grpc/grpc-js';
import { commonV1, computeV1, storageV1 } from '@flotilla/contracts';
import { GrpcClient } from '../grpc/client';

/**
 * Test probes shared by the service tests: waits with deadlines (never fixed sleeps), gRPC errors read back
 * as plain data so a failing expectation names the code and field it got, and a Watch stream recorder.
 */

export interface WaitOptions {
  timeoutMs?: number;
  intervalMs?: number;
}

/** Thrown by a probe to stop waiting at once: what it waits for can no longer happen. */
export class GiveUp extends Error {}

/**
 * Polls `probe` until it returns something truthy and returns that. A probe that throws counts as "not
 * yet" (unless it throws GiveUp); on timeout the error names what was awaited and the last value or error
 * seen.
 */
export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined | null | false> | T | undefined | null | false,
  options: WaitOptions = {},
): Promise<T> {
  const timeoutMs = options.timeoutMs ?? 15_000;
  const intervalMs = options.intervalMs ?? 50;
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value) return value;
      last = value;
    } catch (e) {
      if (e instanceof GiveUp) throw e;
      last = e;
    }
    if (Date.now() >= deadline) {
      const shown = last instanceof Error ? last.message : JSON.stringify(last);
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}; last seen: ${shown?.slice(0, 500)}`,
      );
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** A gRPC error as data: expectations on it print the code by name, the field and the message. */
export interface Rejection {
  code: string;
  message: string;
  /** The `x-flotilla-field` trailer, if any. */
  field?: string;
}

export function codeName(code: number): string {
  return status[code] ?? String(code);
}

/** Awaits a call that must fail; a success fails the test, showing what came back. */
export async function rejection(call: Promise<unknown>): Promise<Rejection> {
  let value: unknown;
  try {
    value = await call;
  } catch (e) {
    const err = e as { code?: number; details?: string; message?: string; metadata?: Metadata };
    if (typeof err.code !== 'number') throw e;
    const field = err.metadata?.get('x-flotilla-field')[0];
    return {
      code: codeName(err.code),
      message: err.details ?? err.message ?? '',
      ...(field !== undefined ? { field: String(field) } : {}),
    };
  }
  throw new Error(`expected the call to fail, but it returned ${JSON.stringify(value)?.slice(0, 500)}`);
}

const terminal = new Set<string>([
  'OPERATION_STATE_SUCCEEDED',
  'OPERATION_STATE_FAILED',
  'OPERATION_STATE_CANCELLED',
]);

export function isFinished(op: Pick<commonV1.Operation, 'state'>): boolean {
  return terminal.has(String(op.state));
}

/** Blocks on WaitOperation (server side) until the operation is finished or the deadline passes. */
export async function operationDone(
  operations: GrpcClient<commonV1.OperationServiceClient>,
  id: string,
  timeoutMs = 20_000,
): Promise<commonV1.Operation> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const left = deadline - Date.now();
    const { operation } = await operations.call.waitOperation(
      { id, timeoutMs: Math.max(1, Math.min(left, 10_000)) },
      { deadlineMs: Math.min(left, 10_000) + 5000 },
    );
    if (operation && isFinished(operation)) return operation;
    if (Date.now() >= deadline)
      throw new Error(`operation ${id} still ${operation?.state} (${operation?.step}) after ${timeoutMs} ms`);
  }
}

/**
 * Records one Watch stream: every message in arrival order, the last token (events and bookmarks), and how
 * the stream ended. `close()` cancels it like a client that goes away. `M` is the service's WatchResponse
 * (compute's by default); `events` a client of any service with a Watch.
 */
export class WatchRecorder<M extends { event?: commonV1.EventMeta } = computeV1.WatchResponse> {
  readonly messages: M[] = [];
  lastToken = '';
  ended = false;
  error?: { code: string; message: string };
  private readonly stream: ClientReadableStream<M>;

  constructor(events: Pick<GrpcClient<unknown>, 'stream'>, cursor: Partial<commonV1.WatchCursor> = {}) {
    this.stream = events.stream<M>('Watch', {
      cursor: { resumeToken: cursor.resumeToken ?? '', kinds: cursor.kinds ?? [] },
    });
    this.stream.on('data', (m: M) => {
      this.messages.push(m);
      if (m.event?.token) this.lastToken = m.event.token;
    });
    this.stream.on('error', (e: { code?: number; details?: string; message: string }) => {
      this.error = { code: codeName(e.code ?? status.UNKNOWN), message: e.details ?? e.message };
      this.ended = true;
    });
    this.stream.on('end', () => (this.ended = true));
  }

  /** Change events only (no bookmarks). */
  get events(): M[] {
    return this.messages.filter((m) => m.event?.type !== commonV1.EventType.EVENT_TYPE_BOOKMARK);
  }

  /** Waits for the first message (the opening bookmark), which says the stream is subscribed. */
  ready(timeoutMs = 10_000): Promise<unknown> {
    return waitFor('the first Watch message', () => this.messages.length > 0 || this.failed(), { timeoutMs });
  }

  /** Waits until an event matching `match` arrives and returns it. */
  until(what: string, match: (m: M) => boolean, timeoutMs = 15_000): Promise<M> {
    return waitFor(`Watch event: ${what}`, () => this.events.find(match) ?? this.failed(), { timeoutMs });
  }

  close(): void {
    this.stream.cancel();
  }

  private failed(): false {
    if (this.error) throw new GiveUp(`the Watch stream failed: ${this.error.code} ${this.error.message}`);
    return false;
  }
}

/** The files of a KERNEL image as the demo builder's manifest lists them (paths relative to the catalogue). */
export interface KernelImageFiles {
  minMemoryMib: number;
  defaultCmdline: string;
  files: { kernel: { path: string; sha256: string }; initrd: { path: string; sha256: string } };
}

/** RegisterImage for a PUBLIC KERNEL image (the demo guest in tests and benchmarks), sha256s included. */
export function kernelImageRegistration(
  name: string,
  image: KernelImageFiles,
  description = `${name} guest`,
): storageV1.RegisterImageRequest {
  return {
    requestId: '',
    name,
    description,
    labels: {},
    visibility: storageV1.ImageVisibility.IMAGE_VISIBILITY_PUBLIC,
    osType: 'linux',
    architecture: 'x86_64',
    minDiskBytes: 0,
    minMemoryMib: image.minMemoryMib,
    sha256: image.files.kernel.sha256,
    srId: '',
    kernel: {
      kernelPath: image.files.kernel.path,
      initrdPath: image.files.initrd.path,
      cmdline: image.defaultCmdline,
      initrdSha256: image.files.initrd.sha256,
    },
  };
}
