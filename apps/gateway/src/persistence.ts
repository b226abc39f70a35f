import {
  Column,
  CreateDateColumn,
  Entity,
  MigrationInterface,
  PrimaryColumn,
  QueryRunner,
  UpdateDateColumn,
} from 'typeorm';
import { CreateOutbox1764000000000, schemaOf } from '@flotilla/platform';
import type { Role } from '@flotilla/platform';
import { ec2Entities, ec2Migrations } from './ec2/ec2-front';
import { credentialEntities, credentialMigrations } from './credentials/credential.entity';

@Entity({ name: 'tenants' })
export class TenantRow {
  @PrimaryColumn('uuid') id!: string;
  @Column('text') name!: string;
  @Column('text') description!: string;
  @Column('jsonb') labels!: Record<string, string>;
  @Column({ name: 'request_id', type: 'text', nullable: true }) requestId!: string | null;
  @Column('int') version!: number;
  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' }) createdAt!: Date;
  @UpdateDateColumn({ name: 'updated_at', type: 'timestamptz' }) updatedAt!: Date;
}

@Entity({ name: 'tokens' })
export class TokenRow {
  @PrimaryColumn('uuid') id!: string;
  @Column('text') name!: string;
  @Column({ name: 'tenant_id', type: 'uuid' }) tenantId!: string;
  @Column('text') role!: Role;
  /** sha256 of the secret: the secret itself is never stored. */
  @Column({ name: 'secret_hash', type: 'text' }) secretHash!: string;
  @Column('text') prefix!: string;
  @Column({ name: 'expires_at', type: 'timestamptz', nullable: true }) expiresAt!: Date | null;
  @Column({ name: 'last_used_at', type: 'timestamptz', nullable: true }) lastUsedAt!: Date | null;
  @Column('boolean') revoked!: boolean;
  @Column({ name: 'request_id', type: 'text', nullable: true }) requestId!: string | null;
  @Column('int') version!: number;
  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' }) createdAt!: Date;
}

export class GatewayInit1764000000002 implements MigrationInterface {
  name = 'GatewayInit1764000000002';

  async up(q: QueryRunner): Promise<void> {
    const s = schemaOf(q);
    await q.query(`CREATE TABLE ${s}.tenants (
      id uuid PRIMARY KEY,
      name text NOT NULL UNIQUE,
      description text NOT NULL DEFAULT '',
      labels jsonb NOT NULL,
      request_id text NULL UNIQUE,
      version int NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now(),
      updated_at timestamptz NOT NULL DEFAULT now()
    )`);
    await q.query(`CREATE TABLE ${s}.tokens (
      id uuid PRIMARY KEY,
      name text NOT NULL,
      tenant_id uuid NOT NULL REFERENCES ${s}.tenants(id),
      role text NOT NULL,
      secret_hash text NOT NULL UNIQUE,
      prefix text NOT NULL,
      expires_at timestamptz NULL,
      last_used_at timestamptz NULL,
      revoked boolean NOT NULL DEFAULT false,
      request_id text NULL UNIQUE,
      version int NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now()
    )`);
  }

  async down(q: QueryRunner): Promise<void> {
    const s = schemaOf(q);
    await q.query(`DROP TABLE ${s}.tokens, ${s}.tenants`);
  }
}

export const gatewayEntities = [TenantRow, TokenRow, ...credentialEntities, ...ec2Entities];
export const gatewayMigrations = [
  CreateOutbox1764000000000,
  GatewayInit1764000000002,
  ...credentialMigrations,
  ...ec2Migrations,
];
