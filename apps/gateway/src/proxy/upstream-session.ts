import * as grpc from '@grpc/grpc-js';
import * as http2 from 'node:http2';
import { TokenBucket } from '@flotilla/platform';

const {
  HTTP2_HEADER_STATUS,
  NGHTTP2_CANCEL,
  NGHTTP2_ENHANCE_YOUR_CALM,
  NGHTTP2_FLAG_END_STREAM,
  NGHTTP2_INADEQUATE_SECURITY,
  NGHTTP2_NO_ERROR,
  NGHTTP2_REFUSED_STREAM,
} = http2.constants;

/** Reply of one unary call: `null` and the undecoded message, or the upstream's status and trailers. */
export type UnaryDone = (status: grpc.StatusObject | null, reply?: Buffer) => void;

export interface UpstreamSessionOptions {
  /** host:port of the pool service. */
  address: string;
  /** Largest reply accepted, bytes (as grpc.max_receive_message_length). */
  maxReceiveBytes: number;
  /** A PING every this often while the session is open; no answer within keepaliveTimeoutMs closes it. */
  keepaliveMs: number;
  keepaliveTimeoutMs: number;
}

/** Headers of the HTTP/2 response that are transport, not the service's metadata. */
const transportHeaders = [
  'grpc-status',
  'grpc-message',
  'content-type',
  'grpc-encoding',
  'grpc-accept-encoding',
];

/**
 * Resets (RST_STREAM) one session may send, a burst and a rate: half of what Node's HTTP/2 server takes
 * before it ends the session (nghttp2's defence against rapid resets, CVE-2023-44487: about 1,000 at once,
 * then 33 a second). Every relayed call of every caller shares the session, so a burst of calls that their
 * callers gave up on (a deadline storm under load) must not take the others down with it.
 */
export const RESET_BURST = 500;
export const RESETS_PER_SECOND = 16;

/**
 * Unary gRPC calls to one pool service over one reused HTTP/2 session (Node's `http2`, no grpc-js client
 * stack). The message is framed and unframed here (5-byte prefix, never compressed), the deadline travels
 * as `grpc-timeout` and is also enforced locally, and the status, message and custom trailers come back
 * as grpc-js's client would report them. The session is opened on first use and replaced as soon as it
 * closes or receives GOAWAY, so a restarted service is reached by the next call (no backoff); a call that
 * the server refused before reading it (REFUSED_STREAM, or a session that is going away) is sent once more
 * on a new session, as grpc-js's transparent retry does.
 *
 * The gateway relays most calls this way because grpc-js's client side (call stack, resolving and
 * load-balancing layers, per-call timers and listeners) was a large share of its CPU per relayed call.
 */
export class UpstreamSession {
  private session?: http2.ClientHttp2Session;
  private readonly authority: string;
  private readonly resets = new WeakMap<http2.ClientHttp2Session, TokenBucket>();

  constructor(private readonly o: UpstreamSessionOptions) {
    this.authority = `http://${o.address}`;
  }

  /**
   * Sends `message` (unframed) to `path` with `headers` (already the call's metadata as HTTP/2 headers).
   * `deadline` is epoch ms (Infinity for none). Returns a function that cancels the call (CANCELLED).
   */
  unary(
    path: string,
    message: Buffer,
    headers: http2.OutgoingHttpHeaders,
    deadline: number,
    done: UnaryDone,
  ): () => void {
    return new UnaryCall(this, path, message, headers, deadline, done).cancel;
  }

  /** The open session, or a new one. */
  current(): http2.ClientHttp2Session {
    const s = this.session;
    if (s && !s.closed && !s.destroyed) return s;
    return this.open();
  }

  /** Drops the session if it is still `s` (after a refused stream), so the next call opens a new one. */
  drop(s: http2.ClientHttp2Session): void {
    if (this.session === s) this.session = undefined;
  }

  /**
   * Takes one reset from the budget of `s`, for a call that nobody waits for any more; false past the budget.
   * Such a call is then left to the server, which ends it at the deadline it was sent with (grpc-timeout) or
   * answers, and the answer is dropped.
   */
  takeReset(s: http2.ClientHttp2Session): boolean {
    let budget = this.resets.get(s);
    if (!budget) this.resets.set(s, (budget = new TokenBucket(RESET_BURST, RESETS_PER_SECOND)));
    return budget.take();
  }

  get maxReceiveBytes(): number {
    return this.o.maxReceiveBytes;
  }

  close(): void {
    const s = this.session;
    this.session = undefined;
    s?.close();
  }

  private open(): http2.ClientHttp2Session {
    const s = http2.connect(this.authority, { settings: { enablePush: false } });
    this.session = s;
    const forget = () => this.drop(s);
    // A failed or lost connection surfaces on its streams (UNAVAILABLE); the session only has to go.
    s.on('error', forget);
    s.on('goaway', forget);
    s.on('close', () => {
      forget();
      clearInterval(keepalive);
    });
    const keepalive = setInterval(() => {
      // 'close' comes after destroy() on a later turn: a session on its way out is not pinged (ping throws).
      if (s.destroyed || s.closed) return clearInterval(keepalive);
      const timeout = setTimeout(() => s.destroy(), this.o.keepaliveTimeoutMs);
      const sent = s.ping((err) => {
        clearTimeout(timeout);
        if (err) s.destroy();
      });
      if (!sent) clearTimeout(timeout);
    }, this.o.keepaliveMs);
    keepalive.unref();
    return s;
  }
}

/** One unary call; it reports exactly once, whichever of reply, deadline, cancel or failure comes first. */
class UnaryCall {
  /** The stream of the call once sent, and the session it went on. */
  private sent?: { stream: http2.ClientHttp2Stream; session: http2.ClientHttp2Session };
  private timer?: NodeJS.Timeout;
  private finished = false;
  private retried = false;
  private httpStatus = 0;
  private statusHeaders?: http2.IncomingHttpHeaders;
  private chunks: Buffer[] = [];
  private received = 0;
  private failure?: Error;

  constructor(
    private readonly upstream: UpstreamSession,
    private readonly path: string,
    private readonly message: Buffer,
    private readonly metadata: http2.OutgoingHttpHeaders,
    deadline: number,
    private readonly done: UnaryDone,
  ) {
    const remaining = deadline - Date.now();
    if (remaining <= 0) {
      this.finish(status(grpc.status.DEADLINE_EXCEEDED, 'Deadline exceeded'));
      return;
    }
    if (Number.isFinite(remaining)) {
      this.metadata['grpc-timeout'] = grpcTimeout(remaining);
      this.timer = setTimeout(
        () => this.abort(grpc.status.DEADLINE_EXCEEDED, 'Deadline exceeded'),
        remaining,
      );
    }
    this.send();
  }

  readonly cancel = (): void => this.abort(grpc.status.CANCELLED, 'Cancelled on client');

  private send(): void {
    let session: http2.ClientHttp2Session | undefined;
    let stream: http2.ClientHttp2Stream;
    try {
      session = this.upstream.current();
      stream = session.request({
        ...this.metadata,
        ':method': 'POST',
        ':path': this.path,
        'content-type': 'application/grpc',
        te: 'trailers',
      });
    } catch (e) {
      // The session is going away or already gone: nothing was sent.
      if (session) this.upstream.drop(session);
      if (session && !this.retried) {
        this.retried = true;
        this.send();
      } else this.finish(status(grpc.status.UNAVAILABLE, (e as Error).message));
      return;
    }
    this.sent = { stream, session };
    stream.on('response', (headers, flags) => {
      this.httpStatus = Number(headers[HTTP2_HEADER_STATUS]);
      // Trailers-only (an error before any message): the status is in these headers.
      if (flags & NGHTTP2_FLAG_END_STREAM) this.statusHeaders = headers;
    });
    stream.on('data', (chunk: Buffer) => {
      if (this.finished) return; // given up on: what still comes is read (flow control) and dropped
      this.received += chunk.length;
      if (this.received > this.upstream.maxReceiveBytes + 5)
        this.abort(
          grpc.status.RESOURCE_EXHAUSTED,
          `Received message larger than max (${this.received - 5} vs ${this.upstream.maxReceiveBytes})`,
        );
      else this.chunks.push(chunk);
    });
    stream.on('trailers', (trailers) => (this.statusHeaders = trailers));
    stream.on('error', (e: Error) => (this.failure = e));
    stream.on('close', () => this.closed(stream, session));
    const frame = Buffer.allocUnsafe(5 + this.message.length);
    frame[0] = 0;
    frame.writeUInt32BE(this.message.length, 1);
    this.message.copy(frame, 5);
    stream.end(frame);
  }

  private closed(stream: http2.ClientHttp2Stream, session: http2.ClientHttp2Session): void {
    if (this.finished) return;
    const h = this.statusHeaders;
    if (h && h['grpc-status'] !== undefined) return this.finish(this.fromStatus(h));
    const rst = stream.rstCode;
    if (rst === NGHTTP2_REFUSED_STREAM && !this.retried) {
      // The server read nothing of it: once more on a new session.
      this.retried = true;
      this.upstream.drop(session);
      this.chunks = [];
      this.received = 0;
      return this.send();
    }
    if (this.httpStatus && this.httpStatus !== 200) return this.finish(fromHttpStatus(this.httpStatus));
    // A connection that failed or dropped ends its streams with CANCEL (Node) or a session error.
    if (session.destroyed || this.failure || rst === NGHTTP2_CANCEL)
      return this.finish(
        status(
          grpc.status.UNAVAILABLE,
          this.failure ? `Connection dropped: ${this.failure.message}` : 'Connection dropped',
        ),
      );
    this.finish(fromRstCode(rst));
  }

  private fromStatus(h: http2.IncomingHttpHeaders): grpc.StatusObject {
    const code = Number(h['grpc-status']);
    const metadata = grpc.Metadata.fromHttp2Headers(h);
    for (const k of transportHeaders) metadata.remove(k);
    if (!(code in grpc.status) || code !== Math.floor(code))
      return {
        code: grpc.status.UNKNOWN,
        details: `Invalid grpc-status ${String(h['grpc-status'])}`,
        metadata,
      };
    if (code !== grpc.status.OK) return { code, details: decodeMessage(h['grpc-message']), metadata };
    return { code, details: '', metadata };
  }

  /** OK from the server still needs exactly one uncompressed message. */
  private finish(s: grpc.StatusObject): void {
    if (this.finished) return;
    this.finished = true;
    if (this.timer) clearTimeout(this.timer);
    if (s.code !== grpc.status.OK) return this.done(s);
    const body = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks);
    this.chunks = [];
    if (body.length < 5)
      return this.done({
        code: grpc.status.UNIMPLEMENTED,
        details: 'No message received',
        metadata: s.metadata,
      });
    if (body[0] !== 0)
      return this.done(status(grpc.status.INTERNAL, 'Received a compressed message that was not asked for'));
    const length = body.readUInt32BE(1);
    if (body.length !== 5 + length)
      return this.done(status(grpc.status.INTERNAL, 'Received an incomplete or more than one message'));
    this.done(null, body.subarray(5));
  }

  private abort(code: grpc.status, details: string): void {
    if (this.finished) return;
    this.finish(status(code, details));
    const sent = this.sent;
    if (sent && !sent.stream.closed && this.upstream.takeReset(sent.session))
      sent.stream.close(NGHTTP2_CANCEL);
  }
}

function status(code: grpc.status, details: string): grpc.StatusObject {
  return { code, details, metadata: new grpc.Metadata() };
}

/** grpc-timeout: at most 8 digits and a unit. */
export function grpcTimeout(ms: number): string {
  const m = Math.max(1, Math.ceil(ms));
  return m < 1e8 ? `${m}m` : `${Math.min(99_999_999, Math.ceil(m / 1000))}S`;
}

function decodeMessage(v: string | string[] | undefined): string {
  const s = Array.isArray(v) ? v.join(',') : (v ?? '');
  try {
    return decodeURI(s);
  } catch {
    return s;
  }
}

/** As grpc-js maps an HTTP status without a gRPC status. */
function fromHttpStatus(code: number): grpc.StatusObject {
  const details = `Received HTTP status code ${code}`;
  const map: Record<number, grpc.status> = {
    400: grpc.status.INTERNAL,
    401: grpc.status.UNAUTHENTICATED,
    403: grpc.status.PERMISSION_DENIED,
    404: grpc.status.UNIMPLEMENTED,
    429: grpc.status.UNAVAILABLE,
    502: grpc.status.UNAVAILABLE,
    503: grpc.status.UNAVAILABLE,
    504: grpc.status.UNAVAILABLE,
  };
  return status(map[code] ?? grpc.status.UNKNOWN, details);
}

/** As grpc-js maps a stream reset without a gRPC status. */
function fromRstCode(rst: number): grpc.StatusObject {
  switch (rst) {
    case NGHTTP2_NO_ERROR:
      return status(
        grpc.status.INTERNAL,
        `Received RST_STREAM with code ${rst} (Call ended without gRPC status)`,
      );
    case NGHTTP2_REFUSED_STREAM:
      return status(grpc.status.UNAVAILABLE, 'Stream refused by server');
    case NGHTTP2_ENHANCE_YOUR_CALM:
      return status(grpc.status.RESOURCE_EXHAUSTED, 'Bandwidth exhausted or memory limit exceeded');
    case NGHTTP2_INADEQUATE_SECURITY:
      return status(grpc.status.PERMISSION_DENIED, 'Protocol not secure enough');
    default:
      return status(grpc.status.INTERNAL, `Received RST_STREAM with code ${rst}`);
  }
}
