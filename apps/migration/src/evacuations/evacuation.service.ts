import { randomUUID } from 'node:crypto';
import { EntityManager, In } from 'typeorm';
import { commonV1, migrationV1 } from '@flotilla/contracts';
import {
  DomainError,
  ErrorCode,
  failedPrecondition,
  invalidArgument,
  notFound,
  parsePage,
  truncate,
  validateId,
  validateIntRange,
  validateLabels,
  validateName,
  validateRequestId,
  EvacuationBlockedPolicy,
  EvacuationState,
  isEvacuationFinished,
  planEvacuation,
  validateMaxParallel,
  type EvacuationBlocker,
} from '@flotilla/domain';
import {
  Caller,
  Emit,
  fetchPage,
  Logger,
  OnCancelled,
  OperationRow,
  OperationService,
  requireRole,
  TransactionalStore,
  updateVersionedRow,
} from '@flotilla/platform';
import { emptyOptions } from '../migrations/migration.mapper';
import type { MigrationPort } from '../migrations/migration-port';
import { peerError } from '../migrations/peers';
import { EvacuationRow, EvacuationVmRecord } from './evacuation.entity';
import { blockedPolicyOf, evacuationToProto } from './evacuation.mapper';
import { EvacuationRefused } from './evacuation.errors';
import type { HostControl, HostView, ResidentVmView } from './host-control';

export const evacuationOperationKind = 'host.evacuate';

/** Preflights asked of the migration service at once while planning. */
const preflightConcurrency = 4;
const openStates: EvacuationState[] = ['RUNNING', 'CANCELLING'];
const policies = new Set([
  'EVACUATION_BLOCKED_POLICY_UNSPECIFIED',
  'EVACUATION_BLOCKED_POLICY_FAIL',
  'EVACUATION_BLOCKED_POLICY_SKIP',
  'EVACUATION_BLOCKED_POLICY_SHUTDOWN',
]);
/** compute's ShutdownVm bounds for a clean shutdown's timeout. */
const shutdownTimeoutMaxMs = 3_600_000;

/** A preflight blocker in the plan's terms, keeping the contract's blocker to report it unchanged. */
interface PreflightBlocker extends EvacuationBlocker {
  blocker: migrationV1.Blocker;
}

/** Wakes the runner of an evacuation (it was created or cancelled). */
export interface EvacuationKicker {
  kick(id: string): void;
}

/** Evacuations as pool operators ask for them: plan at once, run in the background (EvacuationRunner). */
export class EvacuationService {
  constructor(
    private readonly deps: {
      store: TransactionalStore;
      operations: OperationService;
      migrations: MigrationPort;
      hosts: HostControl;
      runner: EvacuationKicker;
      logger: Logger;
    },
  ) {}

  async evacuate(
    caller: Caller,
    req: migrationV1.EvacuateHostRequest,
  ): Promise<{ evacuation: EvacuationRow; operation: OperationRow }> {
    requireRole(caller, 'pool-operator', 'evacuating a host');
    const input = validateRequest(req);
    const { store } = this.deps;
    if (input.requestId) {
      const earlier = await store.manager.findOneBy(EvacuationRow, { requestId: input.requestId });
      if (earlier) return this.withOperation(store.manager, earlier);
    }
    const host = await this.deps.hosts.host(input.hostId).catch((e: unknown) => {
      const err = peerError('compute', e);
      throw err.code === ErrorCode.NotFound
        ? new DomainError(err.code, err.message, { ...err.fields, field: 'host_id' })
        : err;
    });
    const running = await store.manager.findOneBy(EvacuationRow, { hostId: host.id, state: In(openStates) });
    if (running) return this.withOperation(store.manager, running);
    if (host.state === 'DOWN')
      throw failedPrecondition(
        `host ${host.name} is DOWN: nothing can migrate from it; evacuate it once its agent reports again`,
        { resource: `host ${host.name}`, field: 'host_id' },
      );
    // Disabled first, so that nothing new lands on the host while it is being emptied.
    const disabledHere = host.state === 'ENABLED';
    if (disabledHere)
      await this.deps.hosts.disable(host.id, { maintenance: false, reason: 'evacuation requested' });
    let created: Awaited<ReturnType<EvacuationService['persist']>>;
    try {
      created = await this.persist(host, input, await this.plan(host, input));
    } catch (e) {
      // Refused or not recorded: the host goes back to how it was.
      if (disabledHere) await this.reenable(host);
      throw e;
    }
    if (created.fresh) this.deps.runner.kick(created.evacuation.id);
    return created;
  }

  async get(caller: Caller, id: string): Promise<EvacuationRow> {
    requireRole(caller, 'pool-operator', 'reading evacuations');
    return this.find(this.deps.store.manager, id);
  }

  async list(
    caller: Caller,
    page: migrationV1.ListEvacuationsRequest['page'],
  ): Promise<{ evacuations: EvacuationRow[]; nextPageToken: string }> {
    requireRole(caller, 'pool-operator', 'listing evacuations');
    const spec = parsePage(page, ['host_id', 'state', 'label.*']);
    const qb = this.deps.store.manager.createQueryBuilder(EvacuationRow, 'e');
    for (const [i, { field, value }] of spec.filter.entries()) {
      const p = `f${i}`;
      if (field === 'host_id') qb.andWhere(`e.host_id::text = :${p}`, { [p]: value.toLowerCase() });
      else if (field === 'state')
        qb.andWhere(`e.state = :${p}`, { [p]: value.toUpperCase().replace(/^EVACUATION_STATE_/, '') });
      else
        qb.andWhere(`e.labels ->> :k${i} = :${p}`, { [`k${i}`]: field.slice('label.'.length), [p]: value });
    }
    const { rows, nextPageToken } = await fetchPage(
      qb.orderBy('e.created_at', 'DESC').addOrderBy('e.id'),
      spec,
      page?.filter,
    );
    return { evacuations: rows, nextPageToken };
  }

  /** Asks the runner to stop starting migrations and to cancel the running ones; it ends CANCELLED. */
  async cancel(caller: Caller, id: string): Promise<EvacuationRow> {
    requireRole(caller, 'pool-operator', 'cancelling an evacuation');
    const row = await this.deps.store.tx(async (m, emit) => {
      const current = await this.find(m, id, true);
      if (isEvacuationFinished(current.state))
        throw failedPrecondition(`evacuation ${current.id} already finished (${current.state})`, {
          resource: `evacuation ${current.id}`,
        });
      return current.state === 'CANCELLING' ? current : markCancelling(m, emit, current);
    });
    this.deps.runner.kick(row.id);
    return row;
  }

  /** CancelOperation on a "host.evacuate" operation cancels its evacuation (same transaction). */
  readonly onOperationCancelled: OnCancelled = async (m, emit, op) => {
    if (op.kind !== evacuationOperationKind) return;
    const row = await m.findOne(EvacuationRow, {
      where: { operationId: op.id },
      lock: { mode: 'pessimistic_write' },
    });
    if (!row || row.state !== 'RUNNING') return;
    await markCancelling(m, emit, row);
    setImmediate(() => this.deps.runner.kick(row.id));
  };

  /**
   * Lists the host's VMs, preflights each with no destination named (the scheduler's choice, honouring
   * anti-affinity and required labels) and applies the plan; refuses (EvacuationRefused) under FAIL.
   */
  private async plan(host: HostView, input: EvacuationInput): Promise<EvacuationVmRecord[]> {
    const residents = await this.deps.hosts.residentVms(host.id);
    const destinations = (await this.deps.hosts.hosts()).filter(
      (h) => h.id !== host.id && h.state === 'ENABLED' && h.driver === host.driver,
    );
    const checks = await mapLimit(residents, preflightConcurrency, (vm) => this.preflight(vm, input));
    const present = residents.flatMap((vm, i) => {
      const check = checks[i];
      return check ? [{ vm, check }] : [];
    });
    const plan = planEvacuation<PreflightBlocker>({
      vms: present.map(({ vm, check }) => ({
        vmId: vm.id,
        memoryMib: vm.memoryMib,
        vcpus: vm.vcpus,
        blockers: check.blockers.map((b) => ({
          kind: String(b.kind).replace(/^BLOCKER_KIND_/, ''),
          message: b.message,
          blocker: b,
        })),
      })),
      destinations,
      onBlocked: input.onBlocked,
    });
    const byId = new Map(present.map(({ vm }) => [vm.id, vm]));
    const blockersOf = (vmId: string, blockers: Array<PreflightBlocker | EvacuationBlocker>) =>
      blockers.map((b) => ('blocker' in b ? b.blocker : capacityBlocker(b, byId.get(vmId))));
    if (plan.refused) {
      const blocked = plan.blocked.map((p) => ({
        vm: byId.get(p.vmId),
        blockers: blockersOf(p.vmId, p.blockers),
      }));
      throw refusal(host, plan.reason, blocked);
    }
    return plan.vms.map((p) => {
      const vm = byId.get(p.vmId);
      return {
        vmId: p.vmId,
        vmName: vm?.name ?? '',
        memoryMib: vm?.memoryMib ?? 0,
        vcpus: vm?.vcpus ?? 0,
        action: p.action,
        outcome: p.action === 'SKIP' ? 'SKIPPED' : 'PENDING',
        migrationId: '',
        destinationHostId: '',
        blockers: blockersOf(p.vmId, p.blockers),
        error: null,
        cancelAsked: false,
        shutdownAsked: false,
      };
    });
  }

  /** The VM's preflight; undefined when the VM vanished since it was listed (nothing to move). */
  private async preflight(
    vm: ResidentVmView,
    input: EvacuationInput,
  ): Promise<migrationV1.PreflightCheck | undefined> {
    try {
      return await this.deps.migrations.preflight({
        vmId: vm.id,
        destinationHostId: '',
        mode: migrationV1.MigrationMode.MIGRATION_MODE_LIVE,
        withStorage: input.withStorage,
        vdiMap: {},
        options: input.migrationOptions,
      });
    } catch (e) {
      const err = peerError('migration preflight', e);
      // Gone since it was listed (halted or destroyed): nothing to move.
      if (err.code === ErrorCode.NotFound) return undefined;
      // The options are checked by the migration service: name the field as this request spells it.
      const field = err.fields.field?.replace(/^spec\.options\./, 'migration_options.');
      throw new DomainError(err.code, err.message, { ...err.fields, field });
    }
  }

  private async persist(
    host: HostView,
    input: EvacuationInput,
    vms: EvacuationVmRecord[],
  ): Promise<{ evacuation: EvacuationRow; operation: OperationRow; fresh: boolean }> {
    const now = new Date();
    const id = randomUUID();
    const operationId = randomUUID();
    return this.deps.store.tx(async (m, emit) => {
      const row: EvacuationRow = {
        id,
        name: input.name,
        tenantId: '',
        labels: input.labels,
        hostId: host.id,
        hostName: host.name,
        state: 'RUNNING',
        stateReason: '',
        maxParallel: input.maxParallel,
        onBlocked: input.onBlocked,
        withStorage: input.withStorage,
        enterMaintenance: input.enterMaintenance,
        migrationOptions: input.migrationOptions,
        progress: vms.length ? vms.filter((v) => v.outcome === 'SKIPPED').length / vms.length : 1,
        vms,
        error: null,
        operationId,
        requestId: input.requestId ?? null,
        startedAt: now,
        finishedAt: null,
        version: 1,
        createdAt: now,
        updatedAt: now,
      };
      // A concurrent ask for the same host (or request id) inserts nothing: the first one is returned.
      const inserted = await m
        .createQueryBuilder()
        .insert()
        .into(EvacuationRow)
        .values(row)
        .orIgnore()
        .execute();
      if (!inserted.raw?.length && !(await m.findOneBy(EvacuationRow, { id }))) {
        const earlier =
          (input.requestId ? await m.findOneBy(EvacuationRow, { requestId: input.requestId }) : null) ??
          (await m.findOneBy(EvacuationRow, { hostId: host.id, state: In(openStates) }));
        if (!earlier)
          throw new DomainError(ErrorCode.Conflict, `host ${host.name} changed while being evacuated: retry`);
        return { ...(await this.withOperation(m, earlier)), fresh: false };
      }
      const saved = await m.findOneByOrFail(EvacuationRow, { id });
      const operation = await this.deps.operations.create(m, emit, {
        id: operationId,
        kind: evacuationOperationKind,
        target: { kind: 'host', id: host.id, name: host.name },
        tenantId: '',
        requestId: input.requestId,
        params: { evacuation_id: id },
        now,
      });
      emit(evacuationEvent('CREATED', saved));
      return { evacuation: saved, operation, fresh: true };
    });
  }

  private async reenable(host: HostView): Promise<void> {
    try {
      await this.deps.hosts.enable(host.id);
    } catch (e) {
      this.deps.logger.warn(
        { err: e, hostId: host.id },
        'could not enable the host again after a refused evacuation',
      );
    }
  }

  private async withOperation(
    m: EntityManager,
    evacuation: EvacuationRow,
  ): Promise<{ evacuation: EvacuationRow; operation: OperationRow }> {
    return { evacuation, operation: await m.findOneByOrFail(OperationRow, { id: evacuation.operationId }) };
  }

  private async find(m: EntityManager, id: string, lock = false): Promise<EvacuationRow> {
    const evacuationId = validateId('id', id, 'evacuation');
    const row = await m.findOne(EvacuationRow, {
      where: { id: evacuationId },
      ...(lock ? { lock: { mode: 'pessimistic_write' as const } } : {}),
    });
    if (!row) throw notFound('evacuation', id);
    return row;
  }
}

interface EvacuationInput {
  hostId: string;
  maxParallel: number;
  onBlocked: EvacuationBlockedPolicy;
  withStorage: boolean;
  enterMaintenance: boolean;
  migrationOptions: migrationV1.MigrationOptions;
  name: string;
  labels: Record<string, string>;
  requestId?: string;
}

function validateRequest(req: migrationV1.EvacuateHostRequest): EvacuationInput {
  if (!req.hostId) throw invalidArgument('host_id', "is required: the host's id or name");
  if (!policies.has(String(req.onBlocked)))
    throw invalidArgument(
      'on_blocked',
      `${JSON.stringify(String(req.onBlocked))} is not a policy: use FAIL, SKIP or SHUTDOWN`,
    );
  const options = req.migrationOptions ?? emptyOptions();
  validateIntRange(
    'migration_options.shutdown_timeout_ms',
    options.shutdownTimeoutMs,
    0,
    shutdownTimeoutMaxMs,
    ' ms',
  );
  return {
    hostId: truncate(req.hostId, 200),
    maxParallel: validateMaxParallel(req.maxParallel),
    onBlocked: blockedPolicyOf(req.onBlocked),
    withStorage: req.withStorage,
    enterMaintenance: req.enterMaintenance,
    migrationOptions: options,
    name: req.name ? validateName('name', req.name) : '',
    labels: validateLabels('labels', req.labels),
    requestId: validateRequestId(req.requestId),
  };
}

/** A lack of room the plan found (no preflight said it): the VM is the resource at fault. */
function capacityBlocker(b: EvacuationBlocker, vm: ResidentVmView | undefined): migrationV1.Blocker {
  return {
    kind: `BLOCKER_KIND_${b.kind}` as migrationV1.BlockerKind,
    message: b.message,
    resource: { kind: 'vm', id: vm?.id ?? '', name: vm?.name ?? '' },
  };
}

/** FAIL with blocked VMs: one ErrorDetail per VM (reason its first blocker's kind, metadata vm_id). */
function refusal(
  host: HostView,
  reason: 'BLOCKED' | 'NO_CAPACITY',
  blocked: Array<{ vm: ResidentVmView | undefined; blockers: migrationV1.Blocker[] }>,
): EvacuationRefused {
  const details: commonV1.ErrorDetail[] = blocked.map(({ vm, blockers }) => ({
    reason: String(blockers[0]?.kind ?? 'BLOCKER_KIND_UNSPECIFIED'),
    field: '',
    description: blockers.map((b) => b.message).join('; '),
    metadata: {
      vm_id: vm?.id ?? '',
      vm_name: vm?.name ?? '',
      blockers: blockers.map((b) => String(b.kind)).join(','),
    },
  }));
  const listed = blocked
    .map(({ vm, blockers }) => `${vm?.name ?? vm?.id}: ${blockers.map((b) => b.message).join('; ')}`)
    .join(' | ');
  const what =
    reason === 'NO_CAPACITY'
      ? `the other hosts cannot hold all its VMs (${blocked.length} do not fit)`
      : `${blocked.length} of its VMs cannot move`;
  return new EvacuationRefused(
    reason === 'NO_CAPACITY' ? ErrorCode.ResourceExhausted : ErrorCode.FailedPrecondition,
    truncate(
      `host ${host.name} was not evacuated: ${what}; the host is left as it was before. Use on_blocked SKIP or SHUTDOWN, or remove the blockers: ${listed}`,
      1800,
    ),
    details,
    { resource: `host ${host.name}` },
  );
}

async function markCancelling(m: EntityManager, emit: Emit, row: EvacuationRow): Promise<EvacuationRow> {
  const fresh = await updateVersionedRow(
    m,
    EvacuationRow,
    { kind: 'evacuation', id: row.id, version: row.version },
    {
      state: 'CANCELLING',
      stateReason:
        'cancel requested: no new migration starts; running ones roll back unless past their point of no return',
    },
  );
  emit(evacuationEvent('UPDATED', fresh));
  return fresh;
}

export function evacuationEvent(type: 'CREATED' | 'UPDATED', row: EvacuationRow) {
  return { kind: 'evacuation', type, resourceId: row.id, tenantId: '', payload: evacuationToProto(row) };
}

/** Runs `fn` over `items`, at most `limit` at once, keeping the order of the answers. */
async function mapLimit<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}
