import { randomUUID } from 'node:crypto';
import type { QueryDeepPartialEntity } from 'typeorm/query-builder/QueryPartialEntity';
import { migrationV1 } from '@flotilla/contracts';
import {
  expectPresent,
  failedPrecondition,
  notFound,
  parsePage,
  validateId,
  validateLabels,
  validateName,
  validateRequestId,
} from '@flotilla/domain';
import {
  Caller,
  fetchPage,
  OnCancelled,
  OperationRow,
  OperationService,
  requireRole,
} from '@flotilla/platform';
import { MigrationRow } from '../persistence/entities';
import { emptyStats, migrationEvent, migrationToProto } from './migration.mapper';
import { isFinished, MigrationRecords, withPhase } from './migration-records';
import { MigrationRunner } from './migration-runner';
import type { MigrationPort } from './migration-port';
import { modeOf, Preflight, PreflightInput } from './preflight';
import { blockersStatus, grpcErrorOf } from './statuses';

/** Pool scope: the evacuation context and other in-process callers. */
const poolCaller: Caller = { tenantId: '', role: 'pool-admin', crossTenant: true };

/** ListMigrations filter fields and the columns they compare. */
const filterColumns = new Map([
  ['vm_id', 'm.vm_id::text'],
  ['state', 'm.state'],
  ['phase', 'm.phase'],
  ['mode', 'm.mode'],
  ['source_host_id', 'm.source_host_id'],
  ['destination_host_id', 'm.destination_host_id'],
  ['evacuation_id', 'm.evacuation_id'],
]);
const enumPrefixes: Record<string, string> = {
  state: 'MIGRATION_STATE_',
  phase: 'MIGRATION_PHASE_',
  mode: 'MIGRATION_MODE_',
};

export interface CreateInput {
  requestId?: string;
  spec: migrationV1.MigrationSpec | undefined;
  name?: string;
  labels?: Record<string, string>;
  evacuationId?: string;
}

/**
 * MigrationService's behaviour: preflight, create (persisted, then run in the background by the runner),
 * read, list and cancel, scoped to the caller's tenant. Also the in-process MigrationPort (pool scope).
 */
export class MigrationService implements MigrationPort {
  constructor(
    private readonly records: MigrationRecords,
    private readonly operations: OperationService,
    private readonly checks: Preflight,
    private readonly runner: MigrationRunner,
  ) {}

  async preflightFor(caller: Caller, spec: migrationV1.MigrationSpec | undefined) {
    requireRole(caller, 'vm-power-admin', 'PreflightMigration');
    return (await this.checks.run(this.preflightInput(caller, spec))).check;
  }

  async create(
    caller: Caller,
    input: CreateInput,
  ): Promise<{ migration: MigrationRow; operation: OperationRow }> {
    requireRole(caller, 'vm-power-admin', 'CreateMigration');
    const rid = validateRequestId(input.requestId);
    const requestKey = rid ? `${caller.crossTenant ? '*' : caller.tenantId}/${rid}` : null;
    const name = input.name ? validateName('name', input.name) : '';
    const labels = validateLabels('labels', input.labels);
    if (requestKey) {
      const earlier = await this.byRequest(requestKey);
      if (earlier) return earlier;
    }
    const pre = await this.preflightForCreate(caller, input.spec);
    if (!pre.check.migratable) throw grpcErrorOf(blockersStatus(pre.check.blockers));
    const spec = expectPresent(input.spec, 'spec checked by the preflight');
    const vm = expectPresent(pre.vm, 'compute CheckVmMigration answered without the VM');
    const source = expectPresent(pre.source, 'compute CheckVmMigration answered without the source host');
    const destination = expectPresent(
      pre.destination,
      'compute CheckVmMigration answered without a destination',
    );
    const id = randomUUID();
    const now = new Date();
    try {
      await this.records.store.tx(async (m, emit) => {
        const op = await this.operations.create(m, emit, {
          kind: 'vm.migrate',
          target: { kind: 'vm', id: vm.id, name: vm.name },
          tenantId: vm.tenantId,
          params: { migration_id: id, destination_host_id: destination.id },
        });
        const row: MigrationRow = {
          id,
          name,
          tenantId: vm.tenantId,
          labels,
          vmId: vm.id,
          vmName: vm.name,
          sourceHostId: source.id,
          destinationHostId: destination.id,
          mode: modeOf(spec),
          withStorage: spec.withStorage ?? false,
          requestedVdiMap: spec.vdiMap ?? {},
          vdiMap: pre.check.vdiMap,
          state: 'QUEUED',
          stateReason: 'waiting for a slot',
          phase: 'PREFLIGHT',
          step: 'queued',
          progress: 0,
          pointOfNoReturnPassed: false,
          postCopyStarted: false,
          pointOfNoReturnAt: null,
          options: pre.options,
          bandwidthBytesPerSec: pre.options.bandwidthBytesPerSec,
          stats: { ...emptyStats(), memoryTotalBytes: pre.check.memoryBytes },
          phases: [],
          error: null,
          operationId: op.id,
          evacuationId: input.evacuationId ?? '',
          sourceHost: null,
          destinationHost: null,
          diskPlan: pre.disks,
          incoming: null,
          pending: [],
          requestId: requestKey,
          startedAt: null,
          finishedAt: null,
          version: 1,
          createdAt: now,
          updatedAt: now,
        };
        // jsonb columns of nested records defeat TypeORM's deep-partial typing; the row is complete.
        await m.insert(MigrationRow, row as QueryDeepPartialEntity<MigrationRow>);
        emit(migrationEvent('CREATED', row));
      });
    } catch (e) {
      // The same request raced in: its first migration wins.
      const earlier = requestKey ? await this.byRequest(requestKey) : undefined;
      if (earlier) return earlier;
      throw e;
    }
    await this.runner.admitQueued();
    const migration = await this.records.get(id);
    return { migration, operation: await this.operations.get(poolCaller, migration.operationId) };
  }

  async getFor(caller: Caller, id: string): Promise<MigrationRow> {
    const mid = validateId('id', id, 'migration');
    const row = await this.records.store.manager.findOneBy(MigrationRow, { id: mid });
    if (!row || (!caller.crossTenant && row.tenantId !== caller.tenantId)) throw notFound('migration', id);
    return row;
  }

  async list(
    caller: Caller,
    page: { pageSize?: number; pageToken?: string; filter?: string } | undefined,
  ): Promise<{ migrations: MigrationRow[]; nextPageToken: string }> {
    const spec = parsePage(page, [...filterColumns.keys(), 'label.*']);
    const qb = this.records.store.manager.createQueryBuilder(MigrationRow, 'm');
    if (!caller.crossTenant) qb.andWhere('m.tenant_id = :tenant', { tenant: caller.tenantId });
    for (const [i, term] of spec.filter.entries()) {
      if (term.field.startsWith('label.')) {
        qb.andWhere(`m.labels ->> :k${i} = :f${i}`, {
          [`k${i}`]: term.field.slice(6),
          [`f${i}`]: term.value,
        });
        continue;
      }
      const column = expectPresent(filterColumns.get(term.field), `no column for filter field ${term.field}`);
      const prefix = enumPrefixes[term.field];
      qb.andWhere(`${column} = :f${i}`, { [`f${i}`]: prefix ? term.value.replace(prefix, '') : term.value });
    }
    const { rows, nextPageToken } = await fetchPage(
      qb.orderBy('m.created_at', 'DESC').addOrderBy('m.id'),
      spec,
      page?.filter,
    );
    return { migrations: rows, nextPageToken };
  }

  async cancelFor(caller: Caller, id: string): Promise<MigrationRow> {
    requireRole(caller, 'vm-power-admin', 'CancelMigration');
    const row = await this.getFor(caller, id);
    if (isFinished(row))
      throw failedPrecondition(`migration ${row.id} already finished (${row.state})`, {
        resource: `migration ${row.id}`,
      });
    if (row.pointOfNoReturnPassed)
      throw failedPrecondition(
        `migration ${row.id} passed its point of no return at ${row.pointOfNoReturnAt?.toISOString() ?? '?'}: it finishes on its own`,
        { resource: `migration ${row.id}` },
      );
    await this.operations.cancel(poolCaller, row.operationId, this.onCancelled);
    this.runner.poke(row.id);
    void this.runner.admitQueued();
    return this.records.get(row.id);
  }

  /**
   * A cancel of the migration's operation (CancelMigration or CancelOperation), in the cancel's
   * transaction: a QUEUED migration ends CANCELLED at once, a RUNNING one goes CANCELLING and rolls back.
   */
  readonly onCancelled: OnCancelled = async (m, emit, op) => {
    const row = await m.findOne(MigrationRow, {
      where: { operationId: op.id },
      lock: { mode: 'pessimistic_write' },
    });
    if (!row || isFinished(row) || row.pointOfNoReturnPassed) return;
    const now = new Date();
    await this.records.write(
      m,
      emit,
      row,
      row.state === 'QUEUED'
        ? {
            state: 'CANCELLED',
            stateReason: 'cancelled by request',
            step: 'done',
            finishedAt: now,
            error: { code: 1, message: 'cancelled by request', details: [] },
            ...withPhase(row, 'DONE', '', now),
          }
        : { state: 'CANCELLING', stateReason: 'cancel requested: rolling back' },
    );
    setImmediate(() => this.runner.poke(row.id));
  };

  // ---- MigrationPort (pool scope) ----

  preflight(spec: migrationV1.MigrationSpec, tenantId?: string): Promise<migrationV1.PreflightCheck> {
    return this.preflightFor(
      tenantId ? { tenantId, role: 'vm-power-admin', crossTenant: false } : poolCaller,
      spec,
    );
  }

  async start(input: {
    requestId: string;
    spec: migrationV1.MigrationSpec;
    evacuationId: string;
    name?: string;
  }): Promise<migrationV1.Migration> {
    const { migration } = await this.create(poolCaller, input);
    return migrationToProto(migration);
  }

  async get(id: string): Promise<migrationV1.Migration> {
    return migrationToProto(await this.getFor(poolCaller, id));
  }

  async cancel(id: string): Promise<migrationV1.Migration> {
    return migrationToProto(await this.cancelFor(poolCaller, id));
  }

  // ----

  /**
   * With no destination named, the scheduler's pick avoids hosts other migrations are about to move to
   * (picked, room not held yet): concurrent starts (an evacuation's, several evacuations') would otherwise
   * all pick the same emptiest host, queue behind its incoming limit and find it full. Without room elsewhere
   * they may still go there.
   */
  private async preflightForCreate(caller: Caller, spec: migrationV1.MigrationSpec | undefined) {
    const input = this.preflightInput(caller, spec);
    const pending = spec && !spec.destinationHostId ? await this.records.destinationsNotHeld() : [];
    if (pending.length) {
      const pre = await this.checks.run({ ...input, excludeHostIds: pending });
      const noDestination = pre.check.blockers.some(
        (b) => b.kind === migrationV1.BlockerKind.BLOCKER_KIND_NO_DESTINATION,
      );
      if (!noDestination) return pre;
    }
    return this.checks.run(input);
  }

  private preflightInput(caller: Caller, spec: migrationV1.MigrationSpec | undefined): PreflightInput {
    return {
      spec,
      tenantId: caller.crossTenant ? '' : caller.tenantId,
      otherMigration: async (vmId) => (await this.records.activeForVm(vmId))[0]?.id,
      recentDirtyRate: (vmId) => this.recentDirtyRate(vmId),
    };
  }

  /** The dirty rate the VM's latest migration measured, 0 when none did. */
  private async recentDirtyRate(vmId: string): Promise<number> {
    const last = await this.records.store.manager
      .createQueryBuilder(MigrationRow, 'm')
      .where('m.vm_id = :vmId', { vmId })
      .andWhere(`(m.stats ->> 'dirtyRateBytesPerSec')::bigint > 0`)
      .orderBy('m.created_at', 'DESC')
      .getOne();
    return last?.stats.dirtyRateBytesPerSec ?? 0;
  }

  private async byRequest(
    requestKey: string,
  ): Promise<{ migration: MigrationRow; operation: OperationRow } | undefined> {
    const migration = await this.records.store.manager.findOneBy(MigrationRow, { requestId: requestKey });
    if (!migration) return undefined;
    return { migration, operation: await this.operations.get(poolCaller, migration.operationId) };
  }
}
