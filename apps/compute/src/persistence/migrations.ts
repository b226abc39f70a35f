import { MigrationInterface, QueryRunner } from 'typeorm';
import { CreateOutbox1764000000000, schemaOf, createOperationsTable } from '@flotilla/platform';
import { ComputeHostCpu1765100000000 } from './host-cpu.migration';
import { ComputeVmMigration1765000000000 } from './vm-migration.migration';
import { ComputeVmSnapshots1764700000000 } from './vm-snapshots.migration';

export class ComputeInit1764000000001 implements MigrationInterface {
  name = 'ComputeInit1764000000001';

  async up(q: QueryRunner): Promise<void> {
    const s = schemaOf(q);
    await q.query(`CREATE TABLE ${s}.hosts (
      id uuid PRIMARY KEY,
      name text NOT NULL UNIQUE,
      address text NOT NULL,
      pool text NOT NULL,
      admin_state text NOT NULL,
      down boolean NOT NULL,
      state_reason text NOT NULL DEFAULT '',
      driver text NOT NULL,
      accelerator text NOT NULL,
      cpus int NOT NULL,
      memory_mib bigint NOT NULL,
      cpu_overcommit_ratio double precision NOT NULL,
      memory_overcommit_ratio double precision NOT NULL,
      labels jsonb NOT NULL,
      last_heartbeat_at timestamptz NOT NULL,
      epoch bigint NOT NULL,
      version int NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now(),
      updated_at timestamptz NOT NULL DEFAULT now()
    )`);
    await q.query(`CREATE TABLE ${s}.flavors (
      id uuid PRIMARY KEY,
      name text NOT NULL UNIQUE,
      vcpus int NOT NULL,
      memory_mib bigint NOT NULL,
      root_disk_gib bigint NOT NULL,
      version int NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now()
    )`);
    await q.query(`CREATE TABLE ${s}.vms (
      id uuid PRIMARY KEY,
      name text NOT NULL,
      tenant_id text NOT NULL,
      labels jsonb NOT NULL,
      flavor_id uuid NULL REFERENCES ${s}.flavors(id),
      vcpus int NOT NULL,
      memory_mib bigint NOT NULL,
      root_disk_gib bigint NOT NULL,
      boot jsonb NOT NULL,
      power_state text NOT NULL,
      power_state_reason text NOT NULL DEFAULT '',
      host_id uuid NULL REFERENCES ${s}.hosts(id),
      current_operation_id uuid NULL,
      anti_affinity_group text NOT NULL DEFAULT '',
      required_host_labels jsonb NOT NULL,
      request_id text NULL,
      version int NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now(),
      updated_at timestamptz NOT NULL DEFAULT now()
    )`);
    await q.query(`CREATE UNIQUE INDEX vms_tenant_name ON ${s}.vms (tenant_id, name)`);
    await q.query(
      `CREATE UNIQUE INDEX vms_tenant_request ON ${s}.vms (tenant_id, request_id) WHERE request_id IS NOT NULL`,
    );
    await q.query(`CREATE INDEX vms_host ON ${s}.vms (host_id) WHERE host_id IS NOT NULL`);
    await createOperationsTable(q, s);
    // The default flavors every pool starts with (OpenStack's classic m1 sizes, smaller at the bottom).
    await q.query(`INSERT INTO ${s}.flavors (id, name, vcpus, memory_mib, root_disk_gib, version) VALUES
      (gen_random_uuid(), 'm1.tiny', 1, 256, 1, 1),
      (gen_random_uuid(), 'm1.small', 1, 512, 10, 1),
      (gen_random_uuid(), 'm1.medium', 2, 2048, 20, 1),
      (gen_random_uuid(), 'm1.large', 4, 8192, 40, 1),
      (gen_random_uuid(), 'm1.xlarge', 8, 16384, 80, 1)`);
  }

  async down(q: QueryRunner): Promise<void> {
    const s = schemaOf(q);
    await q.query(`DROP TABLE ${s}.operations, ${s}.vms, ${s}.flavors, ${s}.hosts`);
  }
}

/** VMs get network interfaces (user-mode NICs with port forwards until the network service lands). */
export class ComputeVmNics1764100000000 implements MigrationInterface {
  name = 'ComputeVmNics1764100000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE ${schemaOf(q)}.vms ADD COLUMN nics jsonb NOT NULL DEFAULT '[]'::jsonb`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE ${schemaOf(q)}.vms DROP COLUMN nics`);
  }
}

export const computeMigrations = [
  CreateOutbox1764000000000,
  ComputeInit1764000000001,
  ComputeVmNics1764100000000,
  ComputeVmSnapshots1764700000000,
  ComputeVmMigration1765000000000,
  ComputeHostCpu1765100000000,
];
