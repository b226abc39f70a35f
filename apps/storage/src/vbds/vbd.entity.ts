import { Column, CreateDateColumn, Entity, PrimaryColumn, UpdateDateColumn } from 'typeorm';
import type { VbdMode, VbdState, VbdType } from '@flotilla/domain';

/** A VDI's attachment to a VM. The VM lives in compute: vm_id is its id there, checked through compute. */
@Entity({ name: 'vbds' })
export class VbdRow {
  @PrimaryColumn('uuid') id!: string;
  @Column('text') name!: string;
  /** The VM's tenant. */
  @Column({ name: 'tenant_id', type: 'text' }) tenantId!: string;
  @Column('jsonb') labels!: Record<string, string>;
  @Column({ name: 'vm_id', type: 'uuid' }) vmId!: string;
  /** Null only for an empty CD-ROM drive. */
  @Column({ name: 'vdi_id', type: 'uuid', nullable: true }) vdiId!: string | null;
  @Column({ name: 'device_position', type: 'int' }) devicePosition!: number;
  @Column('text') type!: VbdType;
  @Column('text') mode!: VbdMode;
  @Column('boolean') bootable!: boolean;
  @Column('boolean') unpluggable!: boolean;
  @Column('text') state!: VbdState;
  /** Guest device name while ATTACHED ("vda", "sr0"); empty while DETACHED. */
  @Column('text') device!: string;
  @Column({ name: 'hot_plugged', type: 'boolean' }) hotPlugged!: boolean;
  /** The host the VDI is attached on while ATTACHED or UNKNOWN. */
  @Column({ name: 'host_id', type: 'uuid', nullable: true }) hostId!: string | null;
  @Column({ name: 'current_operation_id', type: 'uuid', nullable: true }) currentOperationId!: string | null;
  /**
   * RW on a VDI that is not sharable: the unique index vbds_one_writer lets one such VBD exist per VDI, so
   * two concurrent creates cannot both make a VM a writer ("one writer unless sharable").
   */
  @Column({ name: 'exclusive_writer', type: 'boolean' }) exclusiveWriter!: boolean;
  /** The VDI was provisioned with the VM (its root disk): releasing the VM's disks destroys it. */
  @Column({ name: 'owns_vdi', type: 'boolean' }) ownsVdi!: boolean;
  @Column({ name: 'request_tenant_id', type: 'text' }) requestTenantId!: string;
  @Column({ name: 'request_id', type: 'text', nullable: true }) requestId!: string | null;
  @Column('int') version!: number;
  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' }) createdAt!: Date;
  @UpdateDateColumn({ name: 'updated_at', type: 'timestamptz' }) updatedAt!: Date;
}
