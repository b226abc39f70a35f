import * as fs from 'node:fs';

export interface EmbeddedPostgres {
  /** postgres:// URL of the wire-protocol server on loopback. */
  url: string;
  stop(): Promise<void>;
}

/**
 * PostgreSQL compiled to WASM (PGlite), served over the wire protocol on loopback so every service uses the
 * same `pg` driver as in production. All connections share one session (see docs/architecture.md): lock
 * contention is tested on real PostgreSQL.
 */
export async function startEmbeddedPostgres(options: {
  /** Data directory; omitted means in memory. */
  dataDir?: string;
  port?: number;
  maxConnections?: number;
}): Promise<EmbeddedPostgres> {
  // Loaded lazily: production deployments with DATABASE_URL never load the WASM build.
  const { PGlite } = await import('@electric-sql/pglite');
  const { PGLiteSocketServer, PGLiteSocketHandler } = await import('@electric-sql/pglite-socket');
  passWholeBatches(PGLiteSocketHandler.prototype);
  if (options.dataDir) fs.mkdirSync(options.dataDir, { recursive: true });
  const db = await PGlite.create(options.dataDir ?? 'memory://');
  const server = new PGLiteSocketServer({
    db,
    host: '127.0.0.1',
    port: options.port ?? 0,
    maxConnections: options.maxConnections ?? 64,
  });
  keepExtendedQueriesWhole((server as unknown as { queryQueue: unknown }).queryQueue);
  await server.start();
  return {
    url: `postgres://postgres:postgres@${server.getServerConn()}/postgres`,
    async stop() {
      await server.stop();
      await db.close();
    },
  };
}

/** The parts of pglite-socket 0.2.17's QueryQueueManager that the fix below replaces or uses. */
interface QueryQueue {
  db: {
    isInTransaction(): boolean;
    runExclusive<T>(fn: () => Promise<T>): Promise<T>;
    execProtocolRawStream(
      message: Uint8Array,
      options: { onRawData: (data: Uint8Array) => void },
    ): Promise<unknown>;
  };
  queue: Array<{
    handlerId: number;
    message: Uint8Array;
    resolve(bytes: number): void;
    reject(e: unknown): void;
    onData(data: Uint8Array): void;
  }>;
  processing: boolean;
  lastHandlerId: number | null;
  processQueue(): Promise<void>;
  clearQueueForHandler(handlerId: number): void;
}

/** The parts of pglite-socket 0.2.17's PGLiteSocketHandler that passWholeBatches replaces or uses. */
interface SocketHandler {
  id: number;
  socket?: { writable: boolean; write(data: Buffer, done: (e?: Error | null) => void): unknown };
  active: boolean;
  messageBuffer: Buffer;
  queryQueue: {
    enqueue(id: number, message: Uint8Array, onData: (data: Uint8Array) => void): Promise<number>;
  };
  handleSslRequest(): boolean;
  handleCancelRequest(): boolean;
  handleData(data: Buffer): Promise<number>;
}

const PROTOCOL_3 = 196608;

/**
 * pglite-socket 0.2.17 hands PGlite one protocol message at a time, each through the queue, the session's
 * lock and a WASM call, and waits for each before it reads the next: five of each for one parameterised
 * query (Parse, Bind, Describe, Execute, Sync). PGlite's main loop reads as many messages as it is given,
 * so this hands it each extended-protocol batch whole, up to its Sync (or a simple Query, or whatever else
 * comes), in one call.
 */
function passWholeBatches(handler: object): void {
  const h = handler as SocketHandler;
  if (
    typeof h.handleData !== 'function' ||
    typeof h.handleSslRequest !== 'function' ||
    typeof h.handleCancelRequest !== 'function'
  )
    throw new Error('@electric-sql/pglite-socket changed its socket handler: re-check passWholeBatches');
  h.handleData = async function handleData(this: SocketHandler, data: Buffer): Promise<number> {
    if (!this.socket || !this.active) return 0;
    this.messageBuffer = Buffer.concat([this.messageBuffer, data]);
    let written = 0;
    let writeError: Error | undefined;
    const onData = (out: Uint8Array) => {
      written += out.length;
      if (out.length > 0 && this.active && this.socket?.writable)
        this.socket.write(Buffer.from(out), (e) => {
          if (e) writeError = e;
        });
    };
    while (this.messageBuffer.length > 0 && this.active && this.socket) {
      if (this.handleSslRequest() || this.handleCancelRequest()) continue;
      const end = wholeMessagesEnd(this.messageBuffer);
      if (end === 0) break; // the rest of a message is still on its way
      const messages = this.messageBuffer.subarray(0, end);
      this.messageBuffer = this.messageBuffer.subarray(end);
      await this.queryQueue.enqueue(this.id, new Uint8Array(messages), onData);
      if (writeError) throw writeError;
    }
    return written;
  };
}

/**
 * Where the next group of whole messages ends: the startup message alone, or messages up to and including
 * the first that is not part of an extended-protocol batch (Sync, Query, Terminate…). 0: none is whole yet.
 */
export function wholeMessagesEnd(buffer: Buffer): number {
  if (isStartupMessage(buffer)) {
    const length = buffer.readInt32BE(0);
    return buffer.length >= length ? length : 0;
  }
  let end = 0;
  for (const message of typedMessages(buffer)) {
    end = message.end;
    if (!batchMessages.has(message.type)) break;
  }
  return end;
}

/** The type of the last message of a group (the startup message has none: 0). */
function lastMessageType(messages: Uint8Array): number {
  const view = Buffer.from(messages.buffer, messages.byteOffset, messages.byteLength);
  let type = 0;
  if (!isStartupMessage(view)) for (const message of typedMessages(view)) type = message.type;
  return type;
}

/** The startup message has no type byte: its length, then the protocol version. */
const isStartupMessage = (buffer: Buffer): boolean =>
  buffer.length >= 8 && buffer[0] === 0 && buffer.readInt32BE(4) === PROTOCOL_3;

/** The whole typed messages at the start of `buffer`: each one's type byte and where it ends. */
function* typedMessages(buffer: Buffer): Generator<{ type: number; end: number }> {
  let at = 0;
  while (at + 5 <= buffer.length) {
    const end = at + 1 + buffer.readInt32BE(at + 1);
    if (end > buffer.length) return;
    yield { type: buffer[at], end };
    at = end;
  }
}

/** Extended-protocol messages that leave a batch open until the client's Sync ('S'). */
const batchMessages = new Set(['P', 'B', 'D', 'E', 'C', 'H', 'F'].map((c) => c.charCodeAt(0)));
const sync = 'S'.charCodeAt(0);
const simpleQuery = 'Q'.charCodeAt(0);
const syncMessage = new Uint8Array([sync, 0, 0, 0, 4]);

/**
 * pglite-socket 0.2.17 serialises the shared PGlite session per protocol *message* and pins it to one
 * connection only inside a transaction. An extended-protocol batch (Parse/Bind/Execute/Sync) is not a
 * transaction, so concurrent connections interleave their batches and bind to each other's unnamed
 * statement (wrong parameters, "bind message supplies 2 parameters…"); and one failed message leaves the
 * queue marked busy forever (electric-sql/pglite#1046). This keeps each connection's batch whole — the
 * session stays with it from the first batch message to its Sync — and always frees the queue.
 */
function keepExtendedQueriesWhole(queue: unknown): void {
  const q = queue as QueryQueue;
  if (
    typeof q?.processQueue !== 'function' ||
    !Array.isArray(q.queue) ||
    typeof q.clearQueueForHandler !== 'function'
  )
    throw new Error('@electric-sql/pglite-socket changed its query queue: re-check keepExtendedQueriesWhole');
  const openBatches = new Set<number>();

  q.processQueue = async function processQueue(this: QueryQueue): Promise<void> {
    if (this.processing) return;
    this.processing = true;
    try {
      while (this.queue.length > 0) {
        const pinned =
          this.lastHandlerId !== null && (openBatches.has(this.lastHandlerId) || this.db.isInTransaction());
        const index = pinned ? this.queue.findIndex((m) => m.handlerId === this.lastHandlerId) : 0;
        // The session belongs to a connection that has not sent its next message yet: wait for it.
        if (index === -1) return;
        const [item] = this.queue.splice(index, 1);
        let bytes = 0;
        try {
          await this.db.runExclusive(() =>
            this.db.execProtocolRawStream(item.message, {
              onRawData: (data) => {
                bytes += data.length;
                item.onData(data);
              },
            }),
          );
        } catch (e) {
          item.reject(e);
          continue;
        } finally {
          const type = lastMessageType(item.message);
          if (batchMessages.has(type)) openBatches.add(item.handlerId);
          else if (type === sync || type === simpleQuery) openBatches.delete(item.handlerId);
          this.lastHandlerId = item.handlerId;
        }
        item.resolve(bytes);
      }
    } finally {
      this.processing = false;
    }
  };

  // A connection that goes away in the middle of a batch: end its batch for it, then serve the others.
  const clear = q.clearQueueForHandler.bind(q);
  q.clearQueueForHandler = function clearQueueForHandler(this: QueryQueue, handlerId: number): void {
    clear(handlerId);
    if (!openBatches.delete(handlerId)) return;
    void this.db
      .runExclusive(() => this.db.execProtocolRawStream(syncMessage, { onRawData: () => undefined }))
      .catch(() => undefined)
      .finally(() => void this.processQueue());
  };
}
