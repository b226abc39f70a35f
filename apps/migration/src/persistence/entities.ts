import { Column, CreateDateColumn, Entity, PrimaryColumn, UpdateDateColumn } from 'typeorm';
import type { migrationV1 } from '@flotilla/contracts';
import type { MigrationOptions } from '@flotilla/domain';
import { OperationRow } from '@flotilla/platform';

/** bigint columns come back from pg as strings; these are small enough for a JS number. */
const int8 = { to: (v: number) => v, from: (v: string | null) => (v === null ? null : Number(v)) };

export type MigrationStateName = 'QUEUED' | 'RUNNING' | 'CANCELLING' | 'SUCCEEDED' | 'FAILED' | 'CANCELLED';
export type MigrationPhaseName =
  | 'PREFLIGHT'
  | 'PREPARE'
  | 'MIRROR'
  | 'TRANSFER'
  | 'SWITCHOVER'
  | 'POST_COPY'
  | 'CLEANUP'
  | 'ROLLBACK'
  | 'DONE';
export type MigrationModeName = 'LIVE' | 'OFFLINE';

/** A phase entered, as the API shows it (timestamps as ISO strings in jsonb). */
export interface PhaseEntry {
  phase: MigrationPhaseName;
  startedAt: string;
  endedAt?: string;
  detail: string;
}

/** Options with their defaults applied (what the run uses), bandwidth resolved from the pool default. */
export type ResolvedOptions = MigrationOptions;

/** The statistics as the API shows them (stored as jsonb). */
export type MigrationStatsRecord = migrationV1.MigrationStats;

/** A host of the migration as compute gave it at BeginVmMigration (what the run needs to resume). */
export interface HostRef {
  id: string;
  name: string;
  address: string;
  epoch: number;
  /** The host's accelerator ("kvm", "tcg", …); absent in rows recorded before it was kept. */
  accelerator?: string;
}

/** One disk of the VM in the migration (storage's plan). */
export interface DiskPlanEntry {
  vbdId: string;
  vdiId: string;
  srId: string;
  /** Empty when the disk stays where it is. */
  targetSrId: string;
  sizeBytes: number;
}

/** What the destination agent answered to PrepareIncoming. */
export interface IncomingRecord {
  migrationAddress: string;
  nbdAddress: string;
  nbdExports: Record<string, string>;
  /** The incoming VM's NICs with their forwarded ports on the destination (compute's commit takes them). */
  nics: unknown[];
}

/** What the run has to undo or finish that failed for now (agent or service down); the reconciler retries. */
export type PendingAction =
  | 'CANCEL_OUTGOING'
  | 'ABORT_INCOMING'
  | 'ABORT_DISKS'
  | 'END_VM_MIGRATION'
  | 'FINISH_OUTGOING'
  | 'FINISH_INCOMING'
  | 'COMMIT_DISKS'
  | 'CLEAN_UP_DISKS';

/**
 * One migration: its request, where its run stands (`step`, the last crash point passed), and everything the
 * run learnt from the other services that it needs to resume or roll back after a restart.
 */
// Not "migrations": TypeORM's own table of applied schema migrations has that name.
@Entity({ name: 'vm_migrations' })
export class MigrationRow {
  @PrimaryColumn('uuid') id!: string;
  @Column('text') name!: string;
  @Column({ name: 'tenant_id', type: 'text' }) tenantId!: string;
  @Column('jsonb') labels!: Record<string, string>;
  @Column({ name: 'vm_id', type: 'uuid' }) vmId!: string;
  @Column({ name: 'vm_name', type: 'text' }) vmName!: string;
  @Column({ name: 'source_host_id', type: 'text' }) sourceHostId!: string;
  @Column({ name: 'destination_host_id', type: 'text' }) destinationHostId!: string;
  @Column('text') mode!: MigrationModeName;
  @Column({ name: 'with_storage', type: 'boolean' }) withStorage!: boolean;
  /** As requested (vdi → SR). */
  @Column({ name: 'requested_vdi_map', type: 'jsonb' }) requestedVdiMap!: Record<string, string>;
  /** Every copied disk's destination SR (from storage's plan). */
  @Column({ name: 'vdi_map', type: 'jsonb' }) vdiMap!: Record<string, string>;
  @Column('text') state!: MigrationStateName;
  @Column({ name: 'state_reason', type: 'text' }) stateReason!: string;
  @Column('text') phase!: MigrationPhaseName;
  /** The last crash point passed (see run-plan.ts). */
  @Column('text') step!: string;
  @Column('double precision') progress!: number;
  @Column({ name: 'point_of_no_return_passed', type: 'boolean' }) pointOfNoReturnPassed!: boolean;
  /** The switch to post-copy was asked (at the point of no return, instead of the plain switchover). */
  @Column({ name: 'post_copy_started', type: 'boolean' }) postCopyStarted!: boolean;
  @Column({ name: 'point_of_no_return_at', type: 'timestamptz', nullable: true })
  pointOfNoReturnAt!: Date | null;
  @Column('jsonb') options!: ResolvedOptions;
  /** The bandwidth the run uses (options or the pool default). */
  @Column({ name: 'bandwidth_bytes_per_sec', type: 'bigint', transformer: int8 })
  bandwidthBytesPerSec!: number;
  @Column('jsonb') stats!: MigrationStatsRecord;
  @Column('jsonb') phases!: PhaseEntry[];
  /** flotilla.common.v1.Status when FAILED or CANCELLED. */
  @Column({ name: 'error', type: 'jsonb', nullable: true }) error!: {
    code: number;
    message: string;
    details: Array<{ reason: string; field: string; description: string; metadata: Record<string, string> }>;
  } | null;
  @Column({ name: 'operation_id', type: 'uuid' }) operationId!: string;
  @Column({ name: 'evacuation_id', type: 'text' }) evacuationId!: string;
  @Column({ name: 'source_host', type: 'jsonb', nullable: true }) sourceHost!: HostRef | null;
  @Column({ name: 'destination_host', type: 'jsonb', nullable: true }) destinationHost!: HostRef | null;
  @Column({ name: 'disk_plan', type: 'jsonb' }) diskPlan!: DiskPlanEntry[];
  @Column({ name: 'incoming', type: 'jsonb', nullable: true }) incoming!: IncomingRecord | null;
  /** Undo or clean-up calls still to make (an agent or service was down). */
  @Column('jsonb') pending!: PendingAction[];
  /** CreateMigration's request id (per tenant): a repeat returns the first migration. */
  @Column({ name: 'request_id', type: 'text', nullable: true }) requestId!: string | null;
  @Column({ name: 'started_at', type: 'timestamptz', nullable: true }) startedAt!: Date | null;
  @Column({ name: 'finished_at', type: 'timestamptz', nullable: true }) finishedAt!: Date | null;
  @Column('int') version!: number;
  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' }) createdAt!: Date;
  @UpdateDateColumn({ name: 'updated_at', type: 'timestamptz' }) updatedAt!: Date;
}

/** The migration service's own entities; the evacuation context adds its own (see migration.app.ts). */
export const migrationEntities = [MigrationRow, OperationRow];
