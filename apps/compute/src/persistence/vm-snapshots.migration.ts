import { MigrationInterface, QueryRunner } from 'typeorm';
import { schemaOf } from '@flotilla/platform';

/**
 * VM snapshots are VM records flagged is_snapshot (XAPI is-a-snapshot), with the VM they were taken of
 * and when. No foreign key on snapshot_of: a snapshot outlives the VM it was taken of.
 */
export class ComputeVmSnapshots1764700000000 implements MigrationInterface {
  name = 'ComputeVmSnapshots1764700000000';

  async up(q: QueryRunner): Promise<void> {
    const s = schemaOf(q);
    await q.query(`ALTER TABLE ${s}.vms
      ADD COLUMN is_snapshot boolean NOT NULL DEFAULT false,
      ADD COLUMN snapshot_of uuid NULL,
      ADD COLUMN snapshot_time timestamptz NULL`);
    await q.query(`CREATE INDEX vms_snapshot_of ON ${s}.vms (snapshot_of) WHERE snapshot_of IS NOT NULL`);
  }

  async down(q: QueryRunner): Promise<void> {
    const s = schemaOf(q);
    await q.query(`DROP INDEX ${s}.vms_snapshot_of`);
    await q.query(
      `ALTER TABLE ${s}.vms DROP COLUMN is_snapshot, DROP COLUMN snapshot_of, DROP COLUMN snapshot_time`,
    );
  }
}
