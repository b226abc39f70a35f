import { randomUUID } from 'node:crypto';
import { EntityManager } from 'typeorm';
import { storageV1 } from '@flotilla/contracts';
import {
  assertSrOperationAllowed,
  conflict,
  DomainError,
  ErrorCode,
  failedPrecondition,
  invalidArgument,
  isUuid,
  notFound,
  parsePage,
  srVisibleTo,
  SrType,
  truncate,
  validateDescription,
  validateLabels,
  validateName,
  validateRequestId,
  validateSrPath,
} from '@flotilla/domain';
import {
  Caller,
  Emit,
  fetchPage,
  OperationRow,
  OperationService,
  requireRole,
  TransactionalStore,
} from '@flotilla/platform';
import { SrRow, VdiRow } from '../persistence/entities';
import { attachmentOf, VbdHook } from '../vdis/vbd-hook';
import { HostDirectory } from './agents';
import { StorageRunner } from './operation-runner';
import { srEvent } from './sr.mapper';
import { lockSr, virtualAllocations } from './sr-space';

const listFields = ['name', 'type', 'state', 'host_id', 'tenant_id', 'label.*'] as const;

/**
 * Storage repositories: the requests (validated, authorised, recorded with their operation in one
 * transaction); SrOperations carries the operations out against the host agents.
 */
export class SrService {
  constructor(
    private readonly store: TransactionalStore,
    private readonly operations: OperationService,
    private readonly directory: HostDirectory,
    private readonly runner: StorageRunner,
    private readonly vbds: () => VbdHook,
  ) {}

  /** By id or name; another tenant's dedicated SR is NOT_FOUND. */
  async get(caller: Caller, idOrName: string, m: EntityManager = this.store.manager): Promise<SrRow> {
    if (!idOrName) throw invalidArgument('id', 'is required: an SR id or name');
    const sr = isUuid(idOrName)
      ? await m.findOneBy(SrRow, { id: idOrName.toLowerCase() })
      : await m.findOneBy(SrRow, { name: idOrName });
    if (!sr || !srVisibleTo(sr, caller)) throw notFound('sr', idOrName);
    return sr;
  }

  async list(
    caller: Caller,
    page: storageV1.ListSrsRequest['page'],
  ): Promise<{ srs: SrRow[]; nextPageToken: string }> {
    const spec = parsePage(page, listFields);
    const qb = this.store.manager.createQueryBuilder(SrRow, 's');
    if (!caller.crossTenant)
      qb.andWhere("(s.tenant_id = '' OR s.tenant_id = :tenant)", { tenant: caller.tenantId });
    for (const [i, { field, value }] of spec.filter.entries()) {
      const p = `f${i}`;
      if (field === 'name') qb.andWhere(`s.name = :${p}`, { [p]: value });
      else if (field === 'type')
        qb.andWhere(`s.type = :${p}`, { [p]: value.toUpperCase().replace(/^SR_TYPE_/, '') });
      else if (field === 'state')
        qb.andWhere(`s.state = :${p}`, { [p]: value.toUpperCase().replace(/^SR_STATE_/, '') });
      else if (field === 'host_id') qb.andWhere(`s.host_id::text = :${p}`, { [p]: value.toLowerCase() });
      else if (field === 'tenant_id') qb.andWhere(`s.tenant_id = :${p}`, { [p]: value });
      else
        qb.andWhere(`s.labels ->> :k${i} = :${p}`, { [`k${i}`]: field.slice('label.'.length), [p]: value });
    }
    const { rows, nextPageToken } = await fetchPage(
      qb.orderBy('s.name').addOrderBy('s.id'),
      spec,
      page?.filter,
    );
    return { srs: rows, nextPageToken };
  }

  allocations(srIds: readonly string[]): Promise<Map<string, number>> {
    return virtualAllocations(this.store.manager, srIds);
  }

  async create(
    caller: Caller,
    req: storageV1.CreateSrRequest,
  ): Promise<{ sr: SrRow; operation: OperationRow }> {
    requireRole(caller, 'pool-operator', 'creating an SR');
    const name = validateName('name', req.name);
    const type = srTypeOf(req.type);
    const path = validateSrPath('path', req.path);
    const requestId = validateRequestId(req.requestId);
    if (
      !Number.isFinite(req.overprovisionRatio) ||
      req.overprovisionRatio < 0 ||
      req.overprovisionRatio > 1000
    )
      throw invalidArgument(
        'overprovision_ratio',
        'must be 0 (no ceiling) or a positive ratio up to 1000, e.g. 1.5',
      );
    if (req.tenantId.length > 128) throw invalidArgument('tenant_id', 'is longer than 128 characters');
    let hostId: string | null = null;
    if (type === 'FILE') {
      if (!req.hostId)
        throw invalidArgument('host_id', 'is required for a FILE SR: the host whose directory holds it');
      const host = await this.directory.get(req.hostId);
      if (host.state !== 'ENABLED')
        throw failedPrecondition(
          `host ${host.name} is ${host.state}: a FILE SR is created on an ENABLED host; enable it first`,
          {
            resource: `host ${host.id}`,
          },
        );
      hostId = host.id;
    } else {
      if (req.hostId) throw invalidArgument('host_id', 'must be empty for a SHARED SR (every host sees it)');
      if (!(await this.directory.list()).some((h) => h.state === 'ENABLED'))
        throw failedPrecondition(
          'the pool has no ENABLED host to create a SHARED SR with: enable a host first',
        );
    }
    const now = new Date();
    const sr: SrRow = {
      id: randomUUID(),
      name,
      tenantId: req.tenantId,
      labels: validateLabels('labels', req.labels),
      description: validateDescription('description', req.description),
      type,
      hostId,
      path,
      state: 'CREATING',
      stateReason: 'being prepared by its sr.create operation',
      capacityBytes: 0,
      freeBytes: 0,
      physicalUtilisationBytes: 0,
      overprovisionRatio: req.overprovisionRatio,
      hosts: [],
      createdDirectory: false,
      currentOperationId: null,
      currentOperationKind: null,
      lastScannedAt: null,
      requestTenantId: caller.tenantId,
      requestId: requestId ?? null,
      version: 1,
      createdAt: now,
      updatedAt: now,
    };
    const out = await this.store.tx(async (m, emit) => {
      if (requestId) {
        const earlier = await m.findOneBy(SrRow, { requestTenantId: caller.tenantId, requestId });
        if (earlier) {
          const operation = await m.findOneByOrFail(OperationRow, {
            kind: 'sr.create',
            targetId: earlier.id,
          });
          return { sr: earlier, operation, fresh: false };
        }
      }
      if (await m.findOneBy(SrRow, { name }))
        throw new DomainError(
          ErrorCode.AlreadyExists,
          `an SR named ${name} already exists in this pool: choose another name`,
          {
            field: 'name',
            resource: `sr ${name}`,
          },
        );
      const samePath = await m.findBy(SrRow, { path });
      const clash = samePath.find((o) => o.type === 'SHARED' || type === 'SHARED' || o.hostId === hostId);
      if (clash)
        throw new DomainError(
          ErrorCode.AlreadyExists,
          `path ${path} is already SR ${clash.name}${clash.type === 'FILE' ? ' on that host' : ''}: use that SR, or another directory`,
          { field: 'path', resource: `sr ${clash.id}` },
        );
      const operation = await this.operations.create(m, emit, {
        kind: 'sr.create',
        target: { kind: 'sr', id: sr.id, name },
        tenantId: caller.tenantId,
        requestId,
        params: { adoptExisting: req.adoptExisting },
        now,
      });
      sr.currentOperationId = operation.id;
      sr.currentOperationKind = operation.kind;
      await m.insert(SrRow, sr);
      emit(srEvent('CREATED', sr));
      return { sr, operation, fresh: true };
    });
    if (out.fresh) this.runner.enqueue(out.operation);
    return { sr: out.sr, operation: out.operation };
  }

  /** Starts a scan, or returns the scan already running. */
  async scan(caller: Caller, id: string, requestId: string): Promise<OperationRow> {
    requireRole(caller, 'vm-power-admin', 'scanning an SR');
    const rid = validateRequestId(requestId);
    const out = await this.store.tx(async (m, emit) => {
      const sr = await lockSr(m, (await this.get(caller, id, m)).id);
      if (sr.currentOperationKind === 'sr.scan' && sr.currentOperationId)
        return { op: await m.findOneByOrFail(OperationRow, { id: sr.currentOperationId }), fresh: false };
      const spec = {
        kind: 'sr.scan',
        target: { kind: 'sr', id: sr.id, name: sr.name },
        tenantId: caller.tenantId,
        requestId: rid,
      };
      const earlier = await this.operations.findByRequest(m, spec);
      if (earlier) return { op: earlier, fresh: false };
      assertSrOperationAllowed(sr, 'SCAN');
      const op = await this.operations.create(m, emit, spec);
      await this.setCurrentOperation(m, emit, sr, op);
      return { op, fresh: true };
    });
    if (out.fresh) this.runner.enqueue(out.op);
    return out.op;
  }

  /** Removes the SR's records (and its VDIs' and their VBDs'), leaving every file. */
  async forget(caller: Caller, id: string, etag: string): Promise<void> {
    requireRole(caller, 'pool-operator', 'forgetting an SR');
    await this.store.tx(async (m, emit) => {
      const sr = await lockSr(m, (await this.get(caller, id, m)).id);
      if (etag && etag !== String(sr.version)) throw conflict('sr', sr.id);
      assertSrOperationAllowed(sr, 'FORGET');
      const vdis = await m.findBy(VdiRow, { srId: sr.id });
      await this.assertVdisReleasable(m, sr, vdis, 'forgotten');
      await this.vbds().removeVbdsOf(
        m,
        emit,
        vdis.map((v) => v.id),
      );
      if (vdis.length) await m.delete(VdiRow, { srId: sr.id });
      await m.delete(SrRow, { id: sr.id });
      emit(srEvent('DELETED', sr));
    });
  }

  async destroy(caller: Caller, req: storageV1.DestroySrRequest): Promise<OperationRow> {
    requireRole(caller, 'pool-operator', 'destroying an SR');
    const rid = validateRequestId(req.requestId);
    const out = await this.store.tx(async (m, emit) => {
      const sr = await lockSr(m, (await this.get(caller, req.id, m)).id);
      const spec = {
        kind: 'sr.destroy',
        target: { kind: 'sr', id: sr.id, name: sr.name },
        tenantId: caller.tenantId,
        requestId: rid,
      };
      const earlier = await this.operations.findByRequest(m, spec);
      if (earlier) return { op: earlier, fresh: false };
      if (req.etag && req.etag !== String(sr.version)) throw conflict('sr', sr.id);
      assertSrOperationAllowed(sr, 'DESTROY');
      const vdis = await m.findBy(VdiRow, { srId: sr.id });
      if (vdis.some((v) => v.managed) && !req.destroyVdis)
        throw failedPrecondition(
          `SR ${sr.name} holds ${vdis.filter((v) => v.managed).length} VDIs: destroy them first, or set destroy_vdis`,
          { resource: `sr ${sr.id}` },
        );
      await this.assertVdisReleasable(m, sr, vdis, 'destroyed');
      const op = await this.operations.create(m, emit, spec);
      await this.setCurrentOperation(m, emit, sr, op);
      // Every VDI of the SR is busy with the destroy: nothing starts on them meanwhile.
      if (vdis.length) await m.update(VdiRow, { srId: sr.id }, { currentOperationId: op.id });
      return { op, fresh: true };
    });
    if (out.fresh) this.runner.enqueue(out.op);
    return out.op;
  }

  private async assertVdisReleasable(
    m: EntityManager,
    sr: SrRow,
    vdis: VdiRow[],
    verb: string,
  ): Promise<void> {
    const busy = vdis.find((v) => v.currentOperationId);
    if (busy)
      throw failedPrecondition(
        `SR ${sr.name} cannot be ${verb}: vdi ${busy.name} (${busy.id}) has operation ${busy.currentOperationId} in progress; wait for it`,
        { resource: `vdi ${busy.id}` },
      );
    const base = vdis.find((v) => v.imageBase && v.managed);
    if (base)
      throw failedPrecondition(
        `SR ${sr.name} cannot be ${verb}: vdi ${base.id} is the base of catalogue image ${base.imageId}; deregister the image first`,
        { resource: `vdi ${base.id}` },
      );
    const vbds = await this.vbds().vbdsOf(
      m,
      vdis.map((v) => v.id),
    );
    const attached = vbds.find((b) => attachmentOf([b]) !== 'NONE');
    if (attached)
      throw failedPrecondition(
        `SR ${sr.name} cannot be ${verb}: vdi ${attached.vdiId} is attached to vm ${attached.vmId} (vbd ${attached.vbdId}); unplug it or halt the VM first`,
        { resource: `vdi ${attached.vdiId}` },
      );
  }

  private async setCurrentOperation(
    m: EntityManager,
    emit: Emit,
    sr: SrRow,
    op: OperationRow,
  ): Promise<void> {
    await m.update(
      SrRow,
      { id: sr.id },
      { currentOperationId: op.id, currentOperationKind: op.kind, version: sr.version + 1 },
    );
    emit(srEvent('UPDATED', await m.findOneByOrFail(SrRow, { id: sr.id })));
  }
}

function srTypeOf(t: storageV1.SrType | string | number): SrType {
  switch (t) {
    case storageV1.SrType.SR_TYPE_FILE:
      return 'FILE';
    case storageV1.SrType.SR_TYPE_SHARED:
      return 'SHARED';
    default:
      throw invalidArgument(
        'type',
        `${t === storageV1.SrType.SR_TYPE_UNSPECIFIED ? 'is required' : `unknown value ${truncate(String(t), 40)}`}: use SR_TYPE_FILE (a directory of one host) or SR_TYPE_SHARED (a directory every host sees)`,
      );
  }
}
