import { MigrationInterface, QueryRunner } from 'typeorm';
import { schemaOf } from '@flotilla/platform';

/**
 * A VM held by a live migration (issue 6): the migration's id, and the other host of the move (the
 * destination before the commit, the source after it), which holds the VM's vCPUs and memory as well
 * until the migration ends. migration_committed says which of the two it is.
 */
export class ComputeVmMigration1765000000000 implements MigrationInterface {
  name = 'ComputeVmMigration1765000000000';

  async up(q: QueryRunner): Promise<void> {
    const s = schemaOf(q);
    await q.query(`ALTER TABLE ${s}.vms
      ADD COLUMN migration_id uuid NULL,
      ADD COLUMN migration_host_id uuid NULL REFERENCES ${s}.hosts(id),
      ADD COLUMN migration_committed boolean NOT NULL DEFAULT false`);
    await q.query(
      `CREATE INDEX vms_migration_host ON ${s}.vms (migration_host_id) WHERE migration_host_id IS NOT NULL`,
    );
  }

  async down(q: QueryRunner): Promise<void> {
    const s = schemaOf(q);
    await q.query(`DROP INDEX ${s}.vms_migration_host`);
    await q.query(
      `ALTER TABLE ${s}.vms DROP COLUMN migration_id, DROP COLUMN migration_host_id, DROP COLUMN migration_committed`,
    );
  }
}
