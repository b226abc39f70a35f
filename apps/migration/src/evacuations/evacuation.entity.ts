import { Column, CreateDateColumn, Entity, PrimaryColumn, UpdateDateColumn } from 'typeorm';
import type { commonV1, migrationV1 } from '@flotilla/contracts';
import type {
  EvacuationAction,
  EvacuationBlockedPolicy,
  EvacuationState,
  EvacuationVmOutcome,
} from '@flotilla/domain';

/** One VM of an evacuation: what the plan decided and what happened (the `vms` jsonb column). */
export interface EvacuationVmRecord {
  vmId: string;
  vmName: string;
  memoryMib: number;
  vcpus: number;
  action: EvacuationAction;
  /**
   * MIGRATING with an empty migrationId: the start was asked and its answer not recorded yet; the runner asks
   * again with the same request id, which returns the same migration.
   */
  outcome: EvacuationVmOutcome;
  migrationId: string;
  destinationHostId: string;
  blockers: migrationV1.Blocker[];
  error: commonV1.Status | null;
  /** The migration was asked to cancel (the evacuation is cancelling): not asked again. */
  cancelAsked: boolean;
  /** The clean shutdown was asked of compute (with a request id derived from the evacuation's). */
  shutdownAsked: boolean;
  /**
   * Migrations started again after one found its destination full (absent: none). Each start's request id
   * carries it, so that a repeated ask returns that attempt's migration.
   */
  restarts?: number;
}

/**
 * An evacuation: the plan made when it was asked, its progress VM by VM, and how it ended. The runner
 * resumes from this record alone after a restart.
 */
@Entity({ name: 'evacuations' })
export class EvacuationRow {
  @PrimaryColumn('uuid') id!: string;
  @Column('text') name!: string;
  /** Always empty: evacuations are pool operations. */
  @Column({ name: 'tenant_id', type: 'text' }) tenantId!: string;
  @Column('jsonb') labels!: Record<string, string>;
  @Column({ name: 'host_id', type: 'uuid' }) hostId!: string;
  @Column({ name: 'host_name', type: 'text' }) hostName!: string;
  @Column('text') state!: EvacuationState;
  @Column({ name: 'state_reason', type: 'text' }) stateReason!: string;
  @Column({ name: 'max_parallel', type: 'int' }) maxParallel!: number;
  @Column({ name: 'on_blocked', type: 'text' }) onBlocked!: EvacuationBlockedPolicy;
  @Column({ name: 'with_storage', type: 'boolean' }) withStorage!: boolean;
  @Column({ name: 'enter_maintenance', type: 'boolean' }) enterMaintenance!: boolean;
  @Column({ name: 'migration_options', type: 'jsonb' }) migrationOptions!: migrationV1.MigrationOptions;
  @Column('double precision') progress!: number;
  @Column('jsonb') vms!: EvacuationVmRecord[];
  /**
   * Set while RUNNING when an error concerning the whole host stopped it (host DOWN, no capacity): no new
   * migration starts and it ends FAILED once the running ones are done. Also the error of a CANCELLED one.
   */
  @Column('jsonb', { nullable: true }) error!: commonV1.Status | null;
  @Column({ name: 'operation_id', type: 'uuid' }) operationId!: string;
  @Column({ name: 'request_id', type: 'text', nullable: true }) requestId!: string | null;
  @Column({ name: 'started_at', type: 'timestamptz' }) startedAt!: Date;
  @Column({ name: 'finished_at', type: 'timestamptz', nullable: true }) finishedAt!: Date | null;
  @Column('int') version!: number;
  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' }) createdAt!: Date;
  @UpdateDateColumn({ name: 'updated_at', type: 'timestamptz' }) updatedAt!: Date;
}
