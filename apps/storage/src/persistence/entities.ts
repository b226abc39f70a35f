import { Column, CreateDateColumn, Entity, PrimaryColumn, UpdateDateColumn } from 'typeorm';
import { OperationRow } from '@flotilla/platform';
import { DiskMigrationRow } from '../vbds/disk-migration.entity';
import { VbdRow } from '../vbds/vbd.entity';
import type { SrHostAttachment, SrState, SrType, VdiState } from '@flotilla/domain';

/** bigint columns come back from pg as strings; these are small enough for a JS number. */
const int8 = { to: (v: number) => v, from: (v: string | null) => (v === null ? null : Number(v)) };

export type ImageKind = 'DISK' | 'KERNEL';
export type ImageVisibility = 'PUBLIC' | 'PRIVATE';
export type ImageState = 'REGISTERING' | 'AVAILABLE' | 'UNAVAILABLE';

@Entity({ name: 'images' })
export class ImageRow {
  @PrimaryColumn('uuid') id!: string;
  /** Unique in the pool: VMs name their image by it. */
  @Column('text') name!: string;
  /** Empty for a PUBLIC image. */
  @Column({ name: 'tenant_id', type: 'text' }) tenantId!: string;
  @Column('jsonb') labels!: Record<string, string>;
  @Column('text') description!: string;
  @Column('text') kind!: ImageKind;
  @Column('text') visibility!: ImageVisibility;
  @Column('text') state!: ImageState;
  @Column({ name: 'state_reason', type: 'text' }) stateReason!: string;
  @Column({ name: 'os_type', type: 'text' }) osType!: string;
  @Column('text') architecture!: string;
  @Column({ name: 'min_disk_bytes', type: 'bigint', transformer: int8 }) minDiskBytes!: number;
  @Column({ name: 'min_memory_mib', type: 'bigint', transformer: int8 }) minMemoryMib!: number;
  @Column('text') sha256!: string;
  @Column({ name: 'vdi_id', type: 'uuid', nullable: true }) vdiId!: string | null;
  @Column({ name: 'virtual_size_bytes', type: 'bigint', transformer: int8 }) virtualSizeBytes!: number;
  @Column({ name: 'size_bytes', type: 'bigint', transformer: int8 }) sizeBytes!: number;
  @Column({ name: 'kernel_path', type: 'text' }) kernelPath!: string;
  @Column({ name: 'initrd_path', type: 'text' }) initrdPath!: string;
  @Column({ name: 'initrd_sha256', type: 'text' }) initrdSha256!: string;
  @Column('text') cmdline!: string;
  /** The tenant whose request registered it (a PUBLIC image has none of its own): idempotency key. */
  @Column({ name: 'request_tenant_id', type: 'text' }) requestTenantId!: string;
  @Column({ name: 'request_id', type: 'text', nullable: true }) requestId!: string | null;
  @Column('int') version!: number;
  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' }) createdAt!: Date;
  @UpdateDateColumn({ name: 'updated_at', type: 'timestamptz' }) updatedAt!: Date;
}

/** A storage repository. Capacity and free space are as last measured by an agent (StatSr). */
@Entity({ name: 'srs' })
export class SrRow {
  @PrimaryColumn('uuid') id!: string;
  /** Unique in the pool. */
  @Column('text') name!: string;
  /** Empty for a pool-wide SR; set, only that tenant places VDIs in it. */
  @Column({ name: 'tenant_id', type: 'text' }) tenantId!: string;
  @Column('jsonb') labels!: Record<string, string>;
  @Column('text') description!: string;
  @Column('text') type!: SrType;
  /** FILE: the host whose directory it is. */
  @Column({ name: 'host_id', type: 'uuid', nullable: true }) hostId!: string | null;
  @Column('text') path!: string;
  @Column('text') state!: SrState;
  @Column({ name: 'state_reason', type: 'text' }) stateReason!: string;
  @Column({ name: 'capacity_bytes', type: 'bigint', transformer: int8 }) capacityBytes!: number;
  @Column({ name: 'free_bytes', type: 'bigint', transformer: int8 }) freeBytes!: number;
  @Column({ name: 'physical_utilisation_bytes', type: 'bigint', transformer: int8 })
  physicalUtilisationBytes!: number;
  @Column({ name: 'overprovision_ratio', type: 'double precision' }) overprovisionRatio!: number;
  /** Which hosts see it, as last checked. */
  @Column('jsonb') hosts!: SrHostAttachment[];
  /** Flotilla created the directory (so destroy removes it when empty). */
  @Column({ name: 'created_directory', type: 'boolean' }) createdDirectory!: boolean;
  @Column({ name: 'current_operation_id', type: 'uuid', nullable: true }) currentOperationId!: string | null;
  @Column({ name: 'current_operation_kind', type: 'text', nullable: true }) currentOperationKind!:
    string | null;
  @Column({ name: 'last_scanned_at', type: 'timestamptz', nullable: true }) lastScannedAt!: Date | null;
  @Column({ name: 'request_tenant_id', type: 'text' }) requestTenantId!: string;
  @Column({ name: 'request_id', type: 'text', nullable: true }) requestId!: string | null;
  @Column('int') version!: number;
  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' }) createdAt!: Date;
  @UpdateDateColumn({ name: 'updated_at', type: 'timestamptz' }) updatedAt!: Date;
}

/**
 * A VDI, or a hidden chain node (managed = false): every qcow2 file of an SR has one record, so chains,
 * space and clean-up are read from the database alone.
 */
@Entity({ name: 'vdis' })
export class VdiRow {
  @PrimaryColumn('uuid') id!: string;
  @Column('text') name!: string;
  @Column({ name: 'tenant_id', type: 'text' }) tenantId!: string;
  @Column('jsonb') labels!: Record<string, string>;
  @Column('text') description!: string;
  @Column({ name: 'sr_id', type: 'uuid' }) srId!: string;
  @Column('text') state!: VdiState;
  @Column({ name: 'state_reason', type: 'text' }) stateReason!: string;
  @Column({ name: 'virtual_size_bytes', type: 'bigint', transformer: int8 }) virtualSizeBytes!: number;
  @Column({ name: 'physical_utilisation_bytes', type: 'bigint', transformer: int8 })
  physicalUtilisationBytes!: number;
  /** Plain file name in the SR directory; empty while a snapshot is CREATING (it takes over a file). */
  @Column('text') file!: string;
  /** The node whose file backs this one. */
  @Column({ name: 'parent_id', type: 'uuid', nullable: true }) parentId!: string | null;
  @Column({ name: 'is_snapshot', type: 'boolean' }) isSnapshot!: boolean;
  @Column({ name: 'snapshot_of', type: 'uuid', nullable: true }) snapshotOf!: string | null;
  @Column({ name: 'snapshot_time', type: 'timestamptz', nullable: true }) snapshotTime!: Date | null;
  @Column({ name: 'read_only', type: 'boolean' }) readOnly!: boolean;
  @Column('boolean') sharable!: boolean;
  @Column('boolean') managed!: boolean;
  /** The catalogue image this VDI is the base of (read-only) or was created from (writable). */
  @Column({ name: 'image_id', type: 'uuid', nullable: true }) imageId!: string | null;
  /** True for an image's base (the registered one, or its cached copy in another SR). */
  @Column({ name: 'image_base', type: 'boolean' }) imageBase!: boolean;
  @Column({ name: 'current_operation_id', type: 'uuid', nullable: true }) currentOperationId!: string | null;
  /** Free physical space an in-flight full copy or import may still take (0 once READY). */
  @Column({ name: 'reserved_physical_bytes', type: 'bigint', transformer: int8 })
  reservedPhysicalBytes!: number;
  @Column({ name: 'request_tenant_id', type: 'text' }) requestTenantId!: string;
  @Column({ name: 'request_id', type: 'text', nullable: true }) requestId!: string | null;
  @Column('int') version!: number;
  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' }) createdAt!: Date;
  @UpdateDateColumn({ name: 'updated_at', type: 'timestamptz' }) updatedAt!: Date;
}

export const storageEntities = [ImageRow, OperationRow, SrRow, VdiRow, VbdRow, DiskMigrationRow];
