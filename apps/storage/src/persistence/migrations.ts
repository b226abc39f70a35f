import { MigrationInterface, QueryRunner } from 'typeorm';
import { CreateOutbox1764000000000, schemaOf, createOperationsTable } from '@flotilla/platform';

/** The image catalogue and the storage service's operation records. */
export class StorageInit1764200000000 implements MigrationInterface {
  name = 'StorageInit1764200000000';

  async up(q: QueryRunner): Promise<void> {
    const s = schemaOf(q);
    await q.query(`CREATE TABLE ${s}.images (
      id uuid PRIMARY KEY,
      name text NOT NULL,
      tenant_id text NOT NULL,
      labels jsonb NOT NULL,
      description text NOT NULL,
      kind text NOT NULL,
      visibility text NOT NULL,
      state text NOT NULL,
      state_reason text NOT NULL,
      os_type text NOT NULL,
      architecture text NOT NULL,
      min_disk_bytes bigint NOT NULL,
      min_memory_mib bigint NOT NULL,
      sha256 text NOT NULL,
      vdi_id uuid NULL,
      virtual_size_bytes bigint NOT NULL,
      size_bytes bigint NOT NULL,
      kernel_path text NOT NULL,
      initrd_path text NOT NULL,
      initrd_sha256 text NOT NULL,
      cmdline text NOT NULL,
      request_tenant_id text NOT NULL,
      request_id text NULL,
      version int NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now(),
      updated_at timestamptz NOT NULL DEFAULT now()
    )`);
    // Names are unique in the pool (VMs name their image), whoever owns the image.
    await q.query(`CREATE UNIQUE INDEX images_name ON ${s}.images (name)`);
    await q.query(
      `CREATE UNIQUE INDEX images_request ON ${s}.images (request_tenant_id, request_id) WHERE request_id IS NOT NULL`,
    );
    await createOperationsTable(q, s);
  }

  async down(q: QueryRunner): Promise<void> {
    const s = schemaOf(q);
    await q.query(`DROP TABLE ${s}.operations, ${s}.images`);
  }
}

export const storageMigrations = [CreateOutbox1764000000000, StorageInit1764200000000];
