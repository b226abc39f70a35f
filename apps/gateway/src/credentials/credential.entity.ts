import { Column, CreateDateColumn, Entity, MigrationInterface, PrimaryColumn, QueryRunner } from 'typeorm';
import { schemaOf } from '@flotilla/platform';
import type { Role } from '@flotilla/platform';

export type CredentialKindName = 'ec2' | 'openstack';

/**
 * A credential of a compatibility front. Secrets are never stored in clear: an EC2 secret is sealed
 * (SecretBox, bound to the row id: the server needs it back to check HMAC signatures), an OpenStack
 * password is kept only as a salted scrypt hash.
 */
@Entity({ name: 'credentials' })
export class CredentialRow {
  @PrimaryColumn('uuid') id!: string;
  /** Unique among live (unrevoked) credentials of its kind; the user name for OpenStack. */
  @Column('text') name!: string;
  @Column('text') kind!: CredentialKindName;
  @Column({ name: 'tenant_id', type: 'uuid' }) tenantId!: string;
  @Column('text') role!: Role;
  /** EC2 only: "AKIA…", unique. */
  @Column({ name: 'access_key_id', type: 'text', nullable: true }) accessKeyId!: string | null;
  /** EC2 only: the secret access key sealed with the gateway key. */
  @Column({ name: 'sealed_secret', type: 'text', nullable: true }) sealedSecret!: string | null;
  /** OpenStack only: "scrypt$N$r$p$salt$hash". */
  @Column({ name: 'password_hash', type: 'text', nullable: true }) passwordHash!: string | null;
  @Column({ name: 'expires_at', type: 'timestamptz', nullable: true }) expiresAt!: Date | null;
  @Column({ name: 'last_used_at', type: 'timestamptz', nullable: true }) lastUsedAt!: Date | null;
  @Column('boolean') revoked!: boolean;
  @Column({ name: 'request_id', type: 'text', nullable: true }) requestId!: string | null;
  @Column('int') version!: number;
  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' }) createdAt!: Date;
}

export class GatewayCredentials1764000000010 implements MigrationInterface {
  name = 'GatewayCredentials1764000000010';

  async up(q: QueryRunner): Promise<void> {
    const s = schemaOf(q);
    // A tenant's credentials go with it (deleting a tenant deletes its tokens the same way).
    await q.query(`CREATE TABLE ${s}.credentials (
      id uuid PRIMARY KEY,
      name text NOT NULL,
      kind text NOT NULL,
      tenant_id uuid NOT NULL REFERENCES ${s}.tenants(id) ON DELETE CASCADE,
      role text NOT NULL,
      access_key_id text NULL UNIQUE,
      sealed_secret text NULL,
      password_hash text NULL,
      expires_at timestamptz NULL,
      last_used_at timestamptz NULL,
      revoked boolean NOT NULL DEFAULT false,
      request_id text NULL UNIQUE,
      version int NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now(),
      CONSTRAINT credentials_secret_of_kind CHECK (
        (kind = 'ec2' AND access_key_id IS NOT NULL AND sealed_secret IS NOT NULL AND password_hash IS NULL)
        OR (kind = 'openstack' AND password_hash IS NOT NULL AND access_key_id IS NULL AND sealed_secret IS NULL)
      )
    )`);
    // A revoked credential frees its name, so a user name can be rotated to a new password.
    await q.query(
      `CREATE UNIQUE INDEX credentials_live_name ON ${s}.credentials (kind, name) WHERE NOT revoked`,
    );
    await q.query(`CREATE INDEX credentials_tenant ON ${s}.credentials (tenant_id)`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TABLE ${schemaOf(q)}.credentials`);
  }
}

export const credentialEntities = [CredentialRow];
export const credentialMigrations = [GatewayCredentials1764000000010];
