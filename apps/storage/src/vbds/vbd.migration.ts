import { MigrationInterface, QueryRunner } from 'typeorm';
import { schemaOf } from '@flotilla/platform';

/**
 * The VBD table. No foreign key to vdis: a VDI's destroy removes its detached VBDs itself, and the VBD
 * table must not depend on the order in which the SR/VDI migrations run.
 */
export class CreateVbds1764600000000 implements MigrationInterface {
  name = 'CreateVbds1764600000000';

  async up(q: QueryRunner): Promise<void> {
    const s = schemaOf(q);
    await q.query(`CREATE TABLE ${s}.vbds (
      id uuid PRIMARY KEY,
      name text NOT NULL,
      tenant_id text NOT NULL,
      labels jsonb NOT NULL,
      vm_id uuid NOT NULL,
      vdi_id uuid NULL,
      device_position int NOT NULL CHECK (device_position BETWEEN 0 AND 15),
      type text NOT NULL,
      mode text NOT NULL,
      bootable boolean NOT NULL,
      unpluggable boolean NOT NULL,
      state text NOT NULL,
      device text NOT NULL,
      hot_plugged boolean NOT NULL,
      host_id uuid NULL,
      current_operation_id uuid NULL,
      exclusive_writer boolean NOT NULL,
      owns_vdi boolean NOT NULL,
      request_tenant_id text NOT NULL,
      request_id text NULL,
      version int NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now(),
      updated_at timestamptz NOT NULL DEFAULT now()
    )`);
    // One VBD per device position of a VM.
    await q.query(`CREATE UNIQUE INDEX vbds_position ON ${s}.vbds (vm_id, device_position)`);
    // One writer per VDI unless it is sharable: decided by the database, not by a read before the insert.
    await q.query(`CREATE UNIQUE INDEX vbds_one_writer ON ${s}.vbds (vdi_id) WHERE exclusive_writer`);
    await q.query(`CREATE INDEX vbds_vdi ON ${s}.vbds (vdi_id)`);
    await q.query(
      `CREATE UNIQUE INDEX vbds_request ON ${s}.vbds (request_tenant_id, request_id) WHERE request_id IS NOT NULL`,
    );
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TABLE ${schemaOf(q)}.vbds`);
  }
}
