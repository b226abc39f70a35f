import { randomUUID } from 'node:crypto';
import { EntityManager } from 'typeorm';
import { storageV1 } from '@flotilla/contracts';
import {
  assertVbdOperationAllowed,
  conflict,
  DomainError,
  ErrorCode,
  failedPrecondition,
  invalidArgument,
  isDomainError,
  isExclusiveWriter,
  isTerminal,
  lowestFreePosition,
  notFound,
  parsePage,
  resolveVbdMode,
  truncate,
  validateDevicePosition,
  validateId,
  validateIntRange,
  validateLabels,
  validateRequestId,
  type VbdMode,
  type VbdType,
} from '@flotilla/domain';
import {
  Caller,
  domainErrorFromGrpc,
  fetchPage,
  Logger,
  OperationRow,
  OperationService,
  quotedTable,
  requireRole,
  TransactionalStore,
  updateVersionedRow,
} from '@flotilla/platform';
import { SrRow, VdiRow } from '../persistence/entities';
import { StorageRunner } from '../srs/operation-runner';
import { ComputeLink, ComputeVm } from './compute-link';
import { assertAttachableOn, diskSource, vmDisk } from './disk-files';
import { VbdRow } from './vbd.entity';
import { vbdEvent } from './vbd.mapper';

const listFields = ['vm_id', 'vdi_id', 'state', 'type', 'mode', 'label.*'] as const;
const nameMax = 255;
const unplugTimeout = { defaultMs: 30_000, maxMs: 600_000 } as const;
/** Attempts at the lowest free position when concurrent creates for one VM take the same one. */
export const vbdOperationKinds = ['vbd.plug', 'vbd.unplug'] as const;

export type NewVbd = Omit<VbdRow, 'createdAt' | 'updatedAt'> & { createdAt: Date; updatedAt: Date };

/**
 * VDI attachments (VbdService). The VM lives in compute and is checked there; VDIs and SRs are read from
 * storage's own records. The rule "one writer unless sharable" and "one VBD per position" are unique
 * indexes, so concurrent creates are decided by the database. Plug and unplug are operations that call the
 * VM's host agent; each is idempotent on the agent, so a restarted storage service runs them again.
 */
export class VbdService {
  private runner?: StorageRunner;

  constructor(
    private readonly store: TransactionalStore,
    private readonly operations: OperationService,
    private readonly compute: ComputeLink,
    private readonly logger: Logger,
  ) {}

  async create(caller: Caller, req: storageV1.CreateVbdRequest): Promise<VbdRow> {
    requireRole(caller, 'vm-admin', 'creating a VBD');
    const vmId = validateId('vm_id', req.vmId, 'VM');
    const type = vbdType(req.type);
    const requestedMode = vbdMode(req.mode);
    if (type === 'DISK' && !req.vdiId)
      throw invalidArgument('vdi_id', 'is required for a disk (only a CD-ROM drive may be empty)');
    const vdiId = req.vdiId ? validateId('vdi_id', req.vdiId, 'VDI') : null;
    const position =
      req.devicePosition === undefined
        ? undefined
        : validateDevicePosition('device_position', req.devicePosition);
    const labels = validateLabels('labels', req.labels);
    if (req.name.length > nameMax)
      throw invalidArgument('name', `is ${req.name.length} characters long; at most ${nameMax}`);
    if (/[\p{Cc}]/u.test(req.name)) throw invalidArgument('name', 'contains control characters');
    const requestId = validateRequestId(req.requestId);
    if (requestId) {
      const earlier = await this.byRequest(caller, requestId);
      if (earlier) return earlier;
    }

    const vm = await this.compute.vm(caller, vmId);
    const vdi = vdiId ? await this.attachableVdi(caller, vdiId, vm) : undefined;
    const mode = resolveVbdMode(requestedMode, type, vdi);
    if (vdi) await this.checkHostBinding(vm, vdi);

    const now = new Date();
    const row: NewVbd = {
      id: randomUUID(),
      name: req.name,
      tenantId: vm.tenantId,
      labels,
      vmId,
      vdiId,
      devicePosition: -1,
      type,
      mode,
      bootable: req.bootable,
      unpluggable: req.unpluggable ?? false,
      state: 'DETACHED',
      device: '',
      hotPlugged: false,
      hostId: null,
      currentOperationId: null,
      exclusiveWriter: vdi ? isExclusiveWriter(mode, vdi) : false,
      ownsVdi: false,
      requestTenantId: caller.tenantId,
      requestId: requestId ?? null,
      version: 1,
      createdAt: now,
      updatedAt: now,
    };
    const created = await this.store.tx(async (m, emit) => {
      // Positions are chosen under a per-VM lock: concurrent creates on one VM queue here instead of
      // racing for the lowest free position (the unique index stays as the last word).
      await m.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`vbd-positions:${vmId}`]);
      const taken = await m.find(VbdRow, { where: { vmId }, select: { devicePosition: true } });
      const at = position ?? lowestFreePosition(taken.map((v) => v.devicePosition));
      if (at === undefined)
        throw failedPrecondition(`vm ${vm.name} has a VBD at every position 0..15: destroy one first`, {
          resource: `vm ${vm.id}`,
        });
      row.devicePosition = at;
      row.unpluggable = req.unpluggable ?? at !== 0;
      if (!(await insertVbdIfAbsent(m, row))) return undefined;
      emit(vbdEvent('CREATED', row));
      return row;
    });
    if (created) return created;
    // A unique index refused the row: say which one.
    if (requestId) {
      const earlier = await this.byRequest(caller, requestId);
      if (earlier) return earlier;
    }
    // Only a VBD of a VDI is an exclusive writer.
    if (row.exclusiveWriter && vdi) {
      const writer = await this.store.manager.findOneBy(VbdRow, { vdiId: vdi.id, exclusiveWriter: true });
      if (writer) throw writerConflict(vdi, writer);
    }
    throw new DomainError(
      ErrorCode.AlreadyExists,
      `vm ${vm.name} already has a VBD at position ${row.devicePosition}: choose another device_position or leave it out`,
      { field: 'device_position', resource: `vm ${vm.id}` },
    );
  }

  /** Another tenant's VBD is NOT_FOUND. */
  async get(
    caller: Caller,
    id: string,
    m: EntityManager = this.store.manager,
    lock = false,
  ): Promise<VbdRow> {
    const vbdId = validateId('id', id, 'VBD');
    const vbd = await m.findOne(VbdRow, {
      where: { id: vbdId },
      ...(lock ? { lock: { mode: 'pessimistic_write' as const } } : {}),
    });
    if (!vbd || (!caller.crossTenant && vbd.tenantId !== caller.tenantId)) throw notFound('vbd', id);
    return vbd;
  }

  async list(
    caller: Caller,
    page: storageV1.ListVbdsRequest['page'],
  ): Promise<{ vbds: VbdRow[]; nextPageToken: string }> {
    const spec = parsePage(page, listFields);
    const qb = this.store.manager.createQueryBuilder(VbdRow, 'b');
    if (!caller.crossTenant) qb.andWhere('b.tenant_id = :tenant', { tenant: caller.tenantId });
    for (const [i, { field, value }] of spec.filter.entries()) {
      const p = `f${i}`;
      const enumValue = (prefix: string) => value.toUpperCase().replace(new RegExp(`^${prefix}`), '');
      if (field === 'vm_id') qb.andWhere(`b.vm_id::text = :${p}`, { [p]: value.toLowerCase() });
      else if (field === 'vdi_id') qb.andWhere(`b.vdi_id::text = :${p}`, { [p]: value.toLowerCase() });
      else if (field === 'state') qb.andWhere(`b.state = :${p}`, { [p]: enumValue('VBD_STATE_') });
      else if (field === 'type') qb.andWhere(`b.type = :${p}`, { [p]: enumValue('VBD_TYPE_') });
      else if (field === 'mode') qb.andWhere(`b.mode = :${p}`, { [p]: enumValue('VBD_MODE_') });
      else
        qb.andWhere(`b.labels ->> :k${i} = :${p}`, { [`k${i}`]: field.slice('label.'.length), [p]: value });
    }
    const { rows, nextPageToken } = await fetchPage(
      qb.orderBy('b.vm_id').addOrderBy('b.device_position'),
      spec,
      page?.filter,
    );
    return { vbds: rows, nextPageToken };
  }

  /** Deletes the record; the VDI stays. Refused while ATTACHED or UNKNOWN. */
  async destroy(caller: Caller, id: string, etag: string): Promise<void> {
    requireRole(caller, 'vm-admin', 'destroying a VBD');
    await this.store.tx(async (m, emit) => {
      const vbd = await this.get(caller, id, m, true);
      if (etag && etag !== String(vbd.version)) throw conflict('vbd', vbd.id);
      assertVbdOperationAllowed(vbd, 'DESTROY');
      await m.delete(VbdRow, { id: vbd.id });
      emit(vbdEvent('DELETED', vbd));
    });
  }

  /** Hot-plugs a DETACHED VBD into its RUNNING VM (operation vbd.plug); an ATTACHED one succeeds at once. */
  async plug(caller: Caller, req: storageV1.PlugVbdRequest): Promise<OperationRow> {
    requireRole(caller, 'vm-admin', 'plugging a VBD');
    const vbd = await this.get(caller, req.id);
    const vm = await this.compute.vm(caller, vbd.vmId);
    return this.request(caller, vbd, 'vbd.plug', req, async (m, current) => {
      if (current.state === 'ATTACHED') return 'done';
      if (vm.powerState !== 'RUNNING')
        throw failedPrecondition(
          `vm ${vm.name} is ${vm.powerState}: a VBD is plugged into a RUNNING VM only; a halted VM attaches its VBDs when it starts`,
          { resource: `vm ${vm.id}`, metadata: { power_state: vm.powerState, vbd_state: current.state } },
        );
      assertVbdOperationAllowed(current, 'PLUG');
      if (current.vdiId) assertAttachableOn(await diskSource(m, current), vm.hostId);
      return {};
    });
  }

  /** Hot-unplugs an ATTACHED VBD (operation vbd.unplug); a DETACHED one succeeds at once. */
  async unplug(caller: Caller, req: storageV1.UnplugVbdRequest): Promise<OperationRow> {
    requireRole(caller, 'vm-admin', 'unplugging a VBD');
    const timeoutMs =
      req.timeoutMs === 0
        ? unplugTimeout.defaultMs
        : validateIntRange('timeout_ms', req.timeoutMs, 1, unplugTimeout.maxMs, ' ms');
    const vbd = await this.get(caller, req.id);
    const vm = await this.compute.vm(caller, vbd.vmId);
    return this.request(caller, vbd, 'vbd.unplug', req, async (_m, current) => {
      if (current.state === 'DETACHED') return 'done';
      if (vm.powerState !== 'RUNNING' && vm.powerState !== 'PAUSED')
        throw failedPrecondition(
          `vm ${vm.name} is ${vm.powerState}: a VBD is unplugged from a RUNNING or PAUSED VM only`,
          { resource: `vm ${vm.id}`, metadata: { power_state: vm.powerState, vbd_state: current.state } },
        );
      assertVbdOperationAllowed(current, 'UNPLUG');
      return { timeoutMs, force: req.force };
    });
  }

  /** Plugs and unplugs run on the storage service's runner, which resumes them after a restart. */
  register(runner: StorageRunner): void {
    this.runner = runner;
    for (const kind of vbdOperationKinds) runner.register(kind, (op) => this.run(op));
  }

  /**
   * Records a plug or unplug: a repeated request_id returns the first operation; `check` (run with the VBD
   * locked) refuses it, says it is already done (an operation recorded SUCCEEDED), or gives its params.
   */
  private async request(
    caller: Caller,
    vbd: VbdRow,
    kind: (typeof vbdOperationKinds)[number],
    req: { requestId: string; etag: string },
    check: (m: EntityManager, current: VbdRow) => Promise<'done' | Record<string, string | number | boolean>>,
  ): Promise<OperationRow> {
    const requestId = validateRequestId(req.requestId);
    const result = await this.store.tx(async (m, emit) => {
      const current = await this.get(caller, vbd.id, m, true);
      const spec = {
        kind,
        target: {
          kind: 'vbd',
          id: current.id,
          name: current.name || `${current.type.toLowerCase()} ${current.devicePosition}`,
        },
        tenantId: current.tenantId,
        requestId,
      };
      const earlier = await this.operations.findByRequest(m, spec);
      if (earlier) return { operation: earlier, isNew: false };
      if (req.etag && req.etag !== String(current.version)) throw conflict('vbd', current.id);
      const params = await check(m, current);
      if (params === 'done') {
        const operation = await this.operations.create(m, emit, { ...spec, succeeded: true });
        return { operation, isNew: false };
      }
      const operation = await this.operations.create(m, emit, { ...spec, params });
      await this.update(m, emit, current, { currentOperationId: operation.id });
      return { operation, isNew: true };
    });
    if (result.isNew) this.runner?.enqueue(result.operation);
    return result.operation;
  }

  private async run(queued: OperationRow): Promise<void> {
    const log = this.logger.child({ operationId: queued.id, kind: queued.kind, vbdId: queued.targetId });
    let op = await this.store.manager.findOneByOrFail(OperationRow, { id: queued.id });
    if (isTerminal(op.state)) return;
    try {
      const vbd = await this.store.manager.findOneBy(VbdRow, { id: op.targetId });
      if (!vbd) throw new DomainError(ErrorCode.NotFound, `vbd ${op.targetId} no longer exists`);
      const vm = await this.compute.vm({ tenantId: '', crossTenant: true }, vbd.vmId);
      if (!vm.hostId)
        throw failedPrecondition(
          `vm ${vm.name} is ${vm.powerState} and on no host now: nothing to ${op.kind === 'vbd.plug' ? 'plug into' : 'unplug from'}`,
        );
      const host = await this.compute.host(vm.hostId);
      // From the agent call on the VM may see the disk change: the operation finishes or fails, never cancels.
      op = await this.store.tx((m, emit) =>
        this.operations.advance(m, emit, op, {
          state: 'RUNNING',
          step: `${op.kind === 'vbd.plug' ? 'plugging into' : 'unplugging from'} vm ${vm.name} on host ${host.name}`,
          progress: 0.3,
          pointOfNoReturn: true,
        }),
      );
      if (op.kind === 'vbd.plug') {
        const source = await diskSource(this.store.manager, vbd);
        assertAttachableOn(source, host.id, host.name);
        const device = await this.compute.plugDisk(host, vm.id, vmDisk(vbd, source));
        await this.finish(op, vbd.id, { state: 'ATTACHED', hostId: host.id, device, hotPlugged: true });
      } else {
        await this.compute.unplugDisk(host, vm.id, vbd.id, {
          timeoutMs: Number(op.params.timeoutMs ?? unplugTimeout.defaultMs),
          force: op.params.force === true,
        });
        await this.finish(op, vbd.id, { state: 'DETACHED', hostId: null, device: '', hotPlugged: false });
      }
    } catch (e) {
      const error = isDomainError(e) ? e : domainErrorFromGrpc(e);
      if (error.code === ErrorCode.Internal) log.error({ err: e }, 'vbd operation failed unexpectedly');
      else log.info({ code: error.code, reason: error.message }, 'vbd operation failed');
      await this.finish(op, op.targetId, undefined, error);
    }
  }

  /** Ends the operation and frees the VBD (applying `changes` on success) in one transaction. */
  private async finish(
    op: OperationRow,
    vbdId: string,
    changes: Partial<Pick<VbdRow, 'state' | 'hostId' | 'device' | 'hotPlugged'>> | undefined,
    error?: DomainError,
  ): Promise<void> {
    const done = await this.store.tx(async (m, emit) => {
      const current = await m.findOneByOrFail(OperationRow, { id: op.id });
      if (isTerminal(current.state)) return undefined;
      const vbd = await m.findOne(VbdRow, { where: { id: vbdId }, lock: { mode: 'pessimistic_write' } });
      if (vbd && vbd.currentOperationId === op.id)
        await this.update(m, emit, vbd, { ...(error ? {} : changes), currentOperationId: null });
      return this.operations.finish(
        m,
        emit,
        current,
        error ? { state: 'FAILED', error } : { state: 'SUCCEEDED' },
      );
    });
    if (done) this.operations.announce(done);
  }

  private async update(
    m: EntityManager,
    emit: (e: ReturnType<typeof vbdEvent>) => void,
    vbd: VbdRow,
    changes: Partial<VbdRow>,
  ): Promise<VbdRow> {
    const fresh = await updateVersionedRow(
      m,
      VbdRow,
      { kind: 'vbd', id: vbd.id, version: vbd.version },
      changes,
    );
    emit(vbdEvent('UPDATED', fresh));
    return fresh;
  }

  private byRequest(caller: Caller, requestId: string): Promise<VbdRow | null> {
    return this.store.manager.findOneBy(VbdRow, { requestTenantId: caller.tenantId, requestId });
  }

  /** The VDI if the caller may use it for this VM: NOT_FOUND (field vdi_id) or FAILED_PRECONDITION. */
  private async attachableVdi(caller: Caller, id: string, vm: ComputeVm): Promise<VdiRow> {
    const vdi = await this.store.manager.findOneBy(VdiRow, { id });
    const visible =
      vdi?.managed && (caller.crossTenant ? true : vdi.tenantId !== '' && vdi.tenantId === caller.tenantId);
    if (!vdi || !visible) {
      const e = notFound('vdi', id);
      throw new DomainError(e.code, e.message, { ...e.fields, field: 'vdi_id' });
    }
    if (vdi.tenantId && vdi.tenantId !== vm.tenantId)
      throw failedPrecondition(`vdi ${vdi.name} (${vdi.id}) belongs to another tenant than vm ${vm.name}`, {
        field: 'vdi_id',
      });
    if (vdi.state !== 'READY')
      throw failedPrecondition(
        `vdi ${vdi.name} (${vdi.id}) is ${vdi.state}: only a READY VDI can be attached${vdi.state === 'CREATING' ? '; wait for its operation' : ''}`,
        { field: 'vdi_id', resource: `vdi ${vdi.id}` },
      );
    return vdi;
  }

  /**
   * A VDI on a FILE SR serves VMs of that SR's host only: refused when the VM runs elsewhere, or is bound
   * to another host by a disk it already has on another FILE SR.
   */
  private async checkHostBinding(vm: ComputeVm, vdi: VdiRow): Promise<void> {
    const m = this.store.manager;
    const sr = await m.findOneByOrFail(SrRow, { id: vdi.srId });
    if (sr.type !== 'FILE') return;
    const boundTo = vm.hostId || (await boundHost(m, vm.id));
    if (boundTo && boundTo !== sr.hostId)
      throw failedPrecondition(
        `vdi ${vdi.name} (${vdi.id}) is on FILE SR ${sr.name} of host ${sr.hostId}, but vm ${vm.name} ${vm.hostId ? 'runs on' : 'has disks on a FILE SR of'} host ${boundTo}: copy the VDI to a SHARED SR or to an SR of that host`,
        { field: 'vdi_id', resource: `sr ${sr.id}` },
      );
  }
}

/** The host a VM's existing disks on FILE SRs bind it to, if any. */
export async function boundHost(m: EntityManager, vmId: string): Promise<string | undefined> {
  const rows: Array<{ host_id: string }> = await m.query(
    `SELECT DISTINCT s.host_id::text AS host_id FROM ${quotedTable(m, VbdRow)} b
       JOIN ${quotedTable(m, VdiRow)} d ON d.id = b.vdi_id
       JOIN ${quotedTable(m, SrRow)} s ON s.id = d.sr_id
      WHERE b.vm_id = $1 AND s.type = 'FILE' AND s.host_id IS NOT NULL`,
    [vmId],
  );
  return rows[0]?.host_id;
}

function writerConflict(vdi: Pick<VdiRow, 'id' | 'name'>, writer: VbdRow): DomainError {
  return failedPrecondition(
    `vdi ${vdi.name} (${vdi.id}) is already attached read-write to vm ${writer.vmId} (vbd ${writer.id}) and is not sharable: attach it read-only (VBD_MODE_RO), or destroy that VBD first`,
    { field: 'mode', resource: `vdi ${vdi.id}`, metadata: { vbd_id: writer.id, vm_id: writer.vmId } },
  );
}

function vbdType(t: storageV1.VbdType | string | number): VbdType {
  switch (t) {
    case storageV1.VbdType.VBD_TYPE_UNSPECIFIED:
    case storageV1.VbdType.VBD_TYPE_DISK:
      return 'DISK';
    case storageV1.VbdType.VBD_TYPE_CDROM:
      return 'CDROM';
    default:
      throw invalidArgument(
        'type',
        `unknown value ${truncate(String(t), 40)}: use VBD_TYPE_DISK or VBD_TYPE_CDROM`,
      );
  }
}

function vbdMode(mode: storageV1.VbdMode | string | number): VbdMode | undefined {
  switch (mode) {
    case storageV1.VbdMode.VBD_MODE_UNSPECIFIED:
      return undefined;
    case storageV1.VbdMode.VBD_MODE_RO:
      return 'RO';
    case storageV1.VbdMode.VBD_MODE_RW:
      return 'RW';
    default:
      throw invalidArgument(
        'mode',
        `unknown value ${truncate(String(mode), 40)}: use VBD_MODE_RO or VBD_MODE_RW`,
      );
  }
}

/** Inserts the VBD unless a unique index (position, one writer, request_id) refuses it; false then. */
export async function insertVbdIfAbsent(m: EntityManager, vbd: NewVbd): Promise<boolean> {
  const columns: Array<[string, unknown]> = [
    ['id', vbd.id],
    ['name', vbd.name],
    ['tenant_id', vbd.tenantId],
    ['labels', JSON.stringify(vbd.labels)],
    ['vm_id', vbd.vmId],
    ['vdi_id', vbd.vdiId],
    ['device_position', vbd.devicePosition],
    ['type', vbd.type],
    ['mode', vbd.mode],
    ['bootable', vbd.bootable],
    ['unpluggable', vbd.unpluggable],
    ['state', vbd.state],
    ['device', vbd.device],
    ['hot_plugged', vbd.hotPlugged],
    ['host_id', vbd.hostId],
    ['current_operation_id', vbd.currentOperationId],
    ['exclusive_writer', vbd.exclusiveWriter],
    ['owns_vdi', vbd.ownsVdi],
    ['request_tenant_id', vbd.requestTenantId],
    ['request_id', vbd.requestId],
    ['version', vbd.version],
    ['created_at', vbd.createdAt],
    ['updated_at', vbd.updatedAt],
  ];
  const rows: unknown[] = await m.query(
    `INSERT INTO ${quotedTable(m, VbdRow)} (${columns.map(([c]) => c).join(', ')})
     VALUES (${columns.map((_, i) => `$${i + 1}`).join(', ')})
     ON CONFLICT DO NOTHING RETURNING id`,
    columns.map(([, v]) => v),
  );
  return rows.length === 1;
}
