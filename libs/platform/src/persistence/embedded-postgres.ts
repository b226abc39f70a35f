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
  const { PGLiteSocketServer } = await import('@electric-sql/pglite-socket');
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
          const type = item.message[0];
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
