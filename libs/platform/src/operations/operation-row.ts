import { Column, CreateDateColumn, Entity, PrimaryColumn, QueryRunner, UpdateDateColumn } from 'typeorm';
import { commonV1 } from '@flotilla/contracts';
import type { ErrorCode, OperationState } from '@flotilla/domain';
import { grpcCodeOf } from '../grpc/status';
import type { NewEvent } from '../persistence/outbox';

export type OperationParams = Record<string, string | number | boolean | null>;

/**
 * The durable record of an operation, one table per service that runs operations (each in its own schema;
 * the service's migrations create it). Shared so every service records, reads and maps operations alike.
 */
@Entity({ name: 'operations' })
export class OperationRow {
  @PrimaryColumn('uuid') id!: string;
  @Column('text') kind!: string;
  @Column({ name: 'target_kind', type: 'text' }) targetKind!: string;
  @Column({ name: 'target_id', type: 'uuid' }) targetId!: string;
  @Column({ name: 'target_name', type: 'text' }) targetName!: string;
  @Column({ name: 'tenant_id', type: 'text' }) tenantId!: string;
  @Column({ name: 'request_id', type: 'text', nullable: true }) requestId!: string | null;
  @Column('text') state!: OperationState;
  @Column('double precision') progress!: number;
  @Column('text') step!: string;
  /** Operation-specific input (e.g. a pinned host, a shutdown timeout). */
  @Column('jsonb') params!: OperationParams;
  @Column('jsonb') result!: Record<string, string>;
  @Column({ name: 'error_code', type: 'text', nullable: true }) errorCode!: string | null;
  @Column({ name: 'error_message', type: 'text', nullable: true }) errorMessage!: string | null;
  @Column({ name: 'error_field', type: 'text', nullable: true }) errorField!: string | null;
  /** Set once the operation made its first outside effect: from then on it cannot be cancelled. */
  @Column({ name: 'point_of_no_return', type: 'boolean' }) pointOfNoReturn!: boolean;
  @Column('int') version!: number;
  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' }) createdAt!: Date;
  @UpdateDateColumn({ name: 'updated_at', type: 'timestamptz' }) updatedAt!: Date;
  @Column({ name: 'finished_at', type: 'timestamptz', nullable: true }) finishedAt!: Date | null;
}

export function operationToProto(op: OperationRow): commonV1.Operation {
  return {
    id: op.id,
    kind: op.kind,
    target: { kind: op.targetKind, id: op.targetId, name: op.targetName },
    state: `OPERATION_STATE_${op.state}` as commonV1.OperationState,
    progress: op.progress,
    error: op.errorCode
      ? {
          code: grpcCodeOf(op.errorCode as ErrorCode),
          message: op.errorMessage ?? '',
          details: op.errorField
            ? [{ reason: 'FIELD_INVALID', field: op.errorField, description: '', metadata: {} }]
            : [],
        }
      : undefined,
    result: op.result,
    tenantId: op.tenantId,
    requestId: op.requestId ?? '',
    createdAt: op.createdAt,
    updatedAt: op.updatedAt,
    finishedAt: op.finishedAt ?? undefined,
    step: op.step,
    etag: String(op.version),
  };
}

/** The outbox event of an operation change, carrying the operation as the API shows it. */
export function operationEvent(type: NewEvent['type'], op: OperationRow): NewEvent {
  return { kind: 'operation', type, resourceId: op.id, tenantId: op.tenantId, payload: operationToProto(op) };
}

/**
 * Creates a service's operations table and its indexes (called from the service's own migration, in its
 * schema `s`, already quoted): one definition for the record every service shares.
 */
export async function createOperationsTable(q: QueryRunner, s: string): Promise<void> {
  await q.query(`CREATE TABLE ${s}.operations (
      id uuid PRIMARY KEY,
      kind text NOT NULL,
      target_kind text NOT NULL,
      target_id uuid NOT NULL,
      target_name text NOT NULL,
      tenant_id text NOT NULL,
      request_id text NULL,
      state text NOT NULL,
      progress double precision NOT NULL,
      step text NOT NULL,
      params jsonb NOT NULL,
      result jsonb NOT NULL,
      error_code text NULL,
      error_message text NULL,
      error_field text NULL,
      point_of_no_return boolean NOT NULL,
      version int NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now(),
      updated_at timestamptz NOT NULL DEFAULT now(),
      finished_at timestamptz NULL
    )`);
  await q.query(
    `CREATE UNIQUE INDEX operations_request ON ${s}.operations (tenant_id, kind, target_id, request_id) WHERE request_id IS NOT NULL`,
  );
  await q.query(`CREATE INDEX operations_unfinished ON ${s}.operations (state) WHERE finished_at IS NULL`);
  await q.query(`CREATE INDEX operations_created ON ${s}.operations (created_at DESC)`);
}
