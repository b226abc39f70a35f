import { Column, CreateDateColumn, Entity, PrimaryColumn, UpdateDateColumn } from 'typeorm';

/**
 * PREPARED: target files made (or being made), space reserved, the copied VDIs held. COMMITTED: the VDIs
 * live in their target files and the VBDs are attached on the destination; the old top files are held
 * until the clean-up. ABORTED: the target files are given to the chain keeper to delete. CLEANED: the old
 * top files are gone.
 */
export type DiskMigrationState = 'PREPARED' | 'COMMITTED' | 'ABORTED' | 'CLEANED';

/** One disk a migration copies: from the VDI's top file on the source SR to a new file on the target SR. */
export interface DiskCopy {
  vbdId: string;
  vdiId: string;
  sourceSrId: string;
  sourceFile: string;
  targetSrId: string;
  targetFile: string;
  /**
   * The hidden record of the target file while PREPARED (CREATING, holding the reserved space), so no scan
   * introduces the file and the chain keeper leaves it alone; it is the VDI's file once COMMITTED.
   */
  targetNodeId: string;
  /** The hidden record the old top file gets at the commit (held until the clean-up deletes the file). */
  oldTopNodeId: string;
  virtualSizeBytes: number;
}

/** The storage side of one VM migration (VmDiskService Prepare/Commit/Abort/CleanUpVmDiskMigration). */
@Entity({ name: 'disk_migrations' })
export class DiskMigrationRow {
  /** The migration service's id for the migration. */
  @PrimaryColumn({ name: 'migration_id', type: 'uuid' }) migrationId!: string;
  @Column({ name: 'vm_id', type: 'uuid' }) vmId!: string;
  @Column({ name: 'source_host_id', type: 'uuid' }) sourceHostId!: string;
  @Column({ name: 'destination_host_id', type: 'uuid' }) destinationHostId!: string;
  @Column('text') state!: DiskMigrationState;
  /** The disks to copy (none when every disk stays on a SHARED SR). */
  @Column('jsonb') copies!: DiskCopy[];
  @Column('int') version!: number;
  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' }) createdAt!: Date;
  @UpdateDateColumn({ name: 'updated_at', type: 'timestamptz' }) updatedAt!: Date;
}
