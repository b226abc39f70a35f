import { MigrationInterface, QueryRunner } from 'typeorm';
import { CreateOutbox1764000000000, schemaOf, createOperationsTable } from '@flotilla/platform';
import { CreateDiskMigrations1765000000000 } from '../vbds/disk-migration.migration';
import { CreateVbds1764600000000 } from '../vbds/vbd.migration';

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

/**
 * Storage repositories and VDIs (every chain node has a row). Names of SRs are unique in the pool; a file
 * belongs to one record; request ids make creates idempotent per tenant.
 */
export class StorageSrsVdis1764500000000 implements MigrationInterface {
  name = 'StorageSrsVdis1764500000000';

  async up(q: QueryRunner): Promise<void> {
    const s = schemaOf(q);
    await q.query(`CREATE TABLE ${s}.srs (
      id uuid PRIMARY KEY,
      name text NOT NULL,
      tenant_id text NOT NULL,
      labels jsonb NOT NULL,
      description text NOT NULL,
      type text NOT NULL,
      host_id uuid NULL,
      path text NOT NULL,
      state text NOT NULL,
      state_reason text NOT NULL,
      capacity_bytes bigint NOT NULL,
      free_bytes bigint NOT NULL,
      physical_utilisation_bytes bigint NOT NULL,
      overprovision_ratio double precision NOT NULL,
      hosts jsonb NOT NULL,
      created_directory boolean NOT NULL,
      current_operation_id uuid NULL,
      current_operation_kind text NULL,
      last_scanned_at timestamptz NULL,
      request_tenant_id text NOT NULL,
      request_id text NULL,
      version int NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now(),
      updated_at timestamptz NOT NULL DEFAULT now()
    )`);
    await q.query(`CREATE UNIQUE INDEX srs_name ON ${s}.srs (name)`);
    await q.query(
      `CREATE UNIQUE INDEX srs_request ON ${s}.srs (request_tenant_id, request_id) WHERE request_id IS NOT NULL`,
    );
    await q.query(`CREATE TABLE ${s}.vdis (
      id uuid PRIMARY KEY,
      name text NOT NULL,
      tenant_id text NOT NULL,
      labels jsonb NOT NULL,
      description text NOT NULL,
      sr_id uuid NOT NULL REFERENCES ${s}.srs (id),
      state text NOT NULL,
      state_reason text NOT NULL,
      virtual_size_bytes bigint NOT NULL,
      physical_utilisation_bytes bigint NOT NULL,
      file text NOT NULL,
      parent_id uuid NULL,
      is_snapshot boolean NOT NULL,
      snapshot_of uuid NULL,
      snapshot_time timestamptz NULL,
      read_only boolean NOT NULL,
      sharable boolean NOT NULL,
      managed boolean NOT NULL,
      image_id uuid NULL,
      image_base boolean NOT NULL,
      current_operation_id uuid NULL,
      reserved_physical_bytes bigint NOT NULL,
      request_tenant_id text NOT NULL,
      request_id text NULL,
      version int NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now(),
      updated_at timestamptz NOT NULL DEFAULT now()
    )`);
    // One record per file: two records never delete or write the same file.
    await q.query(`CREATE UNIQUE INDEX vdis_file ON ${s}.vdis (sr_id, file) WHERE file <> ''`);
    // One cached base of an image per SR.
    await q.query(`CREATE UNIQUE INDEX vdis_image_base ON ${s}.vdis (sr_id, image_id) WHERE image_base`);
    await q.query(`CREATE INDEX vdis_parent ON ${s}.vdis (parent_id)`);
    await q.query(`CREATE INDEX vdis_snapshot_of ON ${s}.vdis (snapshot_of)`);
    await q.query(
      `CREATE UNIQUE INDEX vdis_request ON ${s}.vdis (request_tenant_id, request_id) WHERE request_id IS NOT NULL`,
    );
  }

  async down(q: QueryRunner): Promise<void> {
    const s = schemaOf(q);
    await q.query(`DROP TABLE ${s}.vdis, ${s}.srs`);
  }
}

export const storageMigrations = [
  CreateOutbox1764000000000,
  StorageInit1764200000000,
  StorageSrsVdis1764500000000,
  CreateVbds1764600000000,
  CreateDiskMigrations1765000000000,
];
