import { randomUUID } from 'node:crypto';
import { EntityManager, In, Not } from 'typeorm';
import { storageV1 } from '@flotilla/contracts';
import {
  DomainError,
  ErrorCode,
  failedPrecondition,
  guestDeviceNames,
  invalidArgument,
  isDomainError,
  isUuid,
  notFound,
  srVisibleTo,
  truncate,
  validateId,
} from '@flotilla/domain';
import { Emit, Logger, TransactionalStore, updateVersionedRow } from '@flotilla/platform';
import { ImageRow, SrRow, VdiRow } from '../persistence/entities';
import { assertAttachableOn, diskSource, vmDisk } from './disk-files';
import { VbdRow } from './vbd.entity';
import { vbdEvent } from './vbd.mapper';
import { insertVbdIfAbsent, NewVbd } from './vbd.service';

/** The label that makes an SR the pool's default for root disks. */
export const defaultSrLabel = 'flotilla.default';

/** What root disks need from the VDI side: a linked clone of an image, and its destruction. */
export interface RootDiskVdis {
  /**
   * A writable linked clone of the DISK image in the SR (its base is copied there first if the SR has
   * none), for the tenant. Idempotent by requestId: a repeat finds the first clone. Resolves once READY;
   * rejects with the clone's error (NOT_FOUND, FAILED_PRECONDITION, INVALID_ARGUMENT, RESOURCE_EXHAUSTED).
   */
  cloneImage(req: {
    tenantId: string;
    name: string;
    image: string;
    srId: string;
    virtualSizeBytes: number;
    requestId: string;
  }): Promise<VdiRow>;
  /** Destroys the VDI (record and file); resolves once its record is gone. A missing VDI is done. */
  destroy(vdiId: string): Promise<void>;
}

/**
 * The disks of the VMs compute starts, stops and destroys (VmDiskService, internal). Storage keeps the VBD
 * records, the rule "one writer unless sharable" and the files: compute only says which host.
 */
export class VmDiskService {
  constructor(
    private readonly store: TransactionalStore,
    private readonly vdis: RootDiskVdis,
    private readonly logger: Logger,
  ) {}

  async provisionRootDisk(req: storageV1.ProvisionRootDiskRequest): Promise<storageV1.VmDisk> {
    const vmId = validateId('vm_id', req.vmId, 'VM');
    if (!req.tenantId) throw invalidArgument('tenant_id', "is required: the VM's tenant");
    if (!req.image) throw invalidArgument('image', 'is required: a DISK catalogue image id or name');
    if (!Number.isSafeInteger(req.virtualSizeBytes) || req.virtualSizeBytes < 0)
      throw invalidArgument(
        'virtual_size_bytes',
        `${req.virtualSizeBytes} is out of range: 0 (the image's size) or more`,
      );
    const requestId = `vm-root-disk:${vmId}`;
    const existing = await this.store.manager.findOneBy(VbdRow, { vmId, ownsVdi: true, devicePosition: 0 });
    if (existing) return vmDisk(existing, await diskSource(this.store.manager, existing));

    const srId = await this.rootDiskSr(req);
    const vdi = await this.vdis.cloneImage({
      tenantId: req.tenantId,
      name: `${req.vmName || vmId} root`,
      image: req.image,
      srId,
      virtualSizeBytes: req.virtualSizeBytes,
      requestId,
    });
    const now = new Date();
    const row: NewVbd = {
      id: randomUUID(),
      name: 'root',
      tenantId: req.tenantId,
      labels: {},
      vmId,
      vdiId: vdi.id,
      devicePosition: 0,
      type: 'DISK',
      mode: 'RW',
      bootable: true,
      unpluggable: false,
      state: 'DETACHED',
      device: '',
      hotPlugged: false,
      hostId: null,
      currentOperationId: null,
      exclusiveWriter: !vdi.sharable,
      ownsVdi: true,
      requestTenantId: req.tenantId,
      requestId,
      version: 1,
      createdAt: now,
      updatedAt: now,
    };
    const created = await this.store.tx(async (m, emit) => {
      if (!(await insertVbdIfAbsent(m, row))) return undefined;
      emit(vbdEvent('CREATED', row));
      return row;
    });
    const vbd =
      created ?? (await this.store.manager.findOneBy(VbdRow, { requestTenantId: req.tenantId, requestId }));
    if (!vbd)
      throw failedPrecondition(
        `vm ${vmId} already has a VBD at position 0: its root disk goes there; destroy that VBD first`,
        { resource: `vm ${vmId}` },
      );
    return vmDisk(vbd, await diskSource(this.store.manager, vbd));
  }

  /**
   * Marks every VBD of the VM ATTACHED on the host and returns its disks in device order, all or nothing.
   * Refused when a VDI is not READY, not visible from the host, or written by another running VM.
   */
  async attach(req: storageV1.AttachVmDisksRequest): Promise<storageV1.VmDisk[]> {
    const vmId = validateId('vm_id', req.vmId, 'VM');
    const hostId = validateId('host_id', req.hostId, 'host');
    return this.store.tx((m, emit) => attachVmDisks(m, emit, vmId, hostId));
  }

  /** Marks the VM's VBDs DETACHED (those on host_id, or all when it is empty). Idempotent. */
  async detach(req: storageV1.DetachVmDisksRequest): Promise<void> {
    const vmId = validateId('vm_id', req.vmId, 'VM');
    const hostId = req.hostId ? validateId('host_id', req.hostId, 'host') : undefined;
    await this.store.tx(async (m, emit) => {
      const vbds = await m.find(VbdRow, {
        where: { vmId, state: Not('DETACHED'), ...(hostId ? { hostId } : {}) },
        lock: { mode: 'pessimistic_write' },
      });
      for (const vbd of vbds)
        await update(m, emit, vbd, { state: 'DETACHED', hostId: null, device: '', hotPlugged: false });
    });
  }

  /**
   * The VM is being destroyed: its VBDs go, and so do the VDIs provisioned with it (its root disk). Each
   * step is idempotent, so a repeat after a failure finishes the work.
   */
  async release(req: storageV1.ReleaseVmDisksRequest): Promise<void> {
    const vmId = validateId('vm_id', req.vmId, 'VM');
    await this.detach({ vmId, hostId: '' });
    const owned = await this.store.manager.find(VbdRow, { where: { vmId, ownsVdi: true } });
    for (const vbd of owned) {
      if (!vbd.vdiId) continue;
      this.logger.info({ vmId, vdiId: vbd.vdiId }, 'destroying the root disk of a destroyed VM');
      await this.destroyWhenIdle(vbd.vdiId);
    }
    await this.store.tx(async (m, emit) => {
      const rest = await m.find(VbdRow, { where: { vmId }, lock: { mode: 'pessimistic_write' } });
      // An owned VDI still recorded was not destroyed: its VBD stays, so that a repeat destroys it.
      const remaining = new Set(
        (
          await m.find(VdiRow, {
            where: { id: In(rest.flatMap((v) => (v.ownsVdi && v.vdiId ? [v.vdiId] : []))) },
          })
        ).map((d) => d.id),
      );
      const gone = rest.filter((v) => !(v.ownsVdi && v.vdiId && remaining.has(v.vdiId)));
      if (!gone.length) return;
      await m.delete(VbdRow, { id: In(gone.map((v) => v.id)) });
      for (const v of gone) emit(vbdEvent('DELETED', v));
    });
  }

  /**
   * Destroys a VDI, waiting a while for an operation in flight on it (a background coalesce after a
   * snapshot was deleted takes a second or so): a VM's destroy should not fail for the keeper's work.
   * Compute's call allows 30 s; past 20 s the refusal goes back and a repeat of the destroy finishes it.
   */
  private async destroyWhenIdle(vdiId: string, patienceMs = 20_000): Promise<void> {
    const giveUpAt = Date.now() + patienceMs;
    for (;;) {
      try {
        return await this.vdis.destroy(vdiId);
      } catch (e) {
        const busy =
          isDomainError(e) && e.code === ErrorCode.FailedPrecondition && /in progress on it/.test(e.message);
        if (!busy || Date.now() >= giveUpAt) throw e;
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    }
  }

  /** The given SR (id or name), else the SR labelled flotilla.default=true, else the image's own SR. */
  private async rootDiskSr(req: storageV1.ProvisionRootDiskRequest): Promise<string> {
    const m = this.store.manager;
    const tenant = { tenantId: req.tenantId, crossTenant: false };
    if (req.srId) {
      const sr = isUuid(req.srId)
        ? await m.findOneBy(SrRow, { id: req.srId.toLowerCase() })
        : await m.findOneBy(SrRow, { name: req.srId });
      if (!sr || !srVisibleTo(sr, tenant)) {
        const e = notFound('sr', req.srId);
        throw new DomainError(e.code, e.message, { ...e.fields, field: 'sr_id' });
      }
      return sr.id;
    }
    const defaults = await m
      .createQueryBuilder(SrRow, 's')
      .where('s.labels ->> :label = :yes', { label: defaultSrLabel, yes: 'true' })
      .andWhere("(s.tenant_id = '' OR s.tenant_id = :tenant)", { tenant: req.tenantId })
      .andWhere("s.state IN ('AVAILABLE', 'DEGRADED')")
      // A tenant's own default SR before the pool's.
      .orderBy('s.tenant_id', 'DESC')
      .addOrderBy('s.name')
      .getMany();
    if (defaults.length) return defaults[0].id;
    const image = isUuid(req.image)
      ? await m.findOneBy(ImageRow, { id: req.image.toLowerCase() })
      : await m.findOneBy(ImageRow, { name: req.image });
    const base = image?.vdiId ? await m.findOneBy(VdiRow, { id: image.vdiId }) : null;
    if (base) return base.srId;
    if (!image || (image.visibility !== 'PUBLIC' && image.tenantId !== req.tenantId)) {
      const e = notFound('image', req.image);
      throw new DomainError(e.code, e.message, { ...e.fields, field: 'image' });
    }
    throw failedPrecondition(
      `no SR for the root disk of image ${truncate(image.name, 63)}: label an SR ${defaultSrLabel}=true, or give root_disk_sr`,
      { field: 'sr_id' },
    );
  }
}

/**
 * Marks every VBD of the VM ATTACHED on the host and returns its disks in device order, in the caller's
 * transaction (AttachVmDisks, and a migration's commit). Refused when a VDI is not READY, not visible from
 * the host, or written by another running VM.
 */
export async function attachVmDisks(
  m: EntityManager,
  emit: Emit,
  vmId: string,
  hostId: string,
): Promise<storageV1.VmDisk[]> {
  const vbds = await m.find(VbdRow, {
    where: { vmId },
    order: { devicePosition: 'ASC' },
    lock: { mode: 'pessimistic_write' },
  });
  const devices = guestDeviceNames(vbds);
  const disks: storageV1.VmDisk[] = [];
  for (const [i, vbd] of vbds.entries()) {
    if (vbd.vdiId) {
      const source = await diskSource(m, vbd);
      assertAttachableOn(source, hostId);
      if (vbd.mode === 'RW' && !source.vdi.sharable) {
        const other = await m.findOneBy(VbdRow, {
          vdiId: vbd.vdiId,
          vmId: Not(vmId),
          mode: 'RW',
          state: In(['ATTACHED', 'UNKNOWN']),
        });
        if (other)
          throw failedPrecondition(
            `vdi ${source.vdi.name} (${source.vdi.id}) is written by running vm ${other.vmId} and is not sharable: stop that VM or attach this disk read-only`,
            { resource: `vdi ${source.vdi.id}` },
          );
      }
      disks.push(vmDisk(vbd, source));
    }
    const attached = { state: 'ATTACHED' as const, hostId, device: devices[i], hotPlugged: false };
    if (vbd.state !== 'ATTACHED' || vbd.hostId !== hostId || vbd.device !== devices[i] || vbd.hotPlugged)
      await update(m, emit, vbd, attached);
  }
  return disks;
}

async function update(
  m: Parameters<typeof updateVersionedRow>[0],
  emit: Emit,
  vbd: VbdRow,
  changes: Partial<VbdRow>,
) {
  const saved = await updateVersionedRow(
    m,
    VbdRow,
    { kind: 'vbd', id: vbd.id, version: vbd.version },
    changes,
  );
  emit(vbdEvent('UPDATED', saved));
}
