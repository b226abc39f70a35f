import { MigrationInterface, QueryRunner } from 'typeorm';
import { schemaOf } from '@flotilla/platform';

/**
 * The CPU guests get on each host (issue 6: a running VM moves live only to a host giving the same), as
 * its agent reports it. Hosts registered before read '' and no flags until their agent registers again.
 */
export class ComputeHostCpu1765100000000 implements MigrationInterface {
  name = 'ComputeHostCpu1765100000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE ${schemaOf(q)}.hosts
      ADD COLUMN cpu_model text NOT NULL DEFAULT '',
      ADD COLUMN cpu_flags jsonb NOT NULL DEFAULT '[]'`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE ${schemaOf(q)}.hosts DROP COLUMN cpu_model, DROP COLUMN cpu_flags`);
  }
}
