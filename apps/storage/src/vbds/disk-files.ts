import { EntityManager } from 'typeorm';
import { storageV1 } from '@flotilla/contracts';
import { DomainError, ErrorCode, failedPrecondition } from '@flotilla/domain';
import { SrRow, VdiRow } from '../persistence/entities';
import { srVisibleFromHost } from '../srs/sr-space';
import { VbdRow } from './vbd.entity';

/** A VBD's VDI and SR, read together: what a host needs to open the disk. */
export interface DiskSource {
  vdi: VdiRow;
  sr: SrRow;
}

export async function diskSource(m: EntityManager, vbd: Pick<VbdRow, 'id' | 'vdiId'>): Promise<DiskSource> {
  const vdi = vbd.vdiId ? await m.findOneBy(VdiRow, { id: vbd.vdiId }) : null;
  if (!vdi)
    throw new DomainError(
      ErrorCode.FailedPrecondition,
      `vbd ${vbd.id} refers to vdi ${vbd.vdiId ?? '(none)'}, which no longer exists: destroy the VBD`,
      { resource: `vbd ${vbd.id}` },
    );
  const sr = await m.findOneByOrFail(SrRow, { id: vdi.srId });
  return { vdi, sr };
}

/**
 * FAILED_PRECONDITION unless the VDI can be opened on the host now: READY, its SR usable and visible from
 * the host. `hostName` only makes the message readable.
 */
export function assertAttachableOn({ vdi, sr }: DiskSource, hostId: string, hostName = hostId): void {
  const what = `vdi ${vdi.name} (${vdi.id})`;
  if (vdi.state !== 'READY')
    throw failedPrecondition(
      `${what} is ${vdi.state}${vdi.stateReason ? ` (${vdi.stateReason})` : ''}: only a READY VDI can be attached`,
      { resource: `vdi ${vdi.id}` },
    );
  if (sr.state !== 'AVAILABLE' && sr.state !== 'DEGRADED')
    throw failedPrecondition(
      `${what} is in SR ${sr.name}, which is ${sr.state}${sr.stateReason ? ` (${sr.stateReason})` : ''}: fix the SR and scan it`,
      { resource: `sr ${sr.id}` },
    );
  if (!srVisibleFromHost(sr, hostId))
    throw failedPrecondition(
      sr.type === 'FILE'
        ? `${what} is on FILE SR ${sr.name} of another host than ${hostName}: a FILE SR serves VMs of its own host only; copy the VDI to a SHARED SR or to an SR of ${hostName}`
        : `${what} is on SHARED SR ${sr.name}, which host ${hostName} does not see: mount the share there and scan the SR`,
      { resource: `sr ${sr.id}` },
    );
}

/** The disk as its host runs it (VmDisk): paths come from storage's records, never from a user. */
export function vmDisk(vbd: VbdRow, { vdi, sr }: DiskSource): storageV1.VmDisk {
  return {
    vbdId: vbd.id,
    vdiId: vdi.id,
    devicePosition: vbd.devicePosition,
    readOnly: vbd.mode === 'RO',
    bootable: vbd.bootable,
    srId: sr.id,
    srPath: sr.path,
    file: vdi.file,
  };
}
