import { status } from '@grpc/grpc-js';
import { randomUUID } from 'node:crypto';
import * as os from 'node:os';
import { Column, Entity, MigrationInterface, PrimaryColumn, QueryRunner, UpdateDateColumn } from 'typeorm';
import { DomainError, ErrorCode } from '@flotilla/domain';
import { toGrpcStatus } from '../grpc/status';
import { createLogger } from '../logging';
import { testDatabases, uniqueSchema } from '../testing/databases';
import { Database, openDatabase, schemaOf } from './data-source';
import { updateVersioned, updateVersionedRow } from './versioned';

// Real: a versioned table on PGlite and PostgreSQL, transactions that overlap. Nothing is faked.

const int8 = { to: (v: number) => v, from: (v: string | null) => (v === null ? null : Number(v)) };

@Entity({ name: 'things' })
class Thing {
  @PrimaryColumn('uuid') id!: string;
  @Column('text') name!: string;
  @Column('jsonb') details!: { tags: string[]; nested: { n: number } };
  @Column({ name: 'size_bytes', type: 'bigint', transformer: int8 }) sizeBytes!: number;
  @Column({ name: 'done_at', type: 'timestamptz', nullable: true }) doneAt!: Date | null;
  @Column('int') version!: number;
  @UpdateDateColumn({ name: 'updated_at', type: 'timestamptz' }) updatedAt!: Date;
}

class CreateThings1764000000099 implements MigrationInterface {
  name = 'CreateThings1764000000099';
  async up(q: QueryRunner): Promise<void> {
    await q.query(
      `CREATE TABLE ${schemaOf(q)}.things (id uuid PRIMARY KEY, name text NOT NULL,
         details jsonb NOT NULL DEFAULT '{"tags":[],"nested":{"n":0}}', size_bytes bigint NOT NULL DEFAULT 0,
         done_at timestamptz, version int NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())`,
    );
  }
  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TABLE ${schemaOf(q)}.things`);
  }
}

describe.each(testDatabases())('updateVersioned on %s', (_db, url) => {
  let db: Database;

  beforeAll(async () => {
    db = await openDatabase({
      url,
      dataDir: os.tmpdir(),
      schema: uniqueSchema('versioned'),
      entities: [Thing],
      migrations: [CreateThings1764000000099],
      logger: createLogger('versioned-test', 'silent'),
    });
  });
  afterAll(async () => {
    await db?.dataSource.query(`DROP SCHEMA IF EXISTS "${db.schema}" CASCADE`);
    await db?.close();
  });

  const newThing = async (name: string) => {
    const thing = { id: randomUUID(), name, version: 1 };
    await db.dataSource.manager.insert(Thing, thing);
    return thing;
  };
  const read = (id: string) => db.dataSource.manager.findOneByOrFail(Thing, { id });
  const ref = (t: { id: string; version: number }) => ({ kind: 'thing', id: t.id, version: t.version });

  it('writes the change and bumps the version when the expected version is current', async () => {
    const thing = await newThing('before');
    const next = await updateVersioned(db.dataSource.manager, Thing, ref(thing), { name: 'after' });
    expect(next).toBe(2);
    expect(await read(thing.id)).toMatchObject({ name: 'after', version: 2 });
  });

  it.each([
    ['updateVersioned', updateVersioned],
    ['updateVersionedRow', updateVersionedRow],
  ] as const)(
    '%s rejects a stale version with CONFLICT, answered as ABORTED, and overwrites nothing',
    async (_name, update) => {
      const thing = await newThing('original');
      await updateVersioned(db.dataSource.manager, Thing, ref(thing), { name: 'first writer' });
      const refused = await (update as typeof updateVersionedRow)(db.dataSource.manager, Thing, ref(thing), {
        name: 'stale writer',
      }).catch((e: unknown) => e);
      expect(refused).toBeInstanceOf(DomainError);
      expect((refused as DomainError).code).toBe(ErrorCode.Conflict);
      expect((refused as DomainError).message).toContain('read it again and retry');
      expect(toGrpcStatus(refused as DomainError).code).toBe(status.ABORTED);
      expect(await read(thing.id)).toMatchObject({ name: 'first writer', version: 2 });
    },
  );

  it('lets one of two transactions racing from the same version win; the other gets ABORTED and loses nothing of the winner', async () => {
    const thing = await newThing('raced');
    const winner = db.dataSource.createQueryRunner();
    await winner.connect();
    await winner.startTransaction();
    await updateVersioned(winner.manager, Thing, ref(thing), { name: 'winner' });
    // The loser read version 1 too, and writes while the winner's transaction is still open.
    const loser = db.dataSource
      .transaction((m) => updateVersioned(m, Thing, ref(thing), { name: 'loser' }))
      .catch((e: unknown) => e);
    await winner.commitTransaction();
    await winner.release();
    const lost = await loser;
    expect(toGrpcStatus(lost as DomainError).code).toBe(status.ABORTED);
    expect(await read(thing.id)).toMatchObject({ name: 'winner', version: 2 });
  });

  it('answers updateVersionedRow with the row exactly as a read after the write returns it', async () => {
    const thing = await newThing('before');
    const doneAt = new Date('2026-11-27T10:11:12.345Z');
    const row = await updateVersionedRow(db.dataSource.manager, Thing, ref(thing), {
      name: 'after',
      details: { tags: ['a', 'b'], nested: { n: 7 } },
      sizeBytes: 5 * 2 ** 40,
      doneAt,
    });
    const stored = await read(thing.id);
    expect(row).toBeInstanceOf(Thing);
    expect(row).toEqual(stored);
    expect(row).toMatchObject({ name: 'after', version: 2, sizeBytes: 5 * 2 ** 40, doneAt });
    expect(row.updatedAt).toBeInstanceOf(Date);
    const cleared = await updateVersionedRow(db.dataSource.manager, Thing, ref(row), { doneAt: null });
    expect(cleared).toEqual(await read(thing.id));
    expect(cleared).toMatchObject({ doneAt: null, version: 3, details: { tags: ['a', 'b'] } });
  });

  it('refuses an update of a row that does not exist as a conflict, not a silent no-op', async () => {
    const refused = await updateVersioned(
      db.dataSource.manager,
      Thing,
      ref({ id: randomUUID(), version: 1 }),
      { name: 'x' },
    ).catch((e: unknown) => e);
    expect((refused as DomainError).code).toBe(ErrorCode.Conflict);
  });
});
