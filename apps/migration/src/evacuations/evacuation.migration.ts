import { MigrationInterface, QueryRunner } from 'typeorm';
import { schemaOf } from '@flotilla/platform';

/** The evacuations table (the operations table comes with the migration service's own migrations). */
export class CreateEvacuations1765100000000 implements MigrationInterface {
  name = 'CreateEvacuations1765100000000';

  async up(q: QueryRunner): Promise<void> {
    const s = schemaOf(q);
    await q.query(`CREATE TABLE ${s}.evacuations (
      id uuid PRIMARY KEY,
      name text NOT NULL,
      tenant_id text NOT NULL,
      labels jsonb NOT NULL,
      host_id uuid NOT NULL,
      host_name text NOT NULL,
      state text NOT NULL,
      state_reason text NOT NULL,
      max_parallel int NOT NULL CHECK (max_parallel BETWEEN 1 AND 16),
      on_blocked text NOT NULL,
      with_storage boolean NOT NULL,
      enter_maintenance boolean NOT NULL,
      migration_options jsonb NOT NULL,
      progress double precision NOT NULL,
      vms jsonb NOT NULL,
      error jsonb NULL,
      operation_id uuid NOT NULL,
      request_id text NULL,
      started_at timestamptz NOT NULL,
      finished_at timestamptz NULL,
      version int NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now(),
      updated_at timestamptz NOT NULL DEFAULT now()
    )`);
    // One evacuation at a time per host, decided by the database: a concurrent second ask returns the first.
    await q.query(
      `CREATE UNIQUE INDEX evacuations_running_host ON ${s}.evacuations (host_id) WHERE state IN ('RUNNING', 'CANCELLING')`,
    );
    await q.query(
      `CREATE UNIQUE INDEX evacuations_request ON ${s}.evacuations (request_id) WHERE request_id IS NOT NULL`,
    );
    await q.query(`CREATE INDEX evacuations_created ON ${s}.evacuations (created_at DESC, id)`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TABLE ${schemaOf(q)}.evacuations`);
  }
}
