import { DynamicModule, Module } from '@nestjs/common';
import { Metadata } from '@grpc/grpc-js';
import { MigrationInterface, QueryRunner } from 'typeorm';
import { commonV1, migrationV1 } from '@flotilla/contracts';
import {
  createLogger,
  createOperationsTable,
  CreateOutbox1764000000000,
  Database,
  errorDetailsOf,
  freePort,
  GrpcClient,
  md,
  openDatabase,
  OPERATION_CANCEL_HOOK,
  OperationGrpc,
  OperationRow,
  OperationService,
  rejection,
  schemaOf,
  ServiceIdentity,
  startGrpcService,
  testDatabase,
  TransactionalStore,
  uniqueSchema,
  waitFor,
} from '@flotilla/platform';
import { emptyOptions } from '../migrations/migration.mapper';
import { FakeCompute, FakeHost, FakeMigrations } from './evacuation-fakes.testing';
import { evacuationContext, evacuationEntities, evacuationMigrations } from './evacuation.wiring';

// Real: the evacuation service over gRPC on loopback (Nest controller, identity and roles, error mapping),
// its database (PGlite, and PostgreSQL when TEST_DATABASE_URL is set) with the committed migration, the
// runner, and the compute client over gRPC. Fake: compute's side (an in-test gRPC server holding hosts
// and VMs in memory) and the migrations (FakeMigrations: each a small state machine; the real ones are
// exercised by the migration suites and the lead's end-to-end evacuation on sim/QEMU hosts).

const { EvacuationState: S, EvacuationVmOutcome: O, EvacuationBlockedPolicy: P } = migrationV1;
const serviceToken = 'evacuation-test-token';

class TestOperationsTable1764999999999 implements MigrationInterface {
  name = 'TestOperationsTable1764999999999';
  async up(q: QueryRunner): Promise<void> {
    await createOperationsTable(q, schemaOf(q));
  }
  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TABLE ${schemaOf(q)}.operations`);
  }
}

@Module({})
class EvacuationTestModule {
  static with(
    providers: Array<{ provide: unknown; useValue: unknown }>,
    controllers: DynamicModule['controllers'],
  ) {
    return {
      module: EvacuationTestModule,
      controllers: [OperationGrpc, ...(controllers ?? [])],
      providers: providers as Array<{ provide: string; useValue: unknown }>,
    };
  }
}

/** One migration service process as far as evacuations go; stop() cuts it as a crash would. */
async function startService(db: Database, migrations: FakeMigrations, computeAddress: string) {
  const logger = createLogger('evacuation-test', process.env.FLOTILLA_TEST_LOG_LEVEL || 'silent');
  const store = new TransactionalStore(db.dataSource);
  const operations = new OperationService(store);
  const ctx = evacuationContext({
    store,
    operations,
    migrations,
    logger,
    compute: { url: computeAddress, serviceToken },
    pollIntervalMs: 20,
  });
  const address = `127.0.0.1:${await freePort()}`;
  const app = await startGrpcService({
    module: EvacuationTestModule.with(
      [
        { provide: ServiceIdentity, useValue: new ServiceIdentity(serviceToken) },
        { provide: OperationService, useValue: operations },
        { provide: OPERATION_CANCEL_HOOK, useValue: ctx.onOperationCancelled },
        ...ctx.providers,
      ],
      ctx.controllers,
    ),
    address,
    areas: ['common', 'migration'],
    healthServices: [],
    logger,
  });
  await ctx.runner.resumeUnfinished();
  const client = <C>(service: string) =>
    new GrpcClient<C>({ address, service, staticMetadata: { [md.serviceToken]: serviceToken } });
  const evacuations = client<migrationV1.EvacuationServiceClient>('flotilla.migration.v1.EvacuationService');
  const ops = client<commonV1.OperationServiceClient>('flotilla.common.v1.OperationService');
  return {
    evacuations: evacuations.call,
    operations: ops.call,
    async stop() {
      evacuations.close();
      ops.close();
      await app.close();
      await ctx.stop();
    },
  };
}

const as = (role: string) => {
  const m = new Metadata();
  m.set(md.role, role);
  return { metadata: m };
};

const request = (
  hostId: string,
  o: Partial<migrationV1.EvacuateHostRequest> = {},
): migrationV1.EvacuateHostRequest => ({
  requestId: '',
  hostId,
  maxParallel: 0,
  onBlocked: P.EVACUATION_BLOCKED_POLICY_UNSPECIFIED,
  withStorage: false,
  enterMaintenance: false,
  migrationOptions: undefined,
  name: '',
  labels: {},
  ...o,
});

const localDisk = (vmId: string): migrationV1.Blocker => ({
  kind: migrationV1.BlockerKind.BLOCKER_KIND_LOCAL_STORAGE,
  message: 'disk d1 is on the FILE SR of the source and with_storage is not set',
  resource: { kind: 'vm', id: vmId, name: '' },
});

describe.each(testDatabase('PGlite'))('host evacuation on %s', (_db, url) => {
  let db: Database;
  let compute: FakeCompute;
  let computeAddress: string;
  let migrations: FakeMigrations;
  let service: Awaited<ReturnType<typeof startService>>;
  let source: FakeHost;
  let other: FakeHost;

  beforeAll(async () => {
    db = await openDatabase({
      url,
      dataDir: '',
      schema: uniqueSchema('evacuations'),
      entities: [...evacuationEntities, OperationRow],
      migrations: [CreateOutbox1764000000000, TestOperationsTable1764999999999, ...evacuationMigrations],
      logger: createLogger('evacuation-test', 'silent'),
    });
    compute = new FakeCompute();
    computeAddress = `127.0.0.1:${await freePort()}`;
    await compute.start(computeAddress);
  });

  afterAll(async () => {
    compute.stop();
    await db.close();
  });

  beforeEach(async () => {
    compute.hosts.clear();
    compute.vms.clear();
    migrations = new FakeMigrations(compute);
    source = compute.addHost('h1');
    other = compute.addHost('h2', { memoryMib: 16384, cpus: 32 });
    service = await startService(db, migrations, computeAddress);
  });

  afterEach(() => service.stop());

  const evacuate = async (o: Partial<migrationV1.EvacuateHostRequest> = {}) => {
    const { evacuation, operation } = await service.evacuations.evacuateHost(
      request(source.id, o),
      as('pool-operator'),
    );
    return { evacuation: evacuation!, operation: operation! };
  };
  const get = async (id: string) =>
    (await service.evacuations.getEvacuation({ id }, as('pool-operator'))).evacuation!;
  const finished = (id: string) =>
    waitFor(`evacuation ${id} finished`, async () => {
      const e = await get(id);
      return e.state !== S.EVACUATION_STATE_RUNNING && e.state !== S.EVACUATION_STATE_CANCELLING && e;
    });
  const outcomes = (e: migrationV1.Evacuation) => Object.fromEntries(e.vms.map((v) => [v.vmId, v.outcome]));

  it('moves every VM to another host, says where each went, and ends SUCCEEDED with the host disabled', async () => {
    const vms = [
      compute.addVm(source, 'a'),
      compute.addVm(source, 'b'),
      compute.addVm(source, 'c', { powerState: 'PAUSED' }),
    ];
    const { evacuation, operation } = await evacuate();
    expect(evacuation.maxParallel).toBe(2);
    expect(operation.kind).toBe('host.evacuate');
    expect(operation.target?.id).toBe(source.id);
    const done = await finished(evacuation.id);
    expect(done.state).toBe(S.EVACUATION_STATE_SUCCEEDED);
    expect(done.progress).toBe(1);
    for (const vm of vms) {
      const result = done.vms.find((v) => v.vmId === vm.id);
      expect(result).toMatchObject({
        outcome: O.EVACUATION_VM_OUTCOME_MIGRATED,
        destinationHostId: other.id,
      });
      expect(result?.migrationId).toBe(migrations.migrationOf(vm.id)?.id);
      expect(migrations.migrationOf(vm.id)?.evacuationId).toBe(evacuation.id);
    }
    expect(compute.residents(source.id)).toEqual([]);
    expect(compute.hosts.get(source.id)?.state).toBe('DISABLED');
    const { operation: op } = await service.operations.getOperation({ id: operation.id });
    expect(op?.state).toBe(commonV1.OperationState.OPERATION_STATE_SUCCEEDED);
  });

  it('never runs more than max_parallel migrations at once', async () => {
    for (let i = 0; i < 7; i++) compute.addVm(source, `vm${i}`, { memoryMib: 256 });
    const { evacuation } = await evacuate({ maxParallel: 3 });
    const done = await finished(evacuation.id);
    expect(done.state).toBe(S.EVACUATION_STATE_SUCCEEDED);
    expect(migrations.migrations.size).toBe(7);
    expect(migrations.peakRunning).toBe(3);
  });

  it('puts the host in MAINTENANCE when it is empty and enter_maintenance is set', async () => {
    compute.addVm(source, 'a');
    const { evacuation } = await evacuate({ enterMaintenance: true });
    expect((await finished(evacuation.id)).state).toBe(S.EVACUATION_STATE_SUCCEEDED);
    expect(compute.hosts.get(source.id)?.state).toBe('MAINTENANCE');
  });

  it('evacuates a host without VMs at once', async () => {
    const { evacuation } = await evacuate({ enterMaintenance: true });
    const done = await finished(evacuation.id);
    expect(done).toMatchObject({ state: S.EVACUATION_STATE_SUCCEEDED, vms: [], progress: 1 });
    expect(compute.hosts.get(source.id)?.state).toBe('MAINTENANCE');
  });

  it('refuses under on_blocked FAIL with one ErrorDetail per blocked VM and enables the host again', async () => {
    const blocked = compute.addVm(source, 'local');
    compute.addVm(source, 'fine');
    migrations.blockers.set(blocked.id, [localDisk(blocked.id)]);
    let failure: unknown;
    const refused = await rejection(
      service.evacuations.evacuateHost(request(source.id), as('pool-operator')).catch((e: unknown) => {
        failure = e;
        throw e;
      }),
    );
    expect(refused.code).toBe('FAILED_PRECONDITION');
    expect(refused.message).toContain('local');
    expect(errorDetailsOf(failure)).toEqual([
      expect.objectContaining({
        reason: 'BLOCKER_KIND_LOCAL_STORAGE',
        metadata: expect.objectContaining({ vm_id: blocked.id }),
      }),
    ]);
    expect(compute.hosts.get(source.id)?.state).toBe('ENABLED');
    expect(migrations.migrations.size).toBe(0);
    const { evacuations } = await service.evacuations.listEvacuations(
      { page: { pageSize: 10, pageToken: '', filter: `host_id=${source.id}` } },
      as('pool-operator'),
    );
    expect(evacuations).toEqual([]);
  });

  it('leaves a host that was already disabled disabled when it refuses', async () => {
    source.state = 'DISABLED';
    const blocked = compute.addVm(source, 'local');
    migrations.blockers.set(blocked.id, [localDisk(blocked.id)]);
    expect(
      (await rejection(service.evacuations.evacuateHost(request(source.id), as('pool-operator')))).code,
    ).toBe('FAILED_PRECONDITION');
    expect(compute.hosts.get(source.id)?.state).toBe('DISABLED');
  });

  it('answers two concurrent asks for one host with one evacuation', async () => {
    compute.addVm(source, 'a');
    migrations.hold = true;
    const [one, two] = await Promise.all([evacuate(), evacuate()]);
    expect(two.evacuation.id).toBe(one.evacuation.id);
    expect(two.operation.id).toBe(one.operation.id);
    migrations.hold = false;
    expect((await finished(one.evacuation.id)).state).toBe(S.EVACUATION_STATE_SUCCEEDED);
    expect(migrations.migrations.size).toBe(1);
  });

  it('refuses RESOURCE_EXHAUSTED under FAIL when the other hosts cannot hold the VMs together', async () => {
    other.memoryMib = 1024;
    const vms = [
      compute.addVm(source, 'a', { memoryMib: 768 }),
      compute.addVm(source, 'b', { memoryMib: 768 }),
    ];
    let failure: unknown;
    const refused = await rejection(
      service.evacuations.evacuateHost(request(source.id), as('pool-operator')).catch((e: unknown) => {
        failure = e;
        throw e;
      }),
    );
    expect(refused.code).toBe('RESOURCE_EXHAUSTED');
    // Each fits alone; one of the two does not fit once the other is placed.
    expect(errorDetailsOf(failure)).toEqual([
      expect.objectContaining({
        reason: 'BLOCKER_KIND_INSUFFICIENT_MEMORY',
        metadata: expect.objectContaining({
          vm_id: expect.stringMatching(new RegExp(`${vms[0].id}|${vms[1].id}`)),
        }),
      }),
    ]);
    expect(compute.hosts.get(source.id)?.state).toBe('ENABLED');
  });

  it('leaves blocked VMs on the host under on_blocked SKIP, moves the rest and ends PARTIAL', async () => {
    const blocked = compute.addVm(source, 'local');
    const fine = compute.addVm(source, 'fine');
    migrations.blockers.set(blocked.id, [localDisk(blocked.id)]);
    const { evacuation } = await evacuate({
      onBlocked: P.EVACUATION_BLOCKED_POLICY_SKIP,
      enterMaintenance: true,
    });
    const done = await finished(evacuation.id);
    expect(done.state).toBe(S.EVACUATION_STATE_PARTIAL);
    expect(outcomes(done)).toEqual({
      [blocked.id]: O.EVACUATION_VM_OUTCOME_SKIPPED,
      [fine.id]: O.EVACUATION_VM_OUTCOME_MIGRATED,
    });
    expect(done.vms.find((v) => v.vmId === blocked.id)?.blockers).toEqual([localDisk(blocked.id)]);
    expect(compute.residents(source.id).map((v) => v.id)).toEqual([blocked.id]);
    // Not empty: no maintenance.
    expect(compute.hosts.get(source.id)?.state).toBe('DISABLED');
  });

  it('shuts blocked VMs down under on_blocked SHUTDOWN with the options timeout, and ends SUCCEEDED', async () => {
    const blocked = compute.addVm(source, 'local');
    const fine = compute.addVm(source, 'fine');
    migrations.blockers.set(blocked.id, [localDisk(blocked.id)]);
    const { evacuation } = await evacuate({
      onBlocked: P.EVACUATION_BLOCKED_POLICY_SHUTDOWN,
      enterMaintenance: true,
      migrationOptions: { ...emptyOptions(), shutdownTimeoutMs: 5000 },
    });
    const done = await finished(evacuation.id);
    expect(done.state).toBe(S.EVACUATION_STATE_SUCCEEDED);
    expect(outcomes(done)).toEqual({
      [blocked.id]: O.EVACUATION_VM_OUTCOME_SHUT_DOWN,
      [fine.id]: O.EVACUATION_VM_OUTCOME_MIGRATED,
    });
    expect(compute.shutdowns.map((s) => [s.vmId, s.timeoutMs])).toEqual([[blocked.id, 5000]]);
    expect(compute.hosts.get(source.id)?.state).toBe('MAINTENANCE');
  });

  it('records a migration that failed and rolled back as FAILED with its error, and ends PARTIAL', async () => {
    const bad = compute.addVm(source, 'bad');
    const good = compute.addVm(source, 'good');
    migrations.failing.add(bad.id);
    const { evacuation } = await evacuate();
    const done = await finished(evacuation.id);
    expect(done.state).toBe(S.EVACUATION_STATE_PARTIAL);
    expect(outcomes(done)).toEqual({
      [bad.id]: O.EVACUATION_VM_OUTCOME_FAILED,
      [good.id]: O.EVACUATION_VM_OUTCOME_MIGRATED,
    });
    expect(done.vms.find((v) => v.vmId === bad.id)?.error?.message).toContain('rolled back');
  });

  it('ends FAILED when the scheduler finds no room left, leaving the VMs not started where they are', async () => {
    const vms = [compute.addVm(source, 'a'), compute.addVm(source, 'b'), compute.addVm(source, 'c')];
    migrations.noRoom.add(vms[0].id);
    const { evacuation } = await evacuate({ maxParallel: 1 });
    const done = await finished(evacuation.id);
    expect(done.state).toBe(S.EVACUATION_STATE_FAILED);
    expect(done.error?.code).toBe(8); // RESOURCE_EXHAUSTED
    expect(outcomes(done)).toEqual({
      [vms[0].id]: O.EVACUATION_VM_OUTCOME_FAILED,
      [vms[1].id]: O.EVACUATION_VM_OUTCOME_SKIPPED,
      [vms[2].id]: O.EVACUATION_VM_OUTCOME_SKIPPED,
    });
    expect(migrations.migrations.size).toBe(0);
  });

  it('starts a migration again when its destination filled up before it held room there', async () => {
    const [a, b] = [compute.addVm(source, 'a'), compute.addVm(source, 'b')];
    migrations.destinationFull.set(a.id, 2);
    const { evacuation } = await evacuate({ maxParallel: 1 });
    const done = await finished(evacuation.id);
    expect(done.state).toBe(S.EVACUATION_STATE_SUCCEEDED);
    expect(outcomes(done)).toEqual({
      [a.id]: O.EVACUATION_VM_OUTCOME_MIGRATED,
      [b.id]: O.EVACUATION_VM_OUTCOME_MIGRATED,
    });
    expect(migrations.migrations.size).toBe(4);
  });

  it('ends FAILED when a VM finds its destination full at every restart', async () => {
    const [a, b] = [compute.addVm(source, 'a'), compute.addVm(source, 'b')];
    migrations.destinationFull.set(a.id, 100);
    const { evacuation } = await evacuate({ maxParallel: 1 });
    const done = await finished(evacuation.id);
    expect(done.state).toBe(S.EVACUATION_STATE_FAILED);
    expect(done.error?.code).toBe(8); // RESOURCE_EXHAUSTED
    expect(outcomes(done)).toEqual({
      [a.id]: O.EVACUATION_VM_OUTCOME_FAILED,
      [b.id]: O.EVACUATION_VM_OUTCOME_SKIPPED,
    });
    expect(migrations.migrations.size).toBe(4);
  });

  it('ends FAILED when the host goes DOWN, starting nothing more', async () => {
    const vms = [compute.addVm(source, 'a'), compute.addVm(source, 'b')];
    migrations.hold = true;
    const { evacuation } = await evacuate({ maxParallel: 1 });
    await waitFor('the first migration', () => migrations.migrations.size === 1);
    source.state = 'DOWN';
    await waitFor('the evacuation to stop for the host', async () => (await get(evacuation.id)).error);
    migrations.hold = false;
    const done = await finished(evacuation.id);
    expect(done.state).toBe(S.EVACUATION_STATE_FAILED);
    expect(done.stateReason).toContain('DOWN');
    expect(outcomes(done)[vms[1].id]).toBe(O.EVACUATION_VM_OUTCOME_SKIPPED);
    expect(migrations.migrations.size).toBe(1);
  });

  it('cancels: running migrations roll back, none starts, the host stays disabled, CANCELLED', async () => {
    const vms = [compute.addVm(source, 'a'), compute.addVm(source, 'b'), compute.addVm(source, 'c')];
    migrations.hold = true;
    const { evacuation, operation } = await evacuate({ maxParallel: 1 });
    await waitFor('the first migration', () => migrations.migrations.size === 1);
    const { evacuation: cancelling } = await service.evacuations.cancelEvacuation(
      { id: evacuation.id },
      as('pool-operator'),
    );
    expect([S.EVACUATION_STATE_CANCELLING, S.EVACUATION_STATE_CANCELLED]).toContain(cancelling?.state);
    const done = await finished(evacuation.id);
    expect(done.state).toBe(S.EVACUATION_STATE_CANCELLED);
    expect(migrations.migrationOf(vms[0].id)?.state).toBe(
      migrationV1.MigrationState.MIGRATION_STATE_CANCELLED,
    );
    expect(Object.values(outcomes(done))).toEqual([
      O.EVACUATION_VM_OUTCOME_SKIPPED,
      O.EVACUATION_VM_OUTCOME_SKIPPED,
      O.EVACUATION_VM_OUTCOME_SKIPPED,
    ]);
    expect(migrations.migrations.size).toBe(1);
    expect(compute.hosts.get(source.id)?.state).toBe('DISABLED');
    const { operation: op } = await service.operations.getOperation({ id: operation.id });
    expect(op?.state).toBe(commonV1.OperationState.OPERATION_STATE_CANCELLED);
    expect(
      (await rejection(service.evacuations.cancelEvacuation({ id: evacuation.id }, as('pool-operator'))))
        .code,
    ).toBe('FAILED_PRECONDITION');
  });

  it('lets a migration past its point of no return finish when cancelled', async () => {
    const [a, b] = [compute.addVm(source, 'a'), compute.addVm(source, 'b')];
    migrations.committed.add(a.id);
    migrations.hold = true;
    const { evacuation } = await evacuate({ maxParallel: 2 });
    await waitFor('both migrations', () => migrations.migrations.size === 2);
    await service.evacuations.cancelEvacuation({ id: evacuation.id }, as('pool-operator'));
    await waitFor(
      'b rolled back',
      () => migrations.migrationOf(b.id)?.state === migrationV1.MigrationState.MIGRATION_STATE_CANCELLED,
    );
    migrations.hold = false;
    const done = await finished(evacuation.id);
    expect(done.state).toBe(S.EVACUATION_STATE_CANCELLED);
    expect(outcomes(done)).toEqual({
      [a.id]: O.EVACUATION_VM_OUTCOME_MIGRATED,
      [b.id]: O.EVACUATION_VM_OUTCOME_SKIPPED,
    });
  });

  it('is cancelled by CancelOperation on its operation as well', async () => {
    compute.addVm(source, 'a');
    migrations.hold = true;
    const { evacuation, operation } = await evacuate();
    await waitFor('the migration', () => migrations.migrations.size === 1);
    await service.operations.cancelOperation({ id: operation.id }, as('pool-operator'));
    expect((await finished(evacuation.id)).state).toBe(S.EVACUATION_STATE_CANCELLED);
  });

  it('resumes after a restart, following the migrations already started and starting no VM twice', async () => {
    const vms = [0, 1, 2, 3].map((i) => compute.addVm(source, `vm${i}`));
    migrations.hold = true;
    const { evacuation } = await evacuate({ maxParallel: 2, enterMaintenance: true });
    await waitFor('two migrations', () => migrations.migrations.size === 2);
    await service.stop();
    migrations.hold = false;
    service = await startService(db, migrations, computeAddress);
    const done = await finished(evacuation.id);
    expect(done.state).toBe(S.EVACUATION_STATE_SUCCEEDED);
    expect(migrations.migrations.size).toBe(4);
    expect(done.vms.map((v) => v.migrationId).sort()).toEqual(
      vms.map((v) => migrations.migrationOf(v.id)?.id).sort(),
    );
    expect(compute.hosts.get(source.id)?.state).toBe('MAINTENANCE');
  });

  it('follows the migration whose start answer was lost instead of starting another', async () => {
    const vm = compute.addVm(source, 'a');
    migrations.loseFirstAnswer.add(vm.id);
    const { evacuation } = await evacuate();
    const done = await finished(evacuation.id);
    expect(done.state).toBe(S.EVACUATION_STATE_SUCCEEDED);
    expect(migrations.migrations.size).toBe(1);
    expect(done.vms[0].migrationId).toBe(migrations.migrationOf(vm.id)?.id);
  });

  it('returns the running evacuation when the host is asked again, and the first one for a repeated request_id', async () => {
    compute.addVm(source, 'a');
    migrations.hold = true;
    const first = await evacuate({ requestId: 'r-1' });
    const again = await evacuate({ maxParallel: 5 });
    expect(again.evacuation.id).toBe(first.evacuation.id);
    const repeated = await evacuate({ requestId: 'r-1' });
    expect(repeated.evacuation.id).toBe(first.evacuation.id);
    expect(repeated.operation.id).toBe(first.operation.id);
    migrations.hold = false;
    await finished(first.evacuation.id);
  });

  it('lists newest first, filtered by host_id, state and label', async () => {
    const a = (await evacuate({ labels: { batch: 'one' } })).evacuation;
    await finished(a.id);
    const b = (await evacuate({ labels: { batch: 'two' } })).evacuation;
    await finished(b.id);
    const list = (filter: string) =>
      service.evacuations
        .listEvacuations({ page: { pageSize: 10, pageToken: '', filter } }, as('pool-operator'))
        .then((r) => r.evacuations.map((e) => e.id));
    expect(await list(`host_id=${source.id}`)).toEqual([b.id, a.id]);
    expect(await list(`host_id=${source.id},label.batch=one`)).toEqual([a.id]);
    expect(await list(`host_id=${source.id},state=EVACUATION_STATE_SUCCEEDED`)).toEqual([b.id, a.id]);
    expect(await list(`host_id=${other.id}`)).toEqual([]);
    const page = await service.evacuations.listEvacuations(
      { page: { pageSize: 1, pageToken: '', filter: `host_id=${source.id}` } },
      as('pool-operator'),
    );
    expect(page.nextPageToken).not.toBe('');
  });

  it('refuses bad input naming the field, an unknown host, a DOWN host, and roles below pool-operator', async () => {
    const bad = await rejection(
      service.evacuations.evacuateHost(request(source.id, { maxParallel: 17 }), as('pool-operator')),
    );
    expect(bad).toMatchObject({ code: 'INVALID_ARGUMENT', field: 'max_parallel' });
    expect(
      await rejection(service.evacuations.evacuateHost(request('no-such-host'), as('pool-operator'))),
    ).toMatchObject({
      code: 'NOT_FOUND',
      field: 'host_id',
    });
    source.state = 'DOWN';
    expect(
      (await rejection(service.evacuations.evacuateHost(request(source.id), as('pool-operator')))).code,
    ).toBe('FAILED_PRECONDITION');
    for (const role of ['vm-power-admin', 'read-only'])
      expect((await rejection(service.evacuations.evacuateHost(request(other.id), as(role)))).code).toBe(
        'PERMISSION_DENIED',
      );
    expect(
      (await rejection(service.evacuations.getEvacuation({ id: other.id }, as('pool-operator')))).code,
    ).toBe('NOT_FOUND');
    expect(compute.hosts.get(other.id)?.state).toBe('ENABLED');
  });
});
