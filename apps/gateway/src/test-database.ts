import * as os from 'node:os';
import { createLogger, Database, openDatabase, uniqueSchema } from '@flotilla/platform';
import { gatewayEntities, gatewayMigrations } from './persistence';

/** For tests: the gateway's tables, migrated, in a schema of their own; `drop` removes it and closes. */
export async function openGatewayTestDatabase(
  url: string,
  name: string,
): Promise<{ db: Database; drop(): Promise<void> }> {
  const db = await openDatabase({
    url,
    dataDir: os.tmpdir(),
    schema: uniqueSchema(name),
    entities: gatewayEntities,
    migrations: gatewayMigrations,
    logger: createLogger(`${name}-test`, 'silent'),
  });
  return {
    db,
    async drop() {
      await db.dataSource.query(`DROP SCHEMA IF EXISTS "${db.schema}" CASCADE`);
      await db.close();
    },
  };
}
