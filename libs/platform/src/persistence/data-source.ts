import { Client } from 'pg';
import {
  DataSource,
  EntityManager,
  EntitySchema,
  EntityTarget,
  MixedList,
  ObjectLiteral,
  QueryRunner,
} from 'typeorm';
import { Logger } from '../logging';
import { startEmbeddedPostgres } from './embedded-postgres';
import { OutboxEvent } from './outbox';

export interface DatabaseOptions {
  /** DATABASE_URL; empty starts an embedded PGlite under dataDir. */
  url: string;
  dataDir: string;
  /** The service's own schema: no other service reads it. */
  schema: string;
  // eslint-disable-next-line @typescript-eslint/no-unsafe-function-type
  entities: MixedList<Function | string | EntitySchema>;
  // eslint-disable-next-line @typescript-eslint/no-unsafe-function-type
  migrations: MixedList<Function | string>;
  poolMax?: number;
  logger: Logger;
}

export interface Database {
  dataSource: DataSource;
  schema: string;
  close(): Promise<void>;
}

/** Connects to PostgreSQL (or starts the embedded one), creates the schema and runs committed migrations. */
export async function openDatabase(options: DatabaseOptions): Promise<Database> {
  let url = options.url;
  let stopEmbedded: (() => Promise<void>) | undefined;
  if (!url) {
    const embedded = await startEmbeddedPostgres({ dataDir: `${options.dataDir}/db-${options.schema}` });
    url = embedded.url;
    stopEmbedded = embedded.stop;
    options.logger.info({ schema: options.schema }, 'DATABASE_URL unset: using an embedded PGlite database');
  }
  await ensureSchema(url, options.schema);
  const dataSource = new DataSource({
    type: 'postgres',
    url,
    schema: options.schema,
    // Every service has the transactional outbox that feeds its Watch streams.
    entities: [...(options.entities as unknown[]), OutboxEvent] as DatabaseOptions['entities'],
    migrations: options.migrations,
    migrationsTableName: 'migrations',
    migrationsTransactionMode: 'each',
    synchronize: false,
    installExtensions: false,
    uuidExtension: 'pgcrypto',
    extra: { max: options.poolMax ?? 8, connectionTimeoutMillis: 10_000 },
  });
  await dataSource.initialize();
  const ran = await dataSource.runMigrations();
  if (ran.length) options.logger.info({ migrations: ran.map((m) => m.name) }, 'database migrated');
  return {
    dataSource,
    schema: options.schema,
    async close() {
      if (dataSource.isInitialized) await dataSource.destroy();
      await stopEmbedded?.();
    },
  };
}

async function ensureSchema(url: string, schema: string): Promise<void> {
  const client = new Client({ connectionString: url, connectionTimeoutMillis: 10_000 });
  await client.connect();
  try {
    await client.query(`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(schema)}`);
  } finally {
    await client.end();
  }
}

/** The entity's table, schema-qualified and quoted, for raw SQL. */
export function quotedTable(m: EntityManager, entity: EntityTarget<ObjectLiteral>): string {
  return m
    .getRepository(entity)
    .metadata.tablePath.split('.')
    .map((part) => `"${part}"`)
    .join('.');
}

export function quoteIdent(name: string): string {
  if (!/^[a-z_][a-z0-9_]*$/.test(name)) throw new Error(`invalid SQL identifier ${name}`);
  return `"${name}"`;
}

/** Migrations write schema-qualified SQL: PGlite shares one session, so search_path is never changed. */
export function schemaOf(queryRunner: QueryRunner): string {
  const schema = (queryRunner.connection.options as { schema?: string }).schema;
  if (!schema) throw new Error('migrations need a data source with a schema');
  return quoteIdent(schema);
}
