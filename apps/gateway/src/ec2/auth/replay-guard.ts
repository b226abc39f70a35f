import { Column, DataSource, Entity, MigrationInterface, PrimaryColumn, QueryRunner } from 'typeorm';
import { quotedTable, schemaOf } from '@flotilla/platform';
import type { VerifiedSignature } from './signed-request';

/** A signature already used, kept until its replay window closes (plus a grace for gateways' clocks). */
@Entity({ name: 'ec2_signatures' })
export class Ec2SignatureRow {
  /** "v4:<hex>" or "v2:<base64>": the canonical form of the MAC, so an encoding variant is the same row. */
  @PrimaryColumn('text') signature!: string;
  @Column({ name: 'access_key_id', type: 'text' }) accessKeyId!: string;
  @Column({ name: 'valid_until', type: 'timestamptz' }) validUntil!: Date;
}

export class Ec2Signatures1764000000012 implements MigrationInterface {
  name = 'Ec2Signatures1764000000012';

  async up(q: QueryRunner): Promise<void> {
    const s = schemaOf(q);
    await q.query(`CREATE TABLE ${s}.ec2_signatures (
      signature text PRIMARY KEY,
      access_key_id text NOT NULL,
      valid_until timestamptz NOT NULL
    )`);
    await q.query(`CREATE INDEX ec2_signatures_valid_until ON ${s}.ec2_signatures (valid_until)`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TABLE ${schemaOf(q)}.ec2_signatures`);
  }
}

/** Rows are kept this long past their window: another gateway whose clock lags may still accept them. */
const clockGraceMs = 5 * 60_000;

/**
 * Refuses a signature seen before: SDKs re-sign every retry, so a signature seen twice is a replay, never a
 * legitimate retry, and must not run a mutating action twice. Durable and shared: the claim is a row in the
 * gateway's database (INSERT … ON CONFLICT DO NOTHING, atomic across gateways and restarts), pruned once
 * its window has closed.
 */
export class SignatureReplayGuard {
  private readonly timer: NodeJS.Timeout;
  private readonly now: () => number;
  private quoted: string | undefined;

  constructor(
    private readonly dataSource: DataSource,
    options: { pruneEveryMs?: number; now?: () => number } = {},
  ) {
    this.now = options.now ?? Date.now;
    this.timer = setInterval(() => {
      // A failed prune (database briefly away) only delays cleanup: the next tick retries.
      this.prune().catch(() => undefined);
    }, options.pruneEveryMs ?? 60_000);
    this.timer.unref();
  }

  /** true the first time a signature is claimed within its window; false if it was seen before. */
  async claim(signature: VerifiedSignature): Promise<boolean> {
    const rows: unknown[] = await this.dataSource.query(
      `INSERT INTO ${this.table()} (signature, access_key_id, valid_until) VALUES ($1, $2, $3)
       ON CONFLICT (signature) DO NOTHING RETURNING signature`,
      [`v${signature.version}:${signature.signature}`, signature.accessKeyId, new Date(signature.validUntil)],
    );
    return rows.length === 1;
  }

  /** Deletes the rows whose window (plus grace) has closed; returns how many. */
  async prune(): Promise<number> {
    const deleted: unknown = await this.dataSource.query(
      `DELETE FROM ${this.table()} WHERE valid_until < $1`,
      [new Date(this.now() - clockGraceMs)],
    );
    // TypeORM's postgres driver answers [rows, affected count] for a DELETE.
    return Array.isArray(deleted) && typeof deleted[1] === 'number' ? deleted[1] : 0;
  }

  close(): void {
    clearInterval(this.timer);
  }

  private table(): string {
    this.quoted ??= quotedTable(this.dataSource.manager, Ec2SignatureRow);
    return this.quoted;
  }
}
