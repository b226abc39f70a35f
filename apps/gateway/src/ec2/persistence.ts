import { Column, CreateDateColumn, Entity, MigrationInterface, PrimaryColumn, QueryRunner } from 'typeorm';
import { schemaOf } from '@flotilla/platform';

/**
 * What the EC2 front keeps that compute has no field for. VM state never lives here: only the instance id
 * map, RunInstances' inputs that EC2 returns later (image, key name, user data, client token), tags, key
 * pairs, and when an instance was terminated (EC2 shows terminated instances for an hour).
 */

@Entity({ name: 'ec2_instances' })
export class Ec2InstanceRow {
  @PrimaryColumn({ name: 'instance_id', type: 'text' }) instanceId!: string;
  @Column({ name: 'vm_id', type: 'uuid' }) vmId!: string;
  @Column({ name: 'tenant_id', type: 'uuid' }) tenantId!: string;
  @Column({ name: 'reservation_id', type: 'text' }) reservationId!: string;
  @Column({ name: 'launch_index', type: 'int' }) launchIndex!: number;
  /** The EC2 image id it was launched from, when launched through EC2. */
  @Column({ name: 'image_id', type: 'text', nullable: true }) imageId!: string | null;
  /** Last seen instance type: kept to describe the instance after it is terminated. */
  @Column({ name: 'instance_type', type: 'text', nullable: true }) instanceType!: string | null;
  @Column({ name: 'key_name', type: 'text', nullable: true }) keyName!: string | null;
  /** Base64, as received. */
  @Column({ name: 'user_data', type: 'text', nullable: true }) userData!: string | null;
  @Column({ name: 'client_token', type: 'text', nullable: true }) clientToken!: string | null;
  @Column({ name: 'launch_time', type: 'timestamptz' }) launchTime!: Date;
  /** When the VM was seen gone (or TerminateInstances finished); shown as terminated for an hour after. */
  @Column({ name: 'terminated_at', type: 'timestamptz', nullable: true }) terminatedAt!: Date | null;
  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' }) createdAt!: Date;
}

/** RunInstances ClientTokens per tenant: the same token with other parameters is IdempotentParameterMismatch. */
/** A tenant's instance rows' version (Ec2InstanceVersions1764000000013: only its triggers write it). */
@Entity({ name: 'ec2_instance_versions' })
export class Ec2InstanceVersionRow {
  @PrimaryColumn({ name: 'tenant_id', type: 'uuid' }) tenantId!: string;
  @Column({ type: 'bigint' }) version!: string;
}

@Entity({ name: 'ec2_client_tokens' })
export class Ec2ClientTokenRow {
  @PrimaryColumn({ name: 'tenant_id', type: 'uuid' }) tenantId!: string;
  @PrimaryColumn({ name: 'client_token', type: 'text' }) clientToken!: string;
  @Column({ name: 'params_hash', type: 'text' }) paramsHash!: string;
  @Column({ name: 'reservation_id', type: 'text' }) reservationId!: string;
  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' }) createdAt!: Date;
}

@Entity({ name: 'ec2_tags' })
export class Ec2TagRow {
  @PrimaryColumn({ name: 'tenant_id', type: 'uuid' }) tenantId!: string;
  @PrimaryColumn({ name: 'resource_id', type: 'text' }) resourceId!: string;
  @PrimaryColumn({ name: 'key', type: 'text' }) key!: string;
  @Column('text') value!: string;
}

@Entity({ name: 'ec2_key_pairs' })
export class Ec2KeyPairRow {
  @PrimaryColumn({ name: 'tenant_id', type: 'uuid' }) tenantId!: string;
  @PrimaryColumn({ name: 'key_name', type: 'text' }) keyName!: string;
  @Column({ name: 'key_pair_id', type: 'text' }) keyPairId!: string;
  @Column({ name: 'key_type', type: 'text' }) keyType!: string;
  @Column('text') fingerprint!: string;
  /** The OpenSSH public key line as imported. */
  @Column({ name: 'public_key', type: 'text' }) publicKey!: string;
  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' }) createdAt!: Date;
}

export class Ec2Compat1764000000011 implements MigrationInterface {
  name = 'Ec2Compat1764000000011';

  async up(q: QueryRunner): Promise<void> {
    const s = schemaOf(q);
    await q.query(`CREATE TABLE ${s}.ec2_instances (
      instance_id text PRIMARY KEY,
      vm_id uuid NOT NULL UNIQUE,
      tenant_id uuid NOT NULL,
      reservation_id text NOT NULL,
      launch_index int NOT NULL,
      image_id text NULL,
      instance_type text NULL,
      key_name text NULL,
      user_data text NULL,
      client_token text NULL,
      launch_time timestamptz NOT NULL,
      terminated_at timestamptz NULL,
      created_at timestamptz NOT NULL DEFAULT now()
    )`);
    await q.query(`CREATE INDEX ec2_instances_tenant ON ${s}.ec2_instances (tenant_id, instance_id)`);
    await q.query(`CREATE TABLE ${s}.ec2_client_tokens (
      tenant_id uuid NOT NULL,
      client_token text NOT NULL,
      params_hash text NOT NULL,
      reservation_id text NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (tenant_id, client_token)
    )`);
    await q.query(`CREATE TABLE ${s}.ec2_tags (
      tenant_id uuid NOT NULL,
      resource_id text NOT NULL,
      key text NOT NULL,
      value text NOT NULL,
      PRIMARY KEY (tenant_id, resource_id, key)
    )`);
    await q.query(`CREATE TABLE ${s}.ec2_key_pairs (
      tenant_id uuid NOT NULL,
      key_name text NOT NULL,
      key_pair_id text NOT NULL UNIQUE,
      key_type text NOT NULL,
      fingerprint text NOT NULL,
      public_key text NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (tenant_id, key_name)
    )`);
  }

  async down(q: QueryRunner): Promise<void> {
    const s = schemaOf(q);
    await q.query(`DROP TABLE ${s}.ec2_key_pairs, ${s}.ec2_tags, ${s}.ec2_client_tokens, ${s}.ec2_instances`);
  }
}

/**
 * A version per tenant that every change of its instance rows bumps, in the statement's own transaction
 * (statement triggers, so a listing that records a thousand rows bumps it once). A gateway keeps a tenant's
 * rows between listings while the version it read them at is still the version (InstanceRows); another
 * gateway's writes, a migration's, anyone's, move it.
 */
export class Ec2InstanceVersions1764000000013 implements MigrationInterface {
  name = 'Ec2InstanceVersions1764000000013';

  async up(q: QueryRunner): Promise<void> {
    const s = schemaOf(q);
    await q.query(`CREATE TABLE ${s}.ec2_instance_versions (
      tenant_id uuid PRIMARY KEY,
      version bigint NOT NULL
    )`);
    await q.query(`CREATE FUNCTION ${s}.ec2_instances_changed() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        INSERT INTO ${s}.ec2_instance_versions AS v (tenant_id, version)
          SELECT DISTINCT tenant_id, 1 FROM changed
          ON CONFLICT (tenant_id) DO UPDATE SET version = v.version + 1;
        RETURN NULL;
      END $$`);
    for (const [event, table] of [
      ['INSERT', 'NEW'],
      ['UPDATE', 'NEW'],
      ['DELETE', 'OLD'],
    ])
      await q.query(`CREATE TRIGGER ec2_instances_${event.toLowerCase()} AFTER ${event} ON ${s}.ec2_instances
        REFERENCING ${table} TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION ${s}.ec2_instances_changed()`);
  }

  async down(q: QueryRunner): Promise<void> {
    const s = schemaOf(q);
    for (const event of ['insert', 'update', 'delete'])
      await q.query(`DROP TRIGGER ec2_instances_${event} ON ${s}.ec2_instances`);
    await q.query(`DROP FUNCTION ${s}.ec2_instances_changed()`);
    await q.query(`DROP TABLE ${s}.ec2_instance_versions`);
  }
}
