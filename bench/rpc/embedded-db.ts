/**
 * Child process of the RPC benchmark when no PostgreSQL is available: the embedded PGlite served over the
 * wire protocol (as `flotilla up` does). Prints `{"ready":true,"url":…}` once it accepts connections.
 * Usage: node embedded-db.js [dataDir]
 */
import { startEmbeddedPostgres } from '@flotilla/platform';

async function main(): Promise<void> {
  const db = await startEmbeddedPostgres({ dataDir: process.argv[2] || undefined, maxConnections: 64 });
  process.once('SIGTERM', () => {
    void db.stop().finally(() => process.exit(0));
    setTimeout(() => process.exit(0), 3000).unref();
  });
  process.stdout.write(`${JSON.stringify({ ready: true, url: db.url })}\n`);
}

if (require.main === module) {
  main().catch((e: unknown) => {
    process.stderr.write(`embedded-db: ${e instanceof Error ? e.stack : String(e)}\n`);
    process.exit(1);
  });
}
