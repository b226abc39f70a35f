// The embedded database of `flotilla up`: PGlite served over the PostgreSQL wire protocol on loopback, data
// under <FLOTILLA_DATA_DIR>/db. Prints {"msg":"ready","url":…} once it accepts connections and runs until
// SIGTERM/SIGINT, then closes the database cleanly.
import * as path from 'node:path';
import { createLogger, startEmbeddedPostgres, type EmbeddedPostgres } from '@flotilla/platform';

const logger = createLogger('db');

function port(raw: string | undefined): number {
  if (raw === undefined || raw === '') return 7490;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 65535) {
    logger.fatal({ FLOTILLA_DB_PORT: raw }, 'FLOTILLA_DB_PORT must be a port number, 1..65535');
    process.exit(2);
  }
  return n;
}

async function main(): Promise<void> {
  const dataDir = path.join(path.resolve(process.env.FLOTILLA_DATA_DIR || './var'), 'db');
  let db: EmbeddedPostgres;
  try {
    db = await startEmbeddedPostgres({ dataDir, port: port(process.env.FLOTILLA_DB_PORT) });
  } catch (e) {
    logger.fatal({ err: e, dataDir }, 'cannot start the embedded database');
    process.exit(1);
  }
  process.stdout.write(`${JSON.stringify({ msg: 'ready', url: db.url })}\n`);
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'stopping');
    try {
      await db.stop();
      logger.info('stopped');
      process.exit(0);
    } catch (e) {
      logger.error({ err: e }, 'error while stopping');
      process.exit(1);
    }
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
}

void main();
