import { Column, CreateDateColumn, Entity, PrimaryColumn, UpdateDateColumn } from 'typeorm';
import type { HostState, PowerState } from '@flotilla/domain';
import { OperationRow } from '@flotilla/platform';

/** Compute's operations use the record every service shares (libs/platform/src/operations). */
export { OperationRow, type OperationParams } from '@flotilla/platform';

/** bigint columns come back from pg as strings; these are small enough for a JS number. */
const int8 = { to: (v: number) => v, from: (v: string | null) => (v === null ? null : Number(v)) };

@Entity({ name: 'hosts' })
export class HostRow {
  @PrimaryColumn('uuid') id!: string;
  @Column('text') name!: string;
  @Column('text') address!: string;
  @Column('text') pool!: string;
  /** The operator's choice; the host reads DOWN while `down` is set, whatever this says. */
  @Column({ name: 'admin_state', type: 'text' }) adminState!: Exclude<HostState, 'DOWN'>;
  @Column('boolean') down!: boolean;
  @Column({ name: 'state_reason', type: 'text', default: '' }) stateReason!: string;
  @Column('text') driver!: string;
  @Column('text') accelerator!: string;
  /** What guests get here, as the agent reports it (RegisterHostRequest.cpu_model); '' not reported. */
  @Column({ name: 'cpu_model', type: 'text', default: '' }) cpuModel!: string;
  @Column({ name: 'cpu_flags', type: 'jsonb', default: [] }) cpuFlags!: string[];
  @Column('int') cpus!: number;
  @Column({ name: 'memory_mib', type: 'bigint', transformer: int8 }) memoryMib!: number;
  @Column({ name: 'cpu_overcommit_ratio', type: 'double precision' }) cpuOvercommitRatio!: number;
  @Column({ name: 'memory_overcommit_ratio', type: 'double precision' }) memoryOvercommitRatio!: number;
  @Column('jsonb') labels!: Record<string, string>;
  @Column({ name: 'last_heartbeat_at', type: 'timestamptz' }) lastHeartbeatAt!: Date;
  @Column({ type: 'bigint', transformer: int8 }) epoch!: number;
  @Column('int') version!: number;
  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' }) createdAt!: Date;
  @UpdateDateColumn({ name: 'updated_at', type: 'timestamptz' }) updatedAt!: Date;
}

@Entity({ name: 'flavors' })
export class FlavorRow {
  @PrimaryColumn('uuid') id!: string;
  @Column('text') name!: string;
  @Column('int') vcpus!: number;
  @Column({ name: 'memory_mib', type: 'bigint', transformer: int8 }) memoryMib!: number;
  @Column({ name: 'root_disk_gib', type: 'bigint', transformer: int8 }) rootDiskGib!: number;
  @Column('int') version!: number;
  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' }) createdAt!: Date;
}

export interface BootRow {
  image?: string;
  /** Created from a DISK image: the VM boots its root disk, whatever happens to the image later. */
  fromDisk?: boolean;
  kernel?: string;
  initrd?: string;
  cmdline?: string;
}

/** A NIC as recorded: host addresses of forwarded ports are filled while the VM runs. */
export interface NicRow {
  mac: string;
  forwards: { guestPort: number; hostAddress?: string }[];
}

@Entity({ name: 'vms' })
export class VmRow {
  @PrimaryColumn('uuid') id!: string;
  @Column('text') name!: string;
  @Column({ name: 'tenant_id', type: 'text' }) tenantId!: string;
  @Column('jsonb') labels!: Record<string, string>;
  @Column({ name: 'flavor_id', type: 'uuid', nullable: true }) flavorId!: string | null;
  @Column('int') vcpus!: number;
  @Column({ name: 'memory_mib', type: 'bigint', transformer: int8 }) memoryMib!: number;
  @Column({ name: 'root_disk_gib', type: 'bigint', transformer: int8 }) rootDiskGib!: number;
  @Column('jsonb') boot!: BootRow;
  @Column({ name: 'power_state', type: 'text' }) powerState!: PowerState;
  @Column({ name: 'power_state_reason', type: 'text', default: '' }) powerStateReason!: string;
  /** Where the VM holds capacity: set from placement until it halts. */
  @Column({ name: 'host_id', type: 'uuid', nullable: true }) hostId!: string | null;
  @Column({ name: 'current_operation_id', type: 'uuid', nullable: true }) currentOperationId!: string | null;
  @Column({ name: 'anti_affinity_group', type: 'text', default: '' }) antiAffinityGroup!: string;
  @Column({ name: 'required_host_labels', type: 'jsonb' }) requiredHostLabels!: Record<string, string>;
  @Column('jsonb') nics!: NicRow[];
  /** A VM snapshot (never runs; its VBDs in storage point at disk snapshots). */
  @Column({ name: 'is_snapshot', type: 'boolean', default: false }) isSnapshot!: boolean;
  @Column({ name: 'snapshot_of', type: 'uuid', nullable: true }) snapshotOf!: string | null;
  @Column({ name: 'snapshot_time', type: 'timestamptz', nullable: true }) snapshotTime!: Date | null;
  @Column({ name: 'request_id', type: 'text', nullable: true }) requestId!: string | null;
  /** The live migration holding the VM (its current_operation_id is the migration's operation). */
  @Column({ name: 'migration_id', type: 'uuid', nullable: true }) migrationId!: string | null;
  /**
   * The other host of the migration: the destination until the commit, the source after it. It holds the
   * VM's vCPUs and memory too, until the migration ends.
   */
  @Column({ name: 'migration_host_id', type: 'uuid', nullable: true }) migrationHostId!: string | null;
  /** Past the migration's commit: host_id is the destination. */
  @Column({ name: 'migration_committed', type: 'boolean', default: false }) migrationCommitted!: boolean;
  @Column('int') version!: number;
  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' }) createdAt!: Date;
  @UpdateDateColumn({ name: 'updated_at', type: 'timestamptz' }) updatedAt!: Date;
}

/** The migration columns of a VM no migration holds. */
export const notMigrating = { migrationId: null, migrationHostId: null, migrationCommitted: false } as const;

export const computeEntities = [HostRow, FlavorRow, VmRow, OperationRow];
