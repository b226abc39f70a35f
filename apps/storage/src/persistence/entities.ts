import { Column, CreateDateColumn, Entity, PrimaryColumn, UpdateDateColumn } from 'typeorm';
import { OperationRow } from '@flotilla/platform';

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

export const storageEntities = [ImageRow, OperationRow];
