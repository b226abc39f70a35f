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
  await server.start();
  return {
    url: `postgres://postgres:postgres@${server.getServerConn()}/postgres`,
    async stop() {
      await server.stop();
      await db.close();
    },
  };
}
