import { MigrationInterface, QueryRunner } from 'typeorm';
import { CreateOutbox1764000000000, createOperationsTable, schemaOf } from '@flotilla/platform';

/** Migrations (vm_migrations: TypeORM keeps its own schema history in "migrations") and their operations. */
export class MigrationInit1765000000000 implements MigrationInterface {
  name = 'MigrationInit1765000000000';

  async up(q: QueryRunner): Promise<void> {
    const s = schemaOf(q);
    await q.query(`CREATE TABLE ${s}.vm_migrations (
      id uuid PRIMARY KEY,
      name text NOT NULL,
      tenant_id text NOT NULL,
      labels jsonb NOT NULL,
      vm_id uuid NOT NULL,
      vm_name text NOT NULL,
      source_host_id text NOT NULL,
      destination_host_id text NOT NULL,
      mode text NOT NULL,
      with_storage boolean NOT NULL,
      requested_vdi_map jsonb NOT NULL,
      vdi_map jsonb NOT NULL,
      state text NOT NULL,
      state_reason text NOT NULL,
      phase text NOT NULL,
      step text NOT NULL,
      progress double precision NOT NULL,
      point_of_no_return_passed boolean NOT NULL,
      point_of_no_return_at timestamptz NULL,
      post_copy_started boolean NOT NULL,
      options jsonb NOT NULL,
      bandwidth_bytes_per_sec bigint NOT NULL,
      stats jsonb NOT NULL,
      phases jsonb NOT NULL,
      error jsonb NULL,
      operation_id uuid NOT NULL,
      evacuation_id text NOT NULL,
      source_host jsonb NULL,
      destination_host jsonb NULL,
      disk_plan jsonb NOT NULL,
      incoming jsonb NULL,
      pending jsonb NOT NULL,
      request_id text NULL,
      started_at timestamptz NULL,
      finished_at timestamptz NULL,
      version int NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now(),
      updated_at timestamptz NOT NULL DEFAULT now()
    )`);
    await q.query(
      `CREATE UNIQUE INDEX vm_migrations_request ON ${s}.vm_migrations (tenant_id, request_id) WHERE request_id IS NOT NULL`,
    );
    await q.query(`CREATE INDEX vm_migrations_created ON ${s}.vm_migrations (created_at DESC, id)`);
    await q.query(`CREATE INDEX vm_migrations_vm ON ${s}.vm_migrations (vm_id)`);
    // The run loop, the queue and the reconciler read what is not finished, or finished with leftovers.
    await q.query(
      `CREATE INDEX vm_migrations_open ON ${s}.vm_migrations (state) WHERE finished_at IS NULL OR pending <> '[]'::jsonb`,
    );
    await createOperationsTable(q, s);
  }

  async down(q: QueryRunner): Promise<void> {
    const s = schemaOf(q);
    await q.query(`DROP TABLE ${s}.operations, ${s}.vm_migrations`);
  }
}

export const migrationMigrations = [CreateOutbox1764000000000, MigrationInit1765000000000];
