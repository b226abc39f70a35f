import * as grpc from '@grpc/grpc-js';
import { commonV1, migrationV1 } from '@flotilla/contracts';
import {
  createLogger,
  freePort,
  GrpcClient,
  md,
  errorDetailsOf,
  parseConfig,
  rejection,
  testDatabase,
  uniqueSchema,
  waitFor,
  WatchRecorder,
} from '@flotilla/platform';
import { migrationConfigSpec } from '../config';
import { MigrationApp, startMigration } from '../migration.app';
import { FakeDisk, FakePool } from '../testing/fake-pool';
import { emptyOptions } from './migration.mapper';

// Real: the migration service (its gRPC edge, runner and reconciler), the database (PGlite, and PostgreSQL
// when TEST_DATABASE_URL is set), gRPC on loopback to every peer. Stand-ins: compute, storage and the host
// agents (apps/migration/src/testing/fake-pool.ts: contract state machines, QEMU's migration states on a
// timer); the end-to-end run with the real ones and real QEMU is the lead's.

const { MigrationState, MigrationPhase } = migrationV1;
const token = 'test-service-token-0123456789';
const vmA = 'aaaaaaaa-0000-4000-8000-000000000001';
const vmB = 'aaaaaaaa-0000-4000-8000-000000000002';
const vmC = 'aaaaaaaa-0000-4000-8000-000000000003';
const vmD = 'aaaaaaaa-0000-4000-8000-000000000004';

describe.each(testDatabase('PostgreSQL'))('migration service on %s', (_db, url) => {
  let pool: FakePool;
  let app: MigrationApp;
  let schema: string;
  let client: GrpcClient<migrationV1.MigrationServiceClient>;
  let ops: GrpcClient<commonV1.OperationServiceClient>;
  let address: string;
  let adminAddress: string;

  const start = async () => {
    const config = parseConfig(migrationConfigSpec, {
      FLOTILLA_SERVICE_TOKEN: token,
      DATABASE_URL: url,
      FLOTILLA_MIGRATION_ADDRESS: address,
      FLOTILLA_MIGRATION_ADMIN_ADDRESS: adminAddress,
      FLOTILLA_COMPUTE_URL: pool.computeUrl,
      FLOTILLA_STORAGE_URL: pool.storageUrl,
      FLOTILLA_MIGRATION_MAX_OUTGOING: '2',
    });
    app = await startMigration(config, createLogger('migration', 'warn'), {
      schema,
      runner: { pollWaitMs: 200, retryDelayMs: 100, reconcileEveryMs: 300, statsEveryMs: 0 },
    });
  };

  beforeAll(async () => {
    pool = new FakePool();
    await pool.start();
    schema = uniqueSchema('migration');
    address = `127.0.0.1:${await freePort()}`;
    adminAddress = `127.0.0.1:${await freePort()}`;
    await start();
    connect();
  });

  const connect = () => {
    const meta = { [md.serviceToken]: token, [md.tenantId]: 'tenant-a', [md.role]: 'vm-power-admin' };
    client = new GrpcClient({
      address,
      service: 'flotilla.migration.v1.MigrationService',
      staticMetadata: meta,
    });
    ops = new GrpcClient({ address, service: 'flotilla.common.v1.OperationService', staticMetadata: meta });
  };
  /** Kills the service as a crash would and starts it again on the same database (clients reconnect). */
  const restart = async (between: () => Promise<void> | void = () => undefined) => {
    await app.stop();
    client.close();
    ops.close();
    await between();
    await start();
    connect();
  };

  afterAll(async () => {
    client.close();
    ops.close();
    await app.stop();
    pool.stop();
  });

  beforeEach(() => {
    pool.agents.guest = { memoryMib: 512, convergeAfterRounds: 3, roundMs: 40 };
    pool.agents.failOnce.clear();
    pool.agents.holdSwitchOver = undefined;
    pool.agents.holdCompletedStatus = undefined;
    pool.agents.autoSwitch = true;
    pool.agents.calls.length = 0;
    // Each test starts from free TCG hosts (earlier tests' VMs are forgotten by freshVm).
    for (let n = 1; n <= 3; n++) Object.assign(pool.host(n), { memoryFreeMib: 4096, accelerator: 'tcg' });
  });

  /** Migration options: every field at its default (0/false) but those given. */
  const options = (over: Partial<migrationV1.MigrationOptions> = {}): migrationV1.MigrationOptions => ({
    ...emptyOptions(),
    ...over,
  });
  const spec = (vmId: string, extra: Partial<migrationV1.MigrationSpec> = {}): migrationV1.MigrationSpec => ({
    vmId,
    destinationHostId: pool.host(2).id,
    mode: migrationV1.MigrationMode.MIGRATION_MODE_LIVE,
    withStorage: false,
    vdiMap: {},
    options: undefined,
    ...extra,
  });
  const create = (s: migrationV1.MigrationSpec, requestId = '') =>
    client.call.createMigration({ requestId, spec: s, name: '', labels: {} });
  const get = async (id: string) => (await client.call.getMigration({ id })).migration!;
  const finished = (id: string) =>
    waitFor(`migration ${id} finished`, async () => {
      const m = await get(id);
      return [
        MigrationState.MIGRATION_STATE_SUCCEEDED,
        MigrationState.MIGRATION_STATE_FAILED,
        MigrationState.MIGRATION_STATE_CANCELLED,
      ].includes(m.state)
        ? m
        : undefined;
    });
  /** In TRANSFER with memory moving: the source QEMU is sending (not merely about to be asked to). */
  const transferring = (id: string) =>
    waitFor(
      'memory transfer running',
      async () =>
        (await get(id)).phase === MigrationPhase.MIGRATION_PHASE_TRANSFER &&
        pool.agents.outgoing.get(id)?.state === migrationV1.OutgoingState.OUTGOING_STATE_ACTIVE,
    );
  /** A disk on host h1's FILE SR (copied only with with_storage). */
  const localDisk = (name: string, sizeBytes: number): FakeDisk => ({
    vbdId: `vbd-${name}`,
    vdiId: `vdi-${name}`,
    srId: 'sr-local-1',
    srHostId: pool.host(1).id,
    sizeBytes,
  });
  const phases = (m: migrationV1.Migration) => m.phases.map((p) => p.phase.replace('MIGRATION_PHASE_', ''));
  const freshVm = (id: string, disks: FakeDisk[] = []) => {
    pool.compute.vms.delete(id);
    return pool.addVm({ id }, disks);
  };

  it('moves a running VM live: phases in order, the VM on the destination, statistics from QEMU, nothing left behind', async () => {
    freshVm(vmA);
    const { migration, operation } = await create(spec(vmA));
    expect(operation?.kind).toBe('vm.migrate');
    expect(operation?.target?.id).toBe(vmA);
    expect([MigrationState.MIGRATION_STATE_RUNNING, MigrationState.MIGRATION_STATE_QUEUED]).toContain(
      migration!.state,
    );
    const done = await finished(migration!.id);
    expect(done.state).toBe(MigrationState.MIGRATION_STATE_SUCCEEDED);
    expect(phases(done)).toEqual(['PREFLIGHT', 'PREPARE', 'TRANSFER', 'SWITCHOVER', 'CLEANUP', 'DONE']);
    expect(done.phases.every((p) => p.endedAt)).toBe(true);
    expect(done.pointOfNoReturnPassed).toBe(true);
    expect(done.progress).toBe(1);
    expect(done.stats?.downtimeMs).toBe(17);
    expect(done.stats?.rounds).toBeGreaterThanOrEqual(3);
    expect(done.stats?.bytesTransferred).toBeGreaterThan(0);
    expect(done.stats?.totalTimeMs).toBeGreaterThan(0);
    // compute: the VM runs on the destination, unlocked, holding capacity there only.
    const vm = pool.compute.vms.get(vmA)!;
    expect(vm.hostId).toBe(pool.host(2).id);
    expect(vm.currentOperationId).toBe('');
    expect(vm.reservedOn).toEqual([pool.host(2).id]);
    // the agents: the source QEMU is gone, the destination took the VM over.
    expect(pool.agents.outgoing.has(done.id)).toBe(false);
    expect(pool.agents.incoming.get(done.id)?.state).toBe('FINISHED');
    // the parameters were explicit, bandwidth from the pool default (4 GiB/s).
    expect(done.options?.bandwidthBytesPerSec).toBe(4 * 1024 ** 3);
    const op = (await ops.call.getOperation({ id: done.operationId })).operation!;
    expect(op.state).toBe(commonV1.OperationState.OPERATION_STATE_SUCCEEDED);
    // metrics carry the outcome.
    const metrics = await fetch(`http://${adminAddress}/metrics`).then((r) => r.text());
    expect(metrics).toMatch(/flotilla_migrations_total\{mode="live",outcome="succeeded"\} [1-9]/);
    expect(metrics).toMatch(/flotilla_migration_downtime_seconds_count\{mode="live"\} [1-9]/);
  });

  it('mirrors local disks first when with_storage is set, then commits and cleans them up', async () => {
    freshVm(vmB, [localDisk('b1', 64 << 20)]);
    const { migration } = await create(spec(vmB, { withStorage: true }));
    const done = await finished(migration!.id);
    expect(done.state).toBe(MigrationState.MIGRATION_STATE_SUCCEEDED);
    expect(phases(done)).toEqual([
      'PREFLIGHT',
      'PREPARE',
      'MIRROR',
      'TRANSFER',
      'SWITCHOVER',
      'CLEANUP',
      'DONE',
    ]);
    expect(done.vdiMap).toEqual({ 'vdi-b1': pool.storage.fileSrOf.get(pool.host(2).id) });
    expect(pool.storage.migrations.get(done.id)?.state).toBe('CLEANED');
    expect(pool.storage.disks.get(vmB)?.[0].srId).toBe(pool.storage.fileSrOf.get(pool.host(2).id));
  });

  it('lists every blocker at once in the preflight, and CreateMigration refuses with one detail each', async () => {
    const vm = freshVm(vmC, [localDisk('c1', 1 << 30)]);
    vm.powerState = 'HALTED';
    vm.memoryMib = 64 * 1024;
    const { check } = await client.call.preflightMigration({ spec: spec(vmC) });
    expect(check?.migratable).toBe(false);
    const kinds = check!.blockers.map((b) => b.kind.replace('BLOCKER_KIND_', '')).sort();
    expect(kinds).toEqual(['INSUFFICIENT_MEMORY', 'LOCAL_STORAGE', 'VM_POWER_STATE']);
    expect(check!.warnings.map((w) => w.kind)).toContain(
      migrationV1.WarningKind.WARNING_KIND_UNENCRYPTED_TRANSFER,
    );

    const refused = await create(spec(vmC)).catch((e: grpc.ServiceError) => e);
    expect((refused as grpc.ServiceError).code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(
      errorDetailsOf(refused)
        .map((d) => d.reason)
        .sort(),
    ).toEqual(kinds);
    // Nothing was recorded for the refused request.
    const { migrations } = await client.call.listMigrations({
      page: { pageSize: 100, pageToken: '', filter: `vm_id=${vmC}` },
    });
    expect(migrations).toEqual([]);
  });

  it('answers a migration to the host the VM is on with the SAME_HOST blocker, not an error', async () => {
    freshVm(vmC);
    const { check } = await client.call.preflightMigration({
      spec: spec(vmC, { destinationHostId: pool.host(1).id }),
    });
    expect(check!.blockers.map((b) => b.kind)).toEqual([migrationV1.BlockerKind.BLOCKER_KIND_SAME_HOST]);
  });

  it.each([
    ['auto-converge', { autoConverge: true }, 'AUTO_CONVERGE_UNSAFE', 'auto_converge'],
    ['post-copy', { postCopy: true }, 'POST_COPY_UNSUPPORTED', 'post_copy'],
  ] as const)(
    'refuses %s when the source runs its guests under TCG, naming the option and the way out',
    async (_name, asked, reason, option) => {
      freshVm(vmC);
      const plainOptions = options();
      const asking = options(asked);
      const { check } = await client.call.preflightMigration({ spec: spec(vmC, { options: asking }) });
      expect(check!.blockers.map((b) => migrationV1.BlockerKind[b.kind])).toEqual([`BLOCKER_KIND_${reason}`]);
      expect(check!.blockers[0].message).toMatch(
        new RegExp(
          `^${option}: host \\S+ runs its guests under TCG.*raise bandwidth_bytes_per_sec or downtime_limit_ms`,
        ),
      );
      // Pre-copy under TCG is allowed, with the risk named.
      expect(check!.warnings.map((w) => migrationV1.WarningKind[w.kind])).toContain(
        'WARNING_KIND_TCG_MEMORY_RISK',
      );
      const refused = await create(spec(vmC, { options: asking })).catch((e: grpc.ServiceError) => e);
      expect((refused as grpc.ServiceError).code).toBe(grpc.status.FAILED_PRECONDITION);
      expect(errorDetailsOf(refused).map((d) => d.reason)).toEqual([reason]);
      // The same VM and hosts without the option: nothing stands in the way.
      const plain = await client.call.preflightMigration({ spec: spec(vmC, { options: plainOptions }) });
      expect(plain.check!.blockers).toEqual([]);
    },
  );

  it('rejects options out of range naming the field', async () => {
    freshVm(vmC);
    const r = await rejection(
      create(
        spec(vmC, {
          options: options({ downtimeLimitMs: 70_000 }),
        }),
      ),
    );
    expect(r.code).toBe('INVALID_ARGUMENT');
    expect(r.message).toContain('spec.options.downtime_limit_ms');
    const offline = await rejection(
      create(spec(vmC, { mode: migrationV1.MigrationMode.MIGRATION_MODE_OFFLINE })),
    );
    expect(offline.code).toBe('UNIMPLEMENTED');
  });

  it('returns the first migration for a repeated request_id', async () => {
    freshVm(vmD);
    const first = await create(spec(vmD), 'req-1');
    const again = await create(spec(vmD), 'req-1');
    expect(again.migration?.id).toBe(first.migration?.id);
    expect(again.operation?.id).toBe(first.operation?.id);
    await finished(first.migration!.id);
  });

  it('rolls back on cancel before the point of no return: every side undone, the VM untouched on the source', async () => {
    freshVm(vmA, [localDisk('a1', 64 << 20)]);
    pool.agents.guest = { memoryMib: 512, convergeAfterRounds: 1000, roundMs: 40 };
    const { migration } = await create(spec(vmA, { withStorage: true }));
    const id = migration!.id;
    await transferring(id);
    const cancelled = (await client.call.cancelMigration({ id })).migration!;
    expect([MigrationState.MIGRATION_STATE_CANCELLING, MigrationState.MIGRATION_STATE_CANCELLED]).toContain(
      cancelled.state,
    );
    const done = await finished(id);
    expect(done.state).toBe(MigrationState.MIGRATION_STATE_CANCELLED);
    expect(done.error?.code).toBe(grpc.status.CANCELLED);
    expect(phases(done)).toContain('ROLLBACK');
    expect(done.pointOfNoReturnPassed).toBe(false);
    const agentCalls = pool.agents.calls;
    // Once: the cancel that decided who holds the VM is not repeated by the rest of the rollback.
    expect(agentCalls.filter((c) => c === 'h1:cancelOutgoing')).toHaveLength(1);
    expect(agentCalls).toContain('h2:abortIncoming');
    expect(pool.storage.migrations.has(id)).toBe(false);
    const vm = pool.compute.vms.get(vmA)!;
    expect(vm.hostId).toBe(pool.host(1).id);
    expect(vm.currentOperationId).toBe('');
    expect(vm.reservedOn).toEqual([pool.host(1).id]);
    expect(pool.host(2).memoryFreeMib).toBe(4096);
    expect(pool.agents.incoming.has(id)).toBe(false);
    expect(pool.agents.outgoing.get(id)?.state).toBe(migrationV1.OutgoingState.OUTGOING_STATE_CANCELLED);
    const again = await rejection(client.call.cancelMigration({ id }));
    expect(again.code).toBe('FAILED_PRECONDITION');
  });

  it.each([
    [
      'PREPARE',
      // Read beside storage's prepare, before either is recorded: the rollback still undoes that prepare.
      'the source cannot say its device layout',
      () => pool.agents.failOnce.set('h1:getVmDeviceLayout', grpc.status.INTERNAL),
    ],
    [
      'PREPARE',
      'the destination refuses the incoming VM',
      () => pool.agents.failOnce.set('h2:prepareIncoming', grpc.status.RESOURCE_EXHAUSTED),
    ],
    [
      'MIRROR',
      'the source cannot start the mirror',
      () => pool.agents.failOnce.set('h1:startDiskMirror', grpc.status.INTERNAL),
    ],
    [
      'TRANSFER',
      'the destination agent dies mid-transfer',
      () => {
        pool.agents.guest = { memoryMib: 512, convergeAfterRounds: 1000, roundMs: 40 };
        return 'kill-destination';
      },
    ],
    [
      'TRANSFER',
      'pre-copy does not converge and nothing else is allowed',
      () => {
        pool.agents.guest = { memoryMib: 512, convergeAfterRounds: Infinity, roundMs: 20 };
      },
    ],
  ] as Array<[string, string, () => unknown]>)(
    'rolls back a failure in %s (%s)',
    async (phase, _what, inject) => {
      freshVm(vmB, [localDisk('b1', 64 << 20)]);
      const action = inject();
      const { migration } = await create(spec(vmB, { withStorage: true }));
      const id = migration!.id;
      if (action === 'kill-destination') {
        await transferring(id);
        pool.agents.kill(pool.host(2).id);
      }
      const done = await finished(id);
      if (action === 'kill-destination') await pool.agents.start(pool.host(2).id);
      expect(done.state).toBe(MigrationState.MIGRATION_STATE_FAILED);
      expect(done.error?.message).toBeTruthy();
      expect(done.pointOfNoReturnPassed).toBe(false);
      expect(phases(done)).toContain(phase);
      expect(phases(done).slice(-2)).toEqual(['ROLLBACK', 'DONE']);
      const vm = pool.compute.vms.get(vmB)!;
      expect(vm.hostId).toBe(pool.host(1).id);
      expect(vm.currentOperationId).toBe('');
      expect(pool.host(2).memoryFreeMib).toBe(4096);
      expect(pool.storage.migrations.has(id)).toBe(false);
      expect(pool.storage.disks.get(vmB)?.[0].srId).toBe('sr-local-1');
      if (_what.startsWith('pre-copy')) expect(done.error?.message).toMatch(/does not converge.*MiB/);
      // The destination's leftovers go too, right away or (agent restarting) through the reconciler.
      await waitFor('destination cleaned', () => !pool.agents.incoming.has(id));
    },
  );

  it('keeps asking while the source agent is down (its QEMU goes on), and finishes when it is back', async () => {
    freshVm(vmA);
    pool.agents.guest = { memoryMib: 512, convergeAfterRounds: 15, roundMs: 40 };
    const { migration } = await create(spec(vmA));
    const id = migration!.id;
    await transferring(id);
    pool.agents.kill(pool.host(1).id);
    await new Promise((r) => setTimeout(r, 500));
    expect((await get(id)).state).toBe(MigrationState.MIGRATION_STATE_RUNNING);
    await pool.agents.start(pool.host(1).id);
    const done = await finished(id);
    expect(done.state).toBe(MigrationState.MIGRATION_STATE_SUCCEEDED);
    expect(pool.compute.vms.get(vmA)!.hostId).toBe(pool.host(2).id);
  });

  it('fails and rolls back what it can when the source host goes DOWN before the commit', async () => {
    freshVm(vmA);
    pool.agents.guest = { memoryMib: 512, convergeAfterRounds: 1000, roundMs: 40 };
    const { migration } = await create(spec(vmA));
    const id = migration!.id;
    await transferring(id);
    pool.agents.kill(pool.host(1).id);
    pool.host(1).state = 'DOWN';
    try {
      const done = await finished(id);
      expect(done.state).toBe(MigrationState.MIGRATION_STATE_FAILED);
      expect(done.error?.message).toMatch(/DOWN/);
      expect(done.pointOfNoReturnPassed).toBe(false);
      // The destination's incoming VM and compute's hold are undone; the VM stays the source's.
      expect(pool.agents.incoming.has(id)).toBe(false);
      expect(pool.compute.vms.get(vmA)!.currentOperationId).toBe('');
      expect(pool.compute.vms.get(vmA)!.hostId).toBe(pool.host(1).id);
    } finally {
      pool.host(1).state = 'ENABLED';
      await pool.agents.start(pool.host(1).id);
    }
  });

  it('rolls back when the point of no return is not reached within timeout_ms', async () => {
    freshVm(vmD);
    pool.agents.guest = { memoryMib: 512, convergeAfterRounds: 100_000, roundMs: 40 };
    const { migration } = await create(spec(vmD, { options: options({ timeoutMs: 1000 }) }));
    const done = await finished(migration!.id);
    expect(done.state).toBe(MigrationState.MIGRATION_STATE_FAILED);
    expect(done.error?.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    expect(done.error?.message).toContain('timeout_ms');
    expect(pool.compute.vms.get(vmD)!.hostId).toBe(pool.host(1).id);
    expect(pool.agents.outgoing.get(migration!.id)?.state).toBe(
      migrationV1.OutgoingState.OUTGOING_STATE_CANCELLED,
    );
  });

  it('switches a guest that does not converge to post-copy when allowed (KVM hosts)', async () => {
    freshVm(vmC);
    for (let n = 1; n <= 3; n++) pool.host(n).accelerator = 'kvm';
    pool.agents.guest = { memoryMib: 512, convergeAfterRounds: Infinity, roundMs: 20 };
    const postCopy = options({ postCopy: true, postCopyAfterRounds: 2 });
    const { check } = await client.call.preflightMigration({ spec: spec(vmC, { options: postCopy }) });
    expect(check!.warnings.map((w) => migrationV1.WarningKind[w.kind])).not.toContain(
      'WARNING_KIND_TCG_MEMORY_RISK',
    );
    const { migration } = await create(spec(vmC, { options: postCopy }));
    const done = await finished(migration!.id);
    expect(done.state).toBe(MigrationState.MIGRATION_STATE_SUCCEEDED);
    expect(phases(done)).toContain('POST_COPY');
    expect(done.stats?.postCopyRequests).toBe(42);
    expect(pool.agents.calls).toContain('h1:tuneOutgoing');
  });

  it('resumes a transfer after the migration service is killed mid-TRANSFER', async () => {
    freshVm(vmD);
    pool.agents.guest = { memoryMib: 512, convergeAfterRounds: 25, roundMs: 40 };
    const { migration } = await create(spec(vmD));
    const id = migration!.id;
    await transferring(id);
    await restart(() =>
      // The source QEMU goes on without the service, and switches over by itself once it converged (armed).
      expect([
        migrationV1.OutgoingState.OUTGOING_STATE_ACTIVE,
        migrationV1.OutgoingState.OUTGOING_STATE_PRE_SWITCHOVER,
        migrationV1.OutgoingState.OUTGOING_STATE_COMPLETED,
      ]).toContain(pool.agents.outgoing.get(id)?.state),
    );
    const done = await finished(id);
    expect(done.state).toBe(MigrationState.MIGRATION_STATE_SUCCEEDED);
    // One run, picked up where it was: the source was not asked to start again after the restart.
    expect(pool.agents.calls.filter((c) => c === 'h1:startOutgoing')).toHaveLength(1);
    expect(phases(done)).not.toContain('ROLLBACK');
    expect(pool.compute.vms.get(vmD)!.hostId).toBe(pool.host(2).id);
  });

  it('finishes the clean-up after a restart past the point of no return', async () => {
    freshVm(vmA);
    // The source agent does not switch by itself (it restarted after StartOutgoing): SwitchOver does.
    pool.agents.autoSwitch = false;
    let release!: () => void;
    pool.agents.holdSwitchOver = new Promise<void>((r) => (release = r));
    const { migration } = await create(spec(vmA));
    const id = migration!.id;
    await waitFor('point of no return passed', async () => (await get(id)).pointOfNoReturnPassed);
    await waitFor('switchover asked', () => pool.agents.calls.includes('h1:switchOver'));
    // Inside the guest's pause only the point of no return is recorded: compute records the move after the
    // switch, so the VM's record still names the source while the switch is in flight.
    expect(pool.compute.vms.get(vmA)!.hostId).toBe(pool.host(1).id);
    // The service dies while the switch is in flight; the source switches anyway.
    setTimeout(release, 50);
    await restart(() => {
      pool.agents.holdSwitchOver = undefined;
    });
    // Cancel is refused past the point of no return, whatever the process does.
    const r = await rejection(client.call.cancelMigration({ id }));
    expect(r.code).toBe('FAILED_PRECONDITION');
    const done = await finished(id);
    expect(done.state).toBe(MigrationState.MIGRATION_STATE_SUCCEEDED);
    expect(phases(done)).not.toContain('ROLLBACK');
    expect(pool.compute.vms.get(vmA)!.hostId).toBe(pool.host(2).id);
    expect(pool.compute.vms.get(vmA)!.currentOperationId).toBe('');
    expect(pool.agents.outgoing.has(id)).toBe(false);
  });

  /**
   * A migration of a fresh VM whose source switched over by itself (armed) while the service has not seen it
   * yet: its status poll is held until `release`.
   */
  async function switchedUnseen(vmId: string): Promise<{ id: string; release: () => void }> {
    freshVm(vmId);
    let release!: () => void;
    pool.agents.holdCompletedStatus = new Promise<void>((r) => (release = r));
    const { migration } = await create(spec(vmId));
    const id = migration!.id;
    await waitFor(
      'the source switched over by itself',
      () => pool.agents.outgoing.get(id)?.state === migrationV1.OutgoingState.OUTGOING_STATE_COMPLETED,
    );
    expect((await get(id)).pointOfNoReturnPassed).toBe(false);
    return { id, release };
  }

  it('arms the switch: the source switches over by itself, and the point of no return is recorded after it', async () => {
    freshVm(vmA);
    const { migration } = await create(spec(vmA));
    const done = await finished(migration!.id);
    expect(done.state).toBe(MigrationState.MIGRATION_STATE_SUCCEEDED);
    expect(done.pointOfNoReturnPassed).toBe(true);
    // No SwitchOver round trip: the source agent continued at pre-switchover as StartOutgoing armed it.
    expect(pool.agents.calls).not.toContain('h1:switchOver');
    const switchover = done.phases.find((p) => p.phase === 'MIGRATION_PHASE_SWITCHOVER');
    expect(switchover?.detail).toContain('the source agent switched over as armed');
    expect(pool.compute.vms.get(vmA)!.hostId).toBe(pool.host(2).id);
    expect(pool.agents.outgoing.has(migration!.id)).toBe(false);
  });

  /**
   * A migration of a fresh VM held where the source sends the device state (the guest paused), until
   * `release`; then it completes or fails as `outcome` says. Resolves once the service has seen DEVICE and
   * asked for the source's status again.
   */
  async function inDeviceStage(
    vmId: string,
    outcome: 'completed' | 'failed',
  ): Promise<{ id: string; release: () => void }> {
    freshVm(vmId);
    let release!: () => void;
    pool.agents.deviceStage = { release: new Promise<void>((r) => (release = r)), outcome };
    const { migration } = await create(spec(vmId));
    const id = migration!.id;
    const polls = () => pool.agents.calls.filter((c) => c === 'h1:getOutgoingStatus').length;
    const seen = await waitFor(
      'the source sending the device state',
      () =>
        pool.agents.outgoing.get(id)?.state === migrationV1.OutgoingState.OUTGOING_STATE_DEVICE && polls(),
    );
    await waitFor('the service asking again after DEVICE', () => polls() > seen + 1);
    return { id, release };
  }

  it("records the point of no return and compute's commit only once the source completed, not while the guest is paused", async () => {
    const { id, release } = await inDeviceStage(vmA, 'completed');
    expect((await get(id)).pointOfNoReturnPassed).toBe(false);
    expect(pool.compute.vms.get(vmA)!.hostId).toBe(pool.host(1).id);
    release();
    const done = await finished(id);
    expect(done.state).toBe(MigrationState.MIGRATION_STATE_SUCCEEDED);
    expect(done.pointOfNoReturnPassed).toBe(true);
    expect(pool.compute.vms.get(vmA)!.hostId).toBe(pool.host(2).id);
  });

  it('rolls back when the destination cannot load the device state: the source runs the VM again, nothing is lost', async () => {
    const { id, release } = await inDeviceStage(vmB, 'failed');
    release();
    const done = await finished(id);
    expect(done.state).toBe(MigrationState.MIGRATION_STATE_FAILED);
    expect(done.error?.message).toContain('load of migration failed');
    expect(done.pointOfNoReturnPassed).toBe(false);
    expect(phases(done)).toContain('ROLLBACK');
    expect(pool.agents.incoming.has(id)).toBe(false);
    const vm = pool.compute.vms.get(vmB)!;
    expect(vm.hostId).toBe(pool.host(1).id);
    expect(vm.powerState).toBe('RUNNING');
    expect(vm.currentOperationId).toBe('');
    expect(pool.compute.calls).not.toContain('EndVmMigration (lost)');
  });

  it('finishes a migration whose source switched over before a cancel reached it, without undoing the destination', async () => {
    const { id, release } = await switchedUnseen(vmB);
    const cancelling = (await client.call.cancelMigration({ id })).migration!;
    expect(cancelling.state).toBe(MigrationState.MIGRATION_STATE_CANCELLING);
    release();
    const done = await finished(id);
    expect(done.state).toBe(MigrationState.MIGRATION_STATE_SUCCEEDED);
    expect(done.pointOfNoReturnPassed).toBe(true);
    expect(phases(done)).not.toContain('ROLLBACK');
    expect(done.phases.map((p) => p.detail).join(' ')).toContain(
      'the source had switched over before the cancel reached it',
    );
    expect(pool.agents.calls).toContain('h1:cancelOutgoing');
    expect(pool.agents.calls).not.toContain('h2:abortIncoming');
    expect(pool.agents.incoming.get(id)?.state).toBe('FINISHED');
    expect(pool.compute.vms.get(vmB)!.hostId).toBe(pool.host(2).id);
    expect(pool.compute.vms.get(vmB)!.currentOperationId).toBe('');
  });

  it('asks the destination when the source host goes DOWN right after switching over, and finishes there', async () => {
    const { id, release } = await switchedUnseen(vmC);
    pool.agents.kill(pool.host(1).id);
    pool.host(1).state = 'DOWN';
    release();
    try {
      const done = await finished(id);
      expect(done.state).toBe(MigrationState.MIGRATION_STATE_SUCCEEDED);
      expect(phases(done)).not.toContain('ROLLBACK');
      expect(pool.agents.calls).not.toContain('h2:abortIncoming');
      expect(pool.agents.incoming.get(id)?.state).toBe('FINISHED');
      expect(pool.compute.vms.get(vmC)!.hostId).toBe(pool.host(2).id);
    } finally {
      pool.host(1).state = 'ENABLED';
      await pool.agents.start(pool.host(1).id);
    }
  });

  it('queues migrations beyond the per-host limit and runs them as slots free up', async () => {
    const ids = [vmA, vmB, vmC].map((v) => {
      freshVm(v, []);
      return v;
    });
    pool.agents.guest = { memoryMib: 512, convergeAfterRounds: 8, roundMs: 40 };
    const created = [];
    for (const v of ids)
      created.push((await create(spec(v, { destinationHostId: pool.host(3).id }))).migration!);
    expect(created.map((m) => m.state)).toContain(MigrationState.MIGRATION_STATE_QUEUED);
    const queued = created.find((m) => m.state === MigrationState.MIGRATION_STATE_QUEUED)!;
    expect(queued.stateReason).toMatch(/slot/);
    for (const m of created)
      expect((await finished(m.id)).state).toBe(MigrationState.MIGRATION_STATE_SUCCEEDED);
    const { migrations } = await client.call.listMigrations({
      page: { pageSize: 3, pageToken: '', filter: `destination_host_id=${pool.host(3).id},state=SUCCEEDED` },
    });
    expect(migrations.map((m) => m.id)).toEqual(created.map((m) => m.id).reverse());
  });

  it('streams the migration through its phases to Watch, only to its tenant', async () => {
    const watcher = (tenant: string) =>
      new GrpcClient<migrationV1.MigrationEventServiceClient>({
        address,
        service: 'flotilla.migration.v1.MigrationEventService',
        staticMetadata: { [md.serviceToken]: token, [md.tenantId]: tenant, [md.role]: 'read-only' },
      });
    const mine = watcher('tenant-a');
    const theirs = watcher('tenant-b');
    const a = new WatchRecorder(mine as never);
    const b = new WatchRecorder(theirs as never);
    try {
      await a.ready();
      await b.ready();
      freshVm(vmB);
      const { migration } = await create(spec(vmB));
      const id = migration!.id;
      const last = (await a.until(
        'the migration succeeded',
        (m) =>
          (m as migrationV1.WatchResponse).migration?.id === id &&
          (m as migrationV1.WatchResponse).migration?.state === MigrationState.MIGRATION_STATE_SUCCEEDED,
      )) as migrationV1.WatchResponse;
      const seen = a.events
        .map((m) => (m as migrationV1.WatchResponse).migration)
        .filter((m) => m?.id === id)
        .map((m) => m!.phase.replace('MIGRATION_PHASE_', ''));
      // Every phase change arrives, in order.
      expect([...new Set(seen)]).toEqual([
        'PREFLIGHT',
        'PREPARE',
        'TRANSFER',
        'SWITCHOVER',
        'CLEANUP',
        'DONE',
      ]);
      expect(last.migration?.phases[0].startedAt).toBeInstanceOf(Date);
      expect(
        a.events.some((m) => (m as migrationV1.WatchResponse).operation?.id === migration!.operationId),
      ).toBe(true);
      expect(b.events.filter((m) => (m as migrationV1.WatchResponse).migration?.id === id)).toEqual([]);
    } finally {
      a.close();
      b.close();
      mine.close();
      theirs.close();
    }
  });

  it('scopes migrations to the caller tenant', async () => {
    const other = new GrpcClient<migrationV1.MigrationServiceClient>({
      address,
      service: 'flotilla.migration.v1.MigrationService',
      staticMetadata: { [md.serviceToken]: token, [md.tenantId]: 'tenant-b', [md.role]: 'vm-power-admin' },
    });
    const reader = new GrpcClient<migrationV1.MigrationServiceClient>({
      address,
      service: 'flotilla.migration.v1.MigrationService',
      staticMetadata: { [md.serviceToken]: token, [md.tenantId]: 'tenant-a', [md.role]: 'read-only' },
    });
    try {
      const { migrations } = await client.call.listMigrations({
        page: { pageSize: 1, pageToken: '', filter: '' },
      });
      const id = migrations[0].id;
      expect((await rejection(other.call.getMigration({ id }))).code).toBe('NOT_FOUND');
      expect(
        (await other.call.listMigrations({ page: { pageSize: 10, pageToken: '', filter: '' } })).migrations,
      ).toEqual([]);
      expect((await rejection(other.call.preflightMigration({ spec: spec(vmA) }))).code).toBe('NOT_FOUND');
      expect((await reader.call.getMigration({ id })).migration?.id).toBe(id);
      expect(
        (
          await rejection(
            reader.call.createMigration({ requestId: '', spec: spec(vmA), name: '', labels: {} }),
          )
        ).code,
      ).toBe('PERMISSION_DENIED');
    } finally {
      other.close();
      reader.close();
    }
  });
});
