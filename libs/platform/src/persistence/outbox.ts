import {
  Column,
  CreateDateColumn,
  Entity,
  EntityManager,
  Index,
  MigrationInterface,
  PrimaryGeneratedColumn,
  QueryRunner,
} from 'typeorm';
import { quotedTable, schemaOf } from './data-source';

export type ChangeType = 'CREATED' | 'UPDATED' | 'DELETED';

/** One committed change, written in the same transaction as the change itself (transactional outbox). */
@Entity({ name: 'events' })
@Index(['createdAt'])
export class OutboxEvent {
  /** Commit-ordered sequence: the Watch resume token. bigint comes back from pg as a string. */
  @PrimaryGeneratedColumn('increment', { type: 'bigint' })
  seq!: string;

  @Column({ type: 'text' })
  kind!: string;

  @Column({ type: 'text' })
  type!: ChangeType;

  @Column({ name: 'resource_id', type: 'text' })
  resourceId!: string;

  @Column({ name: 'tenant_id', type: 'text', default: '' })
  tenantId!: string;

  /** The resource as it was after the change. */
  @Column({ type: 'jsonb' })
  payload!: unknown;

  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' })
  createdAt!: Date;
}

export interface NewEvent {
  kind: string;
  type: ChangeType;
  resourceId: string;
  tenantId?: string;
  payload: unknown;
}

/**
 * Appends events inside the caller's transaction. The transaction-scoped advisory lock makes sequence
 * numbers commit in order, so a reader that saw seq N never later finds a newly committed seq below N.
 * Call it last in the transaction: the lock is held until commit.
 */
export async function appendEvents(manager: EntityManager, events: NewEvent[]): Promise<void> {
  if (!events.length) return;
  if (!manager.queryRunner?.isTransactionActive)
    throw new Error('appendEvents must run inside a transaction');
  const table = quotedTable(manager, OutboxEvent);
  // One round trip: every output row of the join needs the lock's row, so the lock is held before the
  // first sequence number is drawn.
  await manager.query(
    `INSERT INTO ${table} (kind, type, resource_id, tenant_id, payload)
     SELECT e.doc->>'kind', e.doc->>'type', e.doc->>'resource_id', e.doc->>'tenant_id', e.doc->'payload'
       FROM (SELECT pg_advisory_xact_lock(hashtext($1))) AS lock,
            jsonb_array_elements($2::jsonb) WITH ORDINALITY AS e(doc, n)
      ORDER BY e.n`,
    [
      table,
      JSON.stringify(
        events.map((e) => ({
          kind: e.kind,
          type: e.type,
          resource_id: e.resourceId,
          tenant_id: e.tenantId ?? '',
          payload: e.payload,
        })),
      ),
    ],
  );
}

/**
 * For writes done in one statement (a data-modifying CTE in autocommit): the CTE body that appends the rows
 * of `rowsSql` (columns ord, kind, type, resource_id, tenant_id, payload; appended in `ord` order) under the
 * same transaction-scoped lock as appendEvents, taken only after `afterSql` (a subquery the lock waits for,
 * e.g. the CTE that inserts the changed rows: unique-index waits must come before the lock, never while it
 * is held); nothing is locked when `afterSql` has no rows. `keyParam` is the placeholder bound to
 * outboxLockKey(). The lock is held until the statement commits.
 */
export function appendEventsStatement(opts: {
  table: string;
  keyParam: string;
  afterSql: string;
  rowsSql: string;
}): string {
  return `INSERT INTO ${opts.table} (kind, type, resource_id, tenant_id, payload)
    SELECT e.kind, e.type, e.resource_id, e.tenant_id, e.payload
      FROM (SELECT pg_advisory_xact_lock(hashtext(${opts.keyParam}))
              FROM (SELECT count(*) AS n FROM ${opts.afterSql}) c WHERE c.n > 0) AS lock,
           (${opts.rowsSql}) AS e
     ORDER BY e.ord`;
}

/** The value appendEventsStatement's keyParam must be bound to: the lock appendEvents takes. */
export function outboxLockKey(manager: EntityManager): string {
  return quotedTable(manager, OutboxEvent);
}

export class CreateOutbox1764000000000 implements MigrationInterface {
  name = 'CreateOutbox1764000000000';

  async up(q: QueryRunner): Promise<void> {
    const s = schemaOf(q);
    await q.query(`CREATE TABLE ${s}.events (
      seq bigserial PRIMARY KEY,
      kind text NOT NULL,
      type text NOT NULL,
      resource_id text NOT NULL,
      tenant_id text NOT NULL DEFAULT '',
      payload jsonb NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now()
    )`);
    await q.query(`CREATE INDEX events_created_at ON ${s}.events (created_at)`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TABLE ${schemaOf(q)}.events`);
  }
}
