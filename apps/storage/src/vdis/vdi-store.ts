import { EntityManager } from 'typeorm';
import { storageV1 } from '@flotilla/contracts';
import { DomainError, ErrorCode, failedPrecondition, isTerminal, notFound } from '@flotilla/domain';
import { Caller, OperationRow, OperationService } from '@flotilla/platform';
import { SrRow, VdiRow } from '../persistence/entities';
import { srVisibleFromHost } from '../srs/sr-space';
import { VdiService } from './vdi.service';

/** A service acting for a tenant (compute provisioning a VM's root disk, VBDs checking a VDI). */
export const serviceCaller = (tenantId: string): Caller => ({
  tenantId,
  role: 'pool-admin',
  crossTenant: true,
});

/** Where a VDI's top file is, for the agent that opens it. */
export interface VdiLocation {
  vdi: VdiRow;
  sr: SrRow;
  disk: storageV1.DiskLocation;
}

/**
 * What the VBD and VmDisk modules use of VDIs (they own attachments; this side owns files, chains and
 * space). Reads take the caller's EntityManager so they join the caller's transaction.
 */
export class VdiStore {
  constructor(
    private readonly vdis: VdiService,
    private readonly operations: OperationService,
  ) {}

  /** A VDI the caller's tenant may use (NOT_FOUND otherwise, hidden nodes included). */
  visible(m: EntityManager, caller: Caller, idOrName: string): Promise<VdiRow> {
    return this.vdis.get(caller, idOrName, m);
  }

  /**
   * FAILED_PRECONDITION unless the VDI may get a VBD now: READY, managed, SR usable, no operation in
   * flight, and RO for read-only VDIs. (One writer unless sharable is the VBD module's unique index.)
   */
  async assertAttachable(m: EntityManager, vdi: VdiRow, mode: 'RO' | 'RW'): Promise<void> {
    await this.vdis.assertAllowed(m, vdi, 'ATTACH');
    if (mode === 'RW' && vdi.readOnly)
      throw failedPrecondition(
        `vdi ${vdi.name} (${vdi.id}) is read-only (${vdi.isSnapshot ? 'a snapshot' : 'an image base'}): attach it RO, or clone it and attach the clone RW`,
        { resource: `vdi ${vdi.id}` },
      );
  }

  /** The VDI's SR and top file; FAILED_PRECONDITION when host `hostId` (if given) does not see the SR. */
  async location(m: EntityManager, vdiId: string, hostId?: string): Promise<VdiLocation> {
    const vdi = await m.findOneBy(VdiRow, { id: vdiId });
    if (!vdi) throw notFound('vdi', vdiId);
    if (vdi.state !== 'READY')
      throw failedPrecondition(
        `vdi ${vdi.name} (${vdi.id}) is ${vdi.state}${vdi.stateReason ? `: ${vdi.stateReason}` : ''}`,
        {
          resource: `vdi ${vdi.id}`,
        },
      );
    const sr = await m.findOneByOrFail(SrRow, { id: vdi.srId });
    if (hostId && !srVisibleFromHost(sr, hostId))
      throw failedPrecondition(
        `vdi ${vdi.name} is in SR ${sr.name}, which host ${hostId} does not see (${sr.type}${sr.type === 'FILE' ? ` on host ${sr.hostId}` : ''}, ${sr.state}): run the VM where the SR is, or copy the VDI`,
        { resource: `vdi ${vdi.id}` },
      );
    return { vdi, sr, disk: { srId: sr.id, srPath: sr.path, file: vdi.file } };
  }

  /**
   * Starts a VDI that is a linked clone of a DISK image (the image's base is copied into the SR first if
   * it has none there). Idempotent by requestId (e.g. `root:<vm id>`) within the tenant.
   */
  createFromImage(spec: {
    tenantId: string;
    srId: string;
    image: string;
    name: string;
    virtualSizeBytes: number;
    requestId: string;
  }): Promise<{ vdi: VdiRow; operation: OperationRow }> {
    return this.vdis.create(serviceCaller(spec.tenantId), {
      srId: spec.srId,
      name: spec.name,
      image: spec.image,
      virtualSizeBytes: spec.virtualSizeBytes,
      requestId: spec.requestId,
      tenantId: spec.tenantId,
    });
  }

  /** Starts the destroy of a VDI (its VBDs must be detached); a repeat with the same requestId is one. */
  destroy(vdiId: string, requestId: string): Promise<OperationRow> {
    return this.vdis.destroy(serviceCaller(''), { id: vdiId, requestId, etag: '' });
  }

  /** Waits for an operation; throws its error when it failed, the VDI when it succeeded. */
  async waitReady(operationId: string, vdiId: string, timeoutMs = 600_000): Promise<VdiRow> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const op = await this.operations.wait(
        serviceCaller(''),
        operationId,
        Math.min(60_000, Math.max(1, deadline - Date.now())),
      );
      if (op.state === 'SUCCEEDED') return this.vdis.get(serviceCaller(''), vdiId);
      if (isTerminal(op.state))
        throw new DomainError(
          (op.errorCode as ErrorCode) ?? ErrorCode.Internal,
          op.errorMessage ?? `operation ${op.id} ${op.state}`,
        );
      if (Date.now() >= deadline)
        throw new DomainError(
          ErrorCode.DeadlineExceeded,
          `operation ${op.id} did not finish in ${timeoutMs} ms`,
        );
    }
  }
}
