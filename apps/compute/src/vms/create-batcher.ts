import { DomainError, ErrorCode } from '@flotilla/domain';
import { appendEventsStatement, OutboxEvent, outboxLockKey, quotedTable } from '@flotilla/platform';
import { events, ComputeStore } from '../persistence/compute-store';
import { OperationRow, VmRow } from '../persistence/entities';

/** A validated create: the VM and its vm.create operation as they will be recorded if the VM is new. */
export interface PreparedCreate {
  vm: VmRow;
  operation: OperationRow;
}

export interface CreateOutcome {
  vm: VmRow;
  operation: OperationRow;
  /** False when the request_id was seen before: vm and operation are the first create's. */
  isNew: boolean;
}

export interface CreateBatcherOptions {
  /** Most creates committed by one statement. */
  maxBatch?: number;
  /**
   * Batches committing at once. Two overlap one batch's commit (WAL flush, replies) with the next one's
   * inserts; their events still commit one after the other, under the outbox lock.
   */
  maxInFlight?: number;
}

interface Waiter {
  create: PreparedCreate;
  resolve: (outcome: CreateOutcome) => void;
  reject: (error: unknown) => void;
  /** Repeats of this create's request_id in the same batch: they get its answer. */
  repeats: Waiter[];
}

/**
 * Group commit for CreateVm. Creates that arrive while a batch is being committed wait for it and then go
 * together, as one statement in its own transaction: the VMs (`ON CONFLICT DO NOTHING`: the unique indexes
 * on (tenant, name) and (tenant, request_id) decide races, within a batch and against other writers), their
 * operations and their outbox events, under the outbox lock taken after the VM inserts. A lone create is
 * not delayed (the batch starts on the next turn of the event loop); under load a batch holds the creates
 * that arrived during the previous one, so BEGIN/COMMIT, the round trip, the WAL flush and the outbox lock
 * are paid once per batch instead of once per create.
 *
 * Each caller gets its own answer: its new VM; the first create's VM and operation for a repeated
 * request_id (repeats inside one batch share the first's answer); ALREADY_EXISTS for a name taken in the
 * tenant. If the statement fails as a whole (one bad row fails all of it), every create of the batch is
 * retried on its own, so only the create that caused the failure fails.
 */
export class CreateBatcher {
  private readonly queue: Waiter[] = [];
  private running = 0;
  private scheduled = false;
  private readonly maxBatch: number;
  private readonly maxInFlight: number;

  constructor(
    private readonly store: ComputeStore,
    options: CreateBatcherOptions = {},
  ) {
    this.maxBatch = options.maxBatch ?? 128;
    this.maxInFlight = options.maxInFlight ?? 2;
  }

  submit(create: PreparedCreate): Promise<CreateOutcome> {
    return new Promise((resolve, reject) => {
      this.queue.push({ create, resolve, reject, repeats: [] });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.running >= this.maxInFlight || this.scheduled || !this.queue.length) return;
    this.scheduled = true;
    // Creates that arrive in the same turn of the event loop join this batch.
    setImmediate(() => {
      this.scheduled = false;
      void this.flush();
    });
  }

  private async flush(): Promise<void> {
    if (this.running >= this.maxInFlight || !this.queue.length) return;
    this.running++;
    const batch = this.queue.splice(0, this.maxBatch);
    try {
      await this.commit(batch);
    } finally {
      this.running--;
      this.schedule();
    }
  }

  /** Settles every waiter of the batch, whatever happens. */
  private async commit(batch: Waiter[]): Promise<void> {
    // Repeats of one request_id in the batch share the first one's answer, as if they came after it.
    const leaders: Waiter[] = [];
    const byRequest = new Map<string, Waiter>();
    for (const w of batch) {
      const { tenantId, requestId } = w.create.vm;
      const key = requestId === null ? undefined : `${tenantId}\n${requestId}`;
      const leader = key === undefined ? undefined : byRequest.get(key);
      if (leader) leader.repeats.push(w);
      else {
        if (key !== undefined) byRequest.set(key, w);
        leaders.push(w);
      }
    }
    const settle = (leader: Waiter, outcome: { ok: CreateOutcome } | { error: unknown }) => {
      if ('ok' in outcome) {
        leader.resolve(outcome.ok);
        for (const r of leader.repeats) r.resolve({ ...outcome.ok, isNew: false });
      } else for (const w of [leader, ...leader.repeats]) w.reject(outcome.error);
    };

    let inserted: Set<string>;
    try {
      inserted = await this.insert(leaders.map((w) => w.create));
    } catch {
      // One create made the statement fail: find which by committing each on its own.
      await Promise.all(
        leaders.map((w) =>
          this.insert([w.create]).then(
            (ids) => this.outcome(w.create, ids).then((ok) => settle(w, { ok })),
            (error: unknown) => settle(w, { error }),
          ),
        ),
      );
      return;
    }
    await Promise.all(
      leaders.map((w) =>
        this.outcome(w.create, inserted).then(
          (ok) => settle(w, { ok }),
          (error: unknown) => settle(w, { error }),
        ),
      ),
    );
  }

  /** The answer for a create once its statement committed: its VM, the earlier one, or ALREADY_EXISTS. */
  private async outcome(create: PreparedCreate, inserted: Set<string>): Promise<CreateOutcome> {
    const { vm, operation } = create;
    if (inserted.has(vm.id)) return { vm, operation, isNew: true };
    const m = this.store.manager;
    const earlier = vm.requestId
      ? await m.findOneBy(VmRow, { tenantId: vm.tenantId, requestId: vm.requestId })
      : null;
    if (!earlier)
      throw new DomainError(
        ErrorCode.AlreadyExists,
        `a VM named ${vm.name} already exists in this tenant: choose another name`,
        { field: 'name' },
      );
    const op = await m.findOneByOrFail(OperationRow, { targetId: earlier.id, kind: 'vm.create' });
    return { vm: earlier, operation: op, isNew: false };
  }

  /** Commits the creates whose name and request_id are free, with their events; returns their VM ids. */
  private async insert(creates: PreparedCreate[]): Promise<Set<string>> {
    const m = this.store.manager;
    const rows = creates.map(({ vm, operation: op }, ord) => ({
      ord,
      id: vm.id,
      name: vm.name,
      tenant_id: vm.tenantId,
      labels: vm.labels,
      flavor_id: vm.flavorId,
      vcpus: vm.vcpus,
      memory_mib: vm.memoryMib,
      root_disk_gib: vm.rootDiskGib,
      boot: vm.boot,
      power_state: vm.powerState,
      power_state_reason: vm.powerStateReason,
      current_operation_id: vm.currentOperationId,
      anti_affinity_group: vm.antiAffinityGroup,
      required_host_labels: vm.requiredHostLabels,
      nics: vm.nics,
      request_id: vm.requestId,
      vm_version: vm.version,
      vm_created_at: vm.createdAt,
      vm_updated_at: vm.updatedAt,
      op_id: op.id,
      op_kind: op.kind,
      op_target_kind: op.targetKind,
      op_target_name: op.targetName,
      op_request_id: op.requestId,
      op_state: op.state,
      op_progress: op.progress,
      op_step: op.step,
      op_params: op.params,
      op_result: op.result,
      op_version: op.version,
      op_created_at: op.createdAt,
      op_updated_at: op.updatedAt,
      op_finished_at: op.finishedAt,
      vm_event: events.vm('CREATED', vm).payload,
      op_event: events.operation('CREATED', op).payload,
    }));
    const vms = quotedTable(m, VmRow);
    const ops = quotedTable(m, OperationRow);
    const result: Array<{ id: string }> = await m.query(
      `WITH input AS (
         SELECT * FROM json_to_recordset($1::json) AS x(
           ord int, id uuid, name text, tenant_id text, labels jsonb, flavor_id uuid, vcpus int, memory_mib bigint,
           root_disk_gib bigint, boot jsonb, power_state text, power_state_reason text, current_operation_id uuid,
           anti_affinity_group text, required_host_labels jsonb, nics jsonb, request_id text, vm_version int,
           vm_created_at timestamptz, vm_updated_at timestamptz, op_id uuid, op_kind text, op_target_kind text,
           op_target_name text, op_request_id text, op_state text, op_progress double precision, op_step text,
           op_params jsonb, op_result jsonb, op_version int, op_created_at timestamptz, op_updated_at timestamptz,
           op_finished_at timestamptz, vm_event jsonb, op_event jsonb)
       ),
       vm AS (
         INSERT INTO ${vms} (id, name, tenant_id, labels, flavor_id, vcpus, memory_mib, root_disk_gib, boot,
           power_state, power_state_reason, host_id, current_operation_id, anti_affinity_group,
           required_host_labels, nics, request_id, version, created_at, updated_at)
         SELECT id, name, tenant_id, labels, flavor_id, vcpus, memory_mib, root_disk_gib, boot, power_state,
           power_state_reason, NULL, current_operation_id, anti_affinity_group, required_host_labels, nics,
           request_id, vm_version, vm_created_at, vm_updated_at
           FROM input ORDER BY ord
         ON CONFLICT DO NOTHING RETURNING id
       ),
       created AS (SELECT input.* FROM input JOIN vm USING (id)),
       op AS (
         INSERT INTO ${ops} (id, kind, target_kind, target_id, target_name, tenant_id, request_id, state, progress,
           step, params, result, error_code, error_message, error_field, point_of_no_return, version, created_at,
           updated_at, finished_at)
         SELECT op_id, op_kind, op_target_kind, id, op_target_name, tenant_id, op_request_id, op_state,
           op_progress, op_step, op_params, op_result, NULL, NULL, NULL, false, op_version, op_created_at,
           op_updated_at, op_finished_at
           FROM created
       ),
       ev AS (
         ${appendEventsStatement({
           table: quotedTable(m, OutboxEvent),
           keyParam: '$2',
           afterSql: 'vm',
           rowsSql: `SELECT ord * 2 AS ord, 'vm' AS kind, 'CREATED' AS type, id::text AS resource_id, tenant_id,
                            vm_event AS payload FROM created
                     UNION ALL
                     SELECT ord * 2 + 1, 'operation', 'CREATED', op_id::text, tenant_id, op_event FROM created`,
         })}
       )
       SELECT id FROM vm`,
      [JSON.stringify(rows), outboxLockKey(m)],
    );
    if (result.length) this.store.feed.wake();
    return new Set(result.map((r) => r.id));
  }
}
