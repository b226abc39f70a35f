import { randomUUID } from 'node:crypto';
import { EntityManager, In } from 'typeorm';
import { storageV1 } from '@flotilla/contracts';
import {
  assertSrOperationAllowed,
  assertVdiOperationAllowed,
  checkPhysicalSpace,
  checkVirtualAllocation,
  conflict,
  diskFileName,
  DomainError,
  ErrorCode,
  expectPresent,
  failedPrecondition,
  fullCopyBytes,
  invalidArgument,
  isUuid,
  notFound,
  parsePage,
  srVisibleTo,
  validateDescription,
  validateLabels,
  validateRequestId,
  validateVdiName,
  validateVirtualSize,
  VdiOperation,
} from '@flotilla/domain';
import {
  Caller,
  Emit,
  fetchPage,
  NewOperation,
  OperationParams,
  OperationRow,
  OperationService,
  requireRole,
  TransactionalStore,
} from '@flotilla/platform';
import { ImageRow, SrRow, VdiRow } from '../persistence/entities';
import { StorageRunner } from '../srs/operation-runner';
import { lockSr, srSpace } from '../srs/sr-space';
import { attachmentOf, VbdHook } from './vbd-hook';
import { VdiExtras, vdiEvent } from './vdi.mapper';

const listFields = [
  'name',
  'sr_id',
  'state',
  'is_snapshot',
  'snapshot_of',
  'parent_id',
  'image_id',
  'managed',
  'label.*',
] as const;

/** A new VDI as the requests build it. */
export function newVdiRow(fields: Partial<VdiRow> & Pick<VdiRow, 'name' | 'tenantId' | 'srId'>): VdiRow {
  const now = new Date();
  const id = fields.id ?? randomUUID();
  return {
    id,
    labels: {},
    description: '',
    state: 'CREATING',
    stateReason: '',
    virtualSizeBytes: 0,
    physicalUtilisationBytes: 0,
    file: diskFileName(id),
    parentId: null,
    isSnapshot: false,
    snapshotOf: null,
    snapshotTime: null,
    readOnly: false,
    sharable: false,
    managed: true,
    imageId: null,
    imageBase: false,
    currentOperationId: null,
    reservedPhysicalBytes: 0,
    requestTenantId: '',
    requestId: null,
    version: 1,
    createdAt: now,
    updatedAt: now,
    ...fields,
  };
}

/** Parameters every VDI operation records for its rollback: rows it created, extra files it made. */
export const rollbackParams = (vdiIds: string[], files: string[] = []): OperationParams => ({
  rollbackVdiIds: vdiIds.join(','),
  rollbackFiles: files.join(','),
});

/** An operation's record kind ('vdi.resize') and the lifecycle table's name for it (RESIZE). */
interface VdiOperationKind {
  kind: string;
  guard: VdiOperation;
}

export interface CreateVdiSpec {
  srId: string;
  name: string;
  description?: string;
  labels?: Record<string, string>;
  virtualSizeBytes: number;
  sharable?: boolean;
  image?: string;
  requestId?: string;
  /** The tenant that owns the VDI (internal callers act for a tenant); default the caller's. */
  tenantId?: string;
}

/**
 * Virtual disks: the requests (validated, authorised, space reserved and recorded with their operation in
 * one transaction, before any file is written); VdiOperations carries them out against the agents.
 */
export class VdiService {
  constructor(
    private readonly store: TransactionalStore,
    private readonly operations: OperationService,
    private readonly runner: StorageRunner,
    private readonly vbds: () => VbdHook,
  ) {}

  /** By id (or, when unique among the caller's, by name); another tenant's VDI is NOT_FOUND. */
  async get(caller: Caller, idOrName: string, m: EntityManager = this.store.manager): Promise<VdiRow> {
    if (!idOrName) throw invalidArgument('id', 'is required: a VDI id');
    let vdi: VdiRow | null;
    if (isUuid(idOrName)) vdi = await m.findOneBy(VdiRow, { id: idOrName.toLowerCase() });
    else {
      const named = (await m.findBy(VdiRow, { name: idOrName, managed: true })).filter((v) =>
        visible(caller, v),
      );
      if (named.length > 1)
        throw invalidArgument(
          'id',
          `${named.length} VDIs are named ${JSON.stringify(idOrName)}: give the VDI's id`,
        );
      vdi = named[0] ?? null;
    }
    if (!vdi || !visible(caller, vdi)) throw notFound('vdi', idOrName);
    return vdi;
  }

  async list(
    caller: Caller,
    page: storageV1.ListVdisRequest['page'],
  ): Promise<{ vdis: VdiRow[]; nextPageToken: string }> {
    const spec = parsePage(page, listFields);
    const qb = this.store.manager.createQueryBuilder(VdiRow, 'v');
    if (!caller.crossTenant) qb.andWhere('v.tenant_id = :tenant', { tenant: caller.tenantId });
    let managed = true;
    for (const [i, { field, value }] of spec.filter.entries()) {
      const p = `f${i}`;
      const bool = () => {
        if (value !== 'true' && value !== 'false')
          throw invalidArgument('page.filter', `${field} takes true or false`);
        return value === 'true';
      };
      if (field === 'managed') managed = bool();
      else if (field === 'name') qb.andWhere(`v.name = :${p}`, { [p]: value });
      else if (field === 'state')
        qb.andWhere(`v.state = :${p}`, { [p]: value.toUpperCase().replace(/^VDI_STATE_/, '') });
      else if (field === 'is_snapshot') qb.andWhere(`v.is_snapshot = :${p}`, { [p]: bool() });
      else if (field.startsWith('label.'))
        qb.andWhere(`v.labels ->> :k${i} = :${p}`, { [`k${i}`]: field.slice('label.'.length), [p]: value });
      else qb.andWhere(`v.${field}::text = :${p}`, { [p]: value.toLowerCase() });
    }
    if (!managed) requireRole(caller, 'pool-operator', 'listing hidden chain nodes (managed=false)');
    qb.andWhere('v.managed = :managed', { managed });
    const { rows, nextPageToken } = await fetchPage(
      qb.orderBy('v.created_at').addOrderBy('v.id'),
      spec,
      page?.filter,
    );
    return { vdis: rows, nextPageToken };
  }

  /** Snapshots, VBDs, attachment and SR usability of VDIs, for their messages and guards. */
  async extras(
    rows: readonly VdiRow[],
    m: EntityManager = this.store.manager,
  ): Promise<Map<string, VdiExtras>> {
    const ids = rows.map((r) => r.id);
    const out = new Map<string, VdiExtras>();
    if (!ids.length) return out;
    const snaps = await m.find(VdiRow, {
      where: { snapshotOf: In(ids), managed: true },
      order: { snapshotTime: 'ASC', createdAt: 'ASC' },
    });
    const vbds = await this.vbds().vbdsOf(m, ids);
    const srs = await m.findBy(SrRow, { id: In([...new Set(rows.map((r) => r.srId))]) });
    for (const r of rows) {
      const mine = vbds.filter((b) => b.vdiId === r.id);
      const sr = srs.find((s) => s.id === r.srId);
      out.set(r.id, {
        snapshotIds: snaps.filter((s) => s.snapshotOf === r.id).map((s) => s.id),
        vbdIds: mine.map((b) => b.vbdId),
        attachment: attachmentOf(mine),
        srUsable: !!sr && (sr.state === 'AVAILABLE' || sr.state === 'DEGRADED'),
      });
    }
    return out;
  }

  /** The guard of every VDI operation: the lifecycle table applied to the VDI as it is now. */
  async assertAllowed(m: EntityManager, vdi: VdiRow, op: VdiOperation): Promise<VdiExtras> {
    const extras = expectPresent((await this.extras([vdi], m)).get(vdi.id), `no extras for vdi ${vdi.id}`);
    assertVdiOperationAllowed(
      {
        id: vdi.id,
        name: vdi.name,
        state: vdi.state,
        readOnly: vdi.readOnly,
        isSnapshot: vdi.isSnapshot,
        managed: vdi.managed,
        imageBase: vdi.imageBase,
        attachment: extras.attachment,
        srUsable: extras.srUsable,
        currentOperationId: vdi.currentOperationId,
      },
      op,
    );
    return extras;
  }

  async create(caller: Caller, spec: CreateVdiSpec): Promise<{ vdi: VdiRow; operation: OperationRow }> {
    requireRole(caller, 'vm-admin', 'creating a VDI');
    const name = validateVdiName('name', spec.name);
    const requestId = validateRequestId(spec.requestId);
    const tenantId = spec.tenantId ?? caller.tenantId;
    const out = await this.store.tx(async (m, emit) => {
      const earlier = await this.earlier(m, caller, requestId, 'vdi.create');
      if (earlier) return { ...earlier, fresh: false };
      const sr = await this.usableSr(m, caller, spec.srId, 'sr_id');
      let size = spec.virtualSizeBytes;
      let image: DiskImage | undefined;
      let base: VdiRow | undefined;
      let baseSource: VdiRow | undefined;
      if (spec.image) {
        image = await this.diskImage(m, caller, spec.image);
        if (size === 0) size = image.virtualSizeBytes;
        else if (validateVirtualSize('virtual_size_bytes', size) < image.virtualSizeBytes)
          throw invalidArgument(
            'virtual_size_bytes',
            `${size} is smaller than image ${image.name} (${image.virtualSizeBytes} bytes): give 0 for the image's size, or more`,
          );
        base = (await m.findOneBy(VdiRow, { srId: sr.id, imageId: image.id, imageBase: true })) ?? undefined;
        if (!base) baseSource = await m.findOneByOrFail(VdiRow, { id: image.vdiId });
      }
      size = validateVirtualSize('virtual_size_bytes', size);
      const space = await srSpace(m, sr);
      checkVirtualAllocation(space, size, `vdi ${name}`);
      const vdi = newVdiRow({
        name,
        tenantId,
        srId: sr.id,
        description: validateDescription('description', spec.description ?? ''),
        labels: validateLabels('labels', spec.labels),
        virtualSizeBytes: size,
        sharable: spec.sharable ?? false,
        imageId: image?.id ?? null,
        requestTenantId: caller.tenantId,
        requestId: requestId ?? null,
      });
      const created = [vdi.id];
      if (image && baseSource) {
        // The image's first clone in this SR copies its base here once, as a hidden read-only node.
        const bytes = fullCopyBytes(baseSource.virtualSizeBytes, baseSource.physicalUtilisationBytes);
        checkPhysicalSpace(space, bytes, `the copy of image ${image.name}'s base`);
        base = newVdiRow({
          name: `base of image ${image.name}`,
          tenantId: '',
          srId: sr.id,
          virtualSizeBytes: baseSource.virtualSizeBytes,
          readOnly: true,
          managed: false,
          imageId: image.id,
          imageBase: true,
          reservedPhysicalBytes: bytes,
        });
        created.push(base.id);
      }
      vdi.parentId = base?.id ?? null;
      const operation = await this.operations.create(m, emit, {
        kind: 'vdi.create',
        target: { kind: 'vdi', id: vdi.id, name },
        tenantId: caller.tenantId,
        params: {
          baseId: base?.id ?? null,
          baseSourceId: baseSource?.id ?? null,
          ...rollbackParams(created),
        },
      });
      vdi.currentOperationId = operation.id;
      if (base && baseSource) {
        base.currentOperationId = operation.id;
        await m.insert(VdiRow, base);
        emit(vdiEvent('CREATED', base));
      }
      await m.insert(VdiRow, vdi);
      emit(vdiEvent('CREATED', vdi));
      return { vdi, operation, fresh: true };
    });
    if (out.fresh) this.runner.enqueue(out.operation);
    return { vdi: out.vdi, operation: out.operation };
  }

  async resize(caller: Caller, req: storageV1.ResizeVdiRequest): Promise<OperationRow> {
    requireRole(caller, 'vm-admin', 'resizing a VDI');
    return this.onExisting(caller, req, { kind: 'vdi.resize', guard: 'RESIZE' }, async (m, vdi, sr) => {
      const size = validateVirtualSize('virtual_size_bytes', req.virtualSizeBytes);
      if (size <= vdi.virtualSizeBytes)
        throw invalidArgument(
          'virtual_size_bytes',
          `${req.virtualSizeBytes} is not larger than the VDI's ${vdi.virtualSizeBytes} bytes: VDIs only grow (shrinking would cut guest file systems); give a larger size`,
        );
      checkVirtualAllocation(await srSpace(m, sr), size - vdi.virtualSizeBytes, `growing vdi ${vdi.name}`);
      // The new size is reserved now; a failed resize gives it back.
      return {
        params: { newSize: size, oldSize: vdi.virtualSizeBytes },
        changes: { virtualSizeBytes: size },
      };
    });
  }

  async destroy(caller: Caller, req: storageV1.DestroyVdiRequest): Promise<OperationRow> {
    requireRole(caller, 'vm-admin', 'destroying a VDI');
    return this.onExisting(
      caller,
      req,
      { kind: 'vdi.destroy', guard: 'DESTROY', allowUnusableSr: true },
      async () => ({ params: {} }),
    );
  }

  async revert(caller: Caller, req: storageV1.RevertVdiRequest): Promise<OperationRow> {
    requireRole(caller, 'vm-power-admin', 'reverting a VDI');
    return this.onExisting(caller, req, { kind: 'vdi.revert', guard: 'REVERT' }, async (m, vdi, sr) => {
      if (!req.snapshotId) throw invalidArgument('snapshot_id', 'is required: a snapshot of this VDI');
      const snap = isUuid(req.snapshotId)
        ? await m.findOneBy(VdiRow, { id: req.snapshotId.toLowerCase() })
        : null;
      if (!snap || !snap.isSnapshot || snap.snapshotOf !== vdi.id || !snap.managed)
        throw invalidArgument(
          'snapshot_id',
          `${req.snapshotId} is not a snapshot of vdi ${vdi.id}: list them with filter snapshot_of=${vdi.id}`,
        );
      if (snap.state !== 'READY')
        throw failedPrecondition(`snapshot ${snap.id} is ${snap.state}`, { resource: `vdi ${snap.id}` });
      // A storage migration moved the VDI and left its snapshots behind: a new top must be in the same SR.
      if (snap.srId !== vdi.srId)
        throw failedPrecondition(
          `snapshot ${snap.id} is on another SR than vdi ${vdi.name} (the VDI was moved by a migration): clone the snapshot instead`,
          { resource: `vdi ${snap.id}` },
        );
      checkVirtualAllocation(
        await srSpace(m, sr),
        snap.virtualSizeBytes - vdi.virtualSizeBytes,
        `reverting vdi ${vdi.name}`,
      );
      const newTop = diskFileName(randomUUID());
      return { params: { snapshotId: snap.id, newTopFile: newTop, ...rollbackParams([], [newTop]) } };
    });
  }

  async snapshot(
    caller: Caller,
    req: storageV1.SnapshotVdiRequest,
  ): Promise<{ vdi: VdiRow; operation: OperationRow }> {
    requireRole(caller, 'vm-power-admin', 'snapshotting a VDI');
    return this.deriving(caller, req, { kind: 'vdi.snapshot', guard: 'SNAPSHOT' }, async (m, source) => {
      const snapshot = newVdiRow({
        name: req.name
          ? validateVdiName('name', req.name)
          : `${source.name} ${new Date().toISOString()}`.slice(0, 255),
        tenantId: source.tenantId,
        srId: source.srId,
        labels: validateLabels('labels', req.labels),
        virtualSizeBytes: source.virtualSizeBytes,
        // It takes over the source's current file when the operation succeeds.
        file: '',
        isSnapshot: true,
        snapshotOf: source.id,
        snapshotTime: new Date(),
        readOnly: true,
        imageId: source.imageId,
      });
      const newTop = diskFileName(randomUUID());
      return {
        rows: [snapshot],
        params: { snapshotId: snapshot.id, newTopFile: newTop, ...rollbackParams([snapshot.id], [newTop]) },
      };
    });
  }

  async clone(
    caller: Caller,
    req: storageV1.CloneVdiRequest,
  ): Promise<{ vdi: VdiRow; operation: OperationRow }> {
    requireRole(caller, 'vm-admin', 'cloning a VDI');
    return this.deriving(caller, req, { kind: 'vdi.clone', guard: 'CLONE' }, async (m, source, sr) => {
      checkVirtualAllocation(await srSpace(m, sr), source.virtualSizeBytes, `clone of vdi ${source.name}`);
      const clone = newVdiRow({
        name: req.name ? validateVdiName('name', req.name) : `${source.name} (clone)`.slice(0, 255),
        tenantId: source.tenantId,
        srId: source.srId,
        labels: validateLabels('labels', req.labels),
        virtualSizeBytes: source.virtualSizeBytes,
        sharable: req.sharable,
        imageId: source.imageId,
      });
      const rows = [clone];
      const params: OperationParams = { cloneId: clone.id };
      if (!source.readOnly) {
        const hidden = newVdiRow({
          name: `frozen ${source.name}`,
          tenantId: source.tenantId,
          srId: source.srId,
          virtualSizeBytes: source.virtualSizeBytes,
          file: '',
          readOnly: true,
          managed: false,
        });
        rows.push(hidden);
        params.hiddenId = hidden.id;
        params.sourceNewFile = diskFileName(randomUUID());
      }
      clone.parentId = source.readOnly ? source.id : (params.hiddenId as string);
      const extra = typeof params.sourceNewFile === 'string' ? [params.sourceNewFile] : [];
      return {
        rows,
        params: {
          ...params,
          ...rollbackParams(
            rows.map((r) => r.id),
            extra,
          ),
        },
      };
    });
  }

  async copy(
    caller: Caller,
    req: storageV1.CopyVdiRequest,
  ): Promise<{ vdi: VdiRow; operation: OperationRow }> {
    requireRole(caller, 'vm-admin', 'copying a VDI');
    return this.deriving(caller, req, { kind: 'vdi.copy', guard: 'COPY' }, async (m, source) => {
      const target = req.srId
        ? await this.usableSr(m, caller, req.srId, 'sr_id')
        : await lockSr(m, source.srId);
      const space = await srSpace(m, target);
      const chain = await this.chainPhysicalBytes(m, source);
      const bytes = fullCopyBytes(source.virtualSizeBytes, chain);
      checkVirtualAllocation(space, source.virtualSizeBytes, `copy of vdi ${source.name}`);
      checkPhysicalSpace(space, bytes, `copy of vdi ${source.name}`);
      const copy = newVdiRow({
        name: req.name ? validateVdiName('name', req.name) : `${source.name} (copy)`.slice(0, 255),
        tenantId: source.tenantId,
        srId: target.id,
        labels: validateLabels('labels', req.labels),
        virtualSizeBytes: source.virtualSizeBytes,
        sharable: source.sharable,
        reservedPhysicalBytes: bytes,
      });
      return {
        rows: [copy],
        params: { sourceId: source.id, ...rollbackParams([copy.id]) },
        targetIsNew: true,
      };
    });
  }

  /** Bytes on disk of the VDI's file and every file it is backed by. */
  async chainPhysicalBytes(m: EntityManager, vdi: VdiRow): Promise<number> {
    let total = 0;
    const seen = new Set<string>();
    for (
      let cur: VdiRow | null = vdi;
      cur && !seen.has(cur.id);
      cur = cur.parentId ? await m.findOneBy(VdiRow, { id: cur.parentId }) : null
    ) {
      seen.add(cur.id);
      total += cur.physicalUtilisationBytes;
    }
    return total;
  }

  /** An operation on an existing VDI (resize, destroy, revert): guard, etag, idempotency, record. */
  private async onExisting(
    caller: Caller,
    req: { id: string; requestId: string; etag: string },
    options: VdiOperationKind & { allowUnusableSr?: boolean },
    prepare: (
      m: EntityManager,
      vdi: VdiRow,
      sr: SrRow,
    ) => Promise<{ params: OperationParams; changes?: Partial<VdiRow> }>,
  ): Promise<OperationRow> {
    const { kind, guard } = options;
    const rid = validateRequestId(req.requestId);
    const out = await this.store.tx(async (m, emit) => {
      const found = await this.get(caller, req.id, m);
      const sr = await lockSr(m, found.srId);
      const vdi = await m.findOneByOrFail(VdiRow, { id: found.id });
      const spec: NewOperation = {
        kind,
        target: { kind: 'vdi', id: vdi.id, name: vdi.name },
        tenantId: caller.tenantId,
        requestId: rid,
      };
      const earlier = await this.operations.findByRequest(m, spec);
      if (earlier) return { op: earlier, fresh: false };
      if (req.etag && req.etag !== String(vdi.version)) throw conflict('vdi', vdi.id);
      if (!(options.allowUnusableSr && vdi.state === 'MISSING')) await this.assertAllowed(m, vdi, guard);
      const { params, changes } = await prepare(m, vdi, sr);
      const op = await this.operations.create(m, emit, { ...spec, params });
      await this.update(m, emit, vdi, { ...changes, currentOperationId: op.id });
      return { op, fresh: true };
    });
    if (out.fresh) this.runner.enqueue(out.op);
    return out.op;
  }

  /** An operation that derives a new VDI from an existing one (snapshot, clone, copy). */
  private async deriving(
    caller: Caller,
    req: { id: string; requestId: string },
    { kind, guard }: VdiOperationKind,
    prepare: (
      m: EntityManager,
      source: VdiRow,
      sr: SrRow,
    ) => Promise<{ rows: VdiRow[]; params: OperationParams; targetIsNew?: boolean }>,
  ): Promise<{ vdi: VdiRow; operation: OperationRow }> {
    const rid = validateRequestId(req.requestId);
    const out = await this.store.tx(async (m, emit) => {
      const earlier = await this.earlier(m, caller, rid, kind);
      if (earlier) return { ...earlier, fresh: false };
      const found = await this.get(caller, req.id, m);
      const sr = await lockSr(m, found.srId);
      const source = await m.findOneByOrFail(VdiRow, { id: found.id });
      await this.assertAllowed(m, source, guard);
      const { rows, params } = await prepare(m, source, sr);
      const [first] = rows;
      first.requestTenantId = caller.tenantId;
      first.requestId = rid ?? null;
      const operation = await this.operations.create(m, emit, {
        kind,
        target: { kind: 'vdi', id: first.id, name: first.name },
        tenantId: caller.tenantId,
        params: { ...params, sourceId: source.id },
      });
      for (const r of rows) {
        r.currentOperationId = operation.id;
        await m.insert(VdiRow, r);
        emit(vdiEvent('CREATED', r));
      }
      await this.update(m, emit, source, { currentOperationId: operation.id });
      return { vdi: first, operation, fresh: true };
    });
    if (out.fresh) this.runner.enqueue(out.operation);
    return { vdi: out.vdi, operation: out.operation };
  }

  /** The VDI and operation a repeated create-like request made the first time. */
  private async earlier(
    m: EntityManager,
    caller: Caller,
    requestId: string | undefined,
    kind: string,
  ): Promise<{ vdi: VdiRow; operation: OperationRow } | undefined> {
    if (!requestId) return undefined;
    const vdi = await m.findOneBy(VdiRow, { requestTenantId: caller.tenantId, requestId });
    if (!vdi) return undefined;
    const operation = await m.findOneBy(OperationRow, { targetId: vdi.id, kind });
    if (!operation)
      throw new DomainError(
        ErrorCode.AlreadyExists,
        `request_id ${requestId} was used for another request: use a new one`,
        {
          field: 'request_id',
        },
      );
    return { vdi, operation };
  }

  /** The SR a new VDI goes to: visible to the caller (and its tenant's), locked, allowing VDI_CREATE. */
  async usableSr(m: EntityManager, caller: Caller, idOrName: string, field: string): Promise<SrRow> {
    if (!idOrName) throw invalidArgument(field, 'is required: an SR id or name');
    const sr = isUuid(idOrName)
      ? await m.findOneBy(SrRow, { id: idOrName.toLowerCase() })
      : await m.findOneBy(SrRow, { name: idOrName });
    if (!sr || !srVisibleTo(sr, caller)) throw notFound('sr', idOrName);
    const locked = await lockSr(m, sr.id);
    assertSrOperationAllowed(locked, 'VDI_CREATE');
    return locked;
  }

  private async diskImage(m: EntityManager, caller: Caller, idOrName: string): Promise<DiskImage> {
    const image = isUuid(idOrName)
      ? await m.findOneBy(ImageRow, { id: idOrName.toLowerCase() })
      : await m.findOneBy(ImageRow, { name: idOrName });
    if (
      !image ||
      !(caller.crossTenant || image.visibility === 'PUBLIC' || image.tenantId === caller.tenantId)
    )
      throw notFound('image', idOrName);
    if (!isDiskImage(image))
      throw failedPrecondition(`image ${image.name} is a KERNEL image: VDIs are made from DISK images`, {
        field: 'image',
      });
    if (image.state !== 'AVAILABLE')
      throw failedPrecondition(
        `image ${image.name} is ${image.state}${image.stateReason ? `: ${image.stateReason}` : ''}`,
        {
          field: 'image',
        },
      );
    return image;
  }

  async update(m: EntityManager, emit: Emit, vdi: VdiRow, changes: Partial<VdiRow>): Promise<VdiRow> {
    const res = await m
      .createQueryBuilder()
      .update(VdiRow)
      .set({ ...changes, version: () => 'version + 1' } as never)
      .where('id = :id AND version = :version', { id: vdi.id, version: vdi.version })
      .execute();
    if (res.affected !== 1) throw conflict('vdi', vdi.id);
    const fresh = await m.findOneByOrFail(VdiRow, { id: vdi.id });
    emit(vdiEvent('UPDATED', fresh));
    return fresh;
  }
}

function visible(caller: Caller, vdi: Pick<VdiRow, 'tenantId' | 'managed'>): boolean {
  if (!vdi.managed) return caller.crossTenant;
  return caller.crossTenant || vdi.tenantId === caller.tenantId;
}

/** A DISK image: its base VDI is the one every VDI made from the image starts from. */
type DiskImage = ImageRow & { vdiId: string };

function isDiskImage(image: ImageRow): image is DiskImage {
  return image.kind === 'DISK' && !!image.vdiId;
}
