import { MigrationInterface, QueryRunner } from 'typeorm';
import { schemaOf } from '@flotilla/platform';

/** The storage side of VM migrations: one row per migration, its copied disks in `copies`. */
export class CreateDiskMigrations1765000000000 implements MigrationInterface {
  name = 'CreateDiskMigrations1765000000000';

  async up(q: QueryRunner): Promise<void> {
    const s = schemaOf(q);
    await q.query(`CREATE TABLE ${s}.disk_migrations (
      migration_id uuid PRIMARY KEY,
      vm_id uuid NOT NULL,
      source_host_id uuid NOT NULL,
      destination_host_id uuid NOT NULL,
      state text NOT NULL CHECK (state IN ('PREPARED', 'COMMITTED', 'ABORTED', 'CLEANED')),
      copies jsonb NOT NULL,
      version int NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now(),
      updated_at timestamptz NOT NULL DEFAULT now()
    )`);
    // One migration of a VM's disks in flight at a time: a second prepare is refused by the database.
    await q.query(
      `CREATE UNIQUE INDEX disk_migrations_one_prepared ON ${s}.disk_migrations (vm_id) WHERE state = 'PREPARED'`,
    );
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TABLE ${schemaOf(q)}.disk_migrations`);
  }
}
