import { randomUUID } from 'node:crypto';
import { status } from '@grpc/grpc-js';
import { commonV1, computeV1, gatewayV1 } from '@flotilla/contracts';
import {
  errorDetailsOf,
  GrpcClient,
  LocalCloud,
  md,
  operationDone,
  startLocalCloud,
  TestTenant,
  testDatabase,
  uniqueSchema,
  vmRequest,
  waitFor,
} from '@flotilla/platform';

// Real: gateway, compute (VmMigrationService over real gRPC with the service identity, the scheduler over
// the database), storage, three sim host agents, the database (PGlite and PostgreSQL). Fake: the
// hypervisor (sim driver: 2 CPUs, 2048 MiB per host, 8 vCPUs at the default 4:1) and the migration
// service, whose calls the test makes itself; where a test needs a host's report at a given moment it
// sends the heartbeat in the host's name, and the agents' own heartbeats are made rare.

const { PowerState: P, HostState: H } = computeV1;

interface Refusal {
  code: number;
  message: string;
  details: commonV1.ErrorDetail[];
}

async function refused(call: Promise<unknown>): Promise<Refusal> {
  try {
    await call;
  } catch (e) {
    const err = e as { code: number; details: string };
    return { code: err.code, message: err.details, details: errorDetailsOf(e) };
  }
  throw new Error('the call was expected to be refused');
}

describe.each(testDatabase('PostgreSQL'))('VmMigrationService on %s', (_db, url) => {
  let cloud: LocalCloud;
  let tenant: TestTenant;
  let migrations: GrpcClient<computeV1.VmMigrationServiceClient>;
  let registry: GrpcClient<computeV1.HostRegistryServiceClient>;
  const hosts: Record<'a' | 'b' | 'c', computeV1.Host> = {} as never;
  let n = 0;

  beforeAll(async () => {
    cloud = await startLocalCloud({
      databaseUrl: url,
      schemaPrefix: uniqueSchema('vmmig'),
      agents: [
        { name: 'mig-a', cpus: 2, memoryMib: 2048, labels: { zone: 'a' } },
        { name: 'mig-b', cpus: 2, memoryMib: 2048, labels: { zone: 'b' } },
        { name: 'mig-c', cpus: 2, memoryMib: 2048, labels: { zone: 'c' } },
      ],
      computeEnv: { FLOTILLA_HEARTBEAT_INTERVAL_MS: '60000', FLOTILLA_HOST_DOWN_AFTER_MS: '600000' },
    });
    tenant = await cloud.tenant('migrating', gatewayV1.Role.ROLE_VM_POWER_ADMIN);
    for (const h of await cloud.hostsReady(3)) hosts[h.name.slice(-1) as 'a' | 'b' | 'c'] = h;
    const service = (name: string) =>
      new GrpcClient<never>({
        address: cloud.compute.address,
        service: name,
        staticMetadata: { [md.serviceToken]: cloud.serviceToken },
      });
    migrations = service('flotilla.compute.v1.VmMigrationService');
    registry = service('flotilla.compute.v1.HostRegistryService');
  });
  // Each test starts from empty hosts: its VMs go with it (every test ends the migrations it began).
  afterEach(async () => {
    const { vms } = await tenant.clients.vms.call.listVms({
      page: { pageSize: 1000, pageToken: '', filter: '' },
    });
    for (const vm of vms) {
      const { operation } = await tenant.clients.vms.call.destroyVm({ id: vm.id, requestId: '' });
      await operationDone(tenant.clients.operations, operation!.id);
    }
  });
  afterAll(async () => {
    migrations?.close();
    registry?.close();
    await cloud?.stop();
  });

  /** A VM of the tenant started on the host named, by an operator's pinned start. */
  const startedOn = async (host: 'a' | 'b' | 'c', over: Partial<computeV1.CreateVmRequest> = {}) => {
    const { vm } = await tenant.clients.vms.call.createVm(
      vmRequest({ name: `m-${++n}`, vcpus: 1, memoryMib: 256, start: false, ...over }),
    );
    const { operation } = await cloud.admin.vms.call.startVm({
      id: vm!.id,
      requestId: '',
      hostId: hosts[host].id,
    });
    expect((await operationDone(tenant.clients.operations, operation!.id)).state).toBe(
      commonV1.OperationState.OPERATION_STATE_SUCCEEDED,
    );
    return getVm(vm!.id);
  };
  const getVm = async (id: string) => (await tenant.clients.vms.call.getVm({ id })).vm!;
  const host = async (h: 'a' | 'b' | 'c') =>
    (await cloud.admin.hosts.call.getHost({ id: hosts[h].id })).host!;
  const check = (vmId: string, over: Partial<computeV1.CheckVmMigrationRequest> = {}) =>
    migrations.call.checkVmMigration({
      vmId,
      tenantId: '',
      destinationHostId: '',
      excludeHostIds: [],
      migrationId: '',
      ...over,
    });
  const begin = (vmId: string, to: 'a' | 'b' | 'c', migrationId = randomUUID(), operationId = randomUUID()) =>
    migrations.call.beginVmMigration({
      vmId,
      tenantId: '',
      migrationId,
      operationId,
      destinationHostId: hosts[to].id,
    });
  const end = (vmId: string, migrationId: string, lostReason = '') =>
    migrations.call.endVmMigration({ vmId, migrationId, lostReason });
  const report = (
    h: 'a' | 'b' | 'c',
    vms: Array<[string, computeV1.PowerState]>,
    hypervisor: Pick<computeV1.HeartbeatRequest, 'accelerator' | 'cpuModel' | 'cpuFlags'> = {
      accelerator: '',
      cpuModel: '',
      cpuFlags: [],
    },
  ) =>
    registry.call.heartbeat({
      hostId: hosts[h].id,
      epoch: hosts[h].epoch,
      ...hypervisor,
      vms: vms.map(([vmId, powerState]) => ({ vmId, powerState, reason: '', nics: [] })),
    });
  const setState = async (h: 'a' | 'b' | 'c', state: 'ENABLED' | 'MAINTENANCE' | 'DISABLED', reason = '') => {
    const answer =
      state === 'ENABLED'
        ? await cloud.admin.hosts.call.enableHost({ id: hosts[h].id })
        : await cloud.admin.hosts.call.disableHost({
            id: hosts[h].id,
            maintenance: state === 'MAINTENANCE',
            reason,
          });
    return answer.host!;
  };

  it('refuses callers without the service identity', async () => {
    const anonymous = new GrpcClient<computeV1.VmMigrationServiceClient>({
      address: cloud.compute.address,
      service: 'flotilla.compute.v1.VmMigrationService',
    });
    try {
      expect((await refused(check(randomUUID()))).code).toBe(status.NOT_FOUND);
      expect(
        (
          await refused(
            anonymous.call.checkVmMigration({
              vmId: randomUUID(),
              tenantId: '',
              destinationHostId: '',
              excludeHostIds: [],
              migrationId: '',
            }),
          )
        ).code,
      ).toBe(status.UNAUTHENTICATED);
    } finally {
      anonymous.close();
    }
  });

  it("names the scheduler's pick, never the source nor an excluded host, and says why when none fits", async () => {
    const vm = await startedOn('a');
    const picked = await check(vm.id, { excludeHostIds: [hosts.b.id] });
    expect(picked).toMatchObject({
      vm: { id: vm.id, powerState: P.POWER_STATE_RUNNING, hostId: hosts.a.id },
      source: { id: hosts.a.id, name: 'mig-a', address: hosts.a.address, epoch: hosts.a.epoch },
      destination: { id: hosts.c.id, state: H.HOST_STATE_ENABLED },
      blockers: [],
    });

    const none = await check(vm.id, { excludeHostIds: [hosts.b.id, hosts.c.id] });
    expect(none.destination).toBeFalsy();
    expect(none.blockers).toEqual([
      {
        reason: 'NO_DESTINATION',
        field: '',
        description: expect.stringMatching(
          /no host can run 1 vCPU \/ 256 MiB: 3 hosts rejected by excluded-host/,
        ),
        metadata: { resource_kind: 'vm', resource_id: vm.id },
      },
    ]);
  });

  it('lists every blocker of a destination at once: host state, memory, vCPUs and placement constraints', async () => {
    await startedOn('b', { vcpus: 2, memoryMib: 1024, antiAffinityGroup: 'db' });
    const vm = await startedOn('a', {
      vcpus: 7,
      memoryMib: 1536,
      antiAffinityGroup: 'db',
      requiredHostLabels: { zone: 'a' },
    });
    await setState('b', 'MAINTENANCE', 'disk swap');
    try {
      const { blockers, destination } = await check(vm.id, { destinationHostId: hosts.b.id });
      expect(destination?.id).toBe(hosts.b.id);
      expect(blockers.map((b) => b.reason)).toEqual([
        'DESTINATION_HOST_STATE',
        'INSUFFICIENT_MEMORY',
        'INSUFFICIENT_CPU',
        'PLACEMENT_CONSTRAINT',
        'PLACEMENT_CONSTRAINT',
      ]);
      expect(blockers[0].description).toBe(
        'host mig-b is MAINTENANCE (disk swap): the scheduler keeps VMs away from it; choose an ENABLED host, or enable it (flotilla host enable mig-b)',
      );
      expect(blockers[1].description).toMatch(
        /^host mig-b has 1024 MiB of memory free .* vm m-\d+ needs 1536 MiB/,
      );
      for (const b of blockers)
        expect(b.metadata).toEqual({ resource_kind: 'host', resource_id: hosts.b.id });

      expect((await check(vm.id, { destinationHostId: 'mig-a' })).blockers.map((b) => b.reason)).toEqual([
        'SAME_HOST',
      ]);
    } finally {
      await setState('b', 'ENABLED');
    }
  });

  it('blocks a SUSPENDED VM and a destination of another driver or accelerator', async () => {
    const vm = await startedOn('a');
    const { operation } = await tenant.clients.vms.call.suspendVm({ id: vm.id, requestId: '' });
    await operationDone(tenant.clients.operations, operation!.id);
    // Hosts registered in the name of agents that never run anything, kept out of the scheduler's way.
    const other = async (name: string, driver: string, accelerator: string) => {
      const { hostId } = await registry.call.registerHost({
        name,
        address: '127.0.0.1:1',
        driver,
        accelerator,
        cpuModel: accelerator.startsWith('kvm') ? 'host: Test CPU' : 'qemu64',
        cpuFlags: [],
        cpus: 2,
        memoryMib: 2048,
        labels: {},
        vms: [],
      });
      await cloud.admin.hosts.call.disableHost({ id: hostId, maintenance: false, reason: '' });
      return hostId;
    };
    const qemuHost = await other('mig-qemu', 'qemu', 'tcg (no /dev/kvm)');
    const a = await host('a');
    const kvmHost = await other('mig-kvm', a.driver, 'kvm (probe passed)');
    const reasons = async (destinationHostId: string) =>
      (await check(vm.id, { destinationHostId })).blockers.map((b) => b.reason);
    expect(await reasons(qemuHost)).toEqual(['VM_POWER_STATE', 'DESTINATION_HOST_STATE', 'DRIVER_MISMATCH']);
    expect(await reasons(kvmHost)).toEqual([
      'VM_POWER_STATE',
      'DESTINATION_HOST_STATE',
      'ACCELERATOR_MISMATCH',
    ]);
  });

  it("blocks a running VM from a host whose CPU lacks flags its guest sees, with the destination's other blockers, and the pick skips such hosts", async () => {
    // The sim agents report the sim driver's CPU; here they report as KVM hosts would, in their names.
    expect(hosts.a).toMatchObject({ cpuModel: 'sim', cpuFlags: [] });
    const onB = await startedOn('b', { memoryMib: 1024 });
    const vm = await startedOn('a', { memoryMib: 1536 });
    const newer = ['fpu', 'sse4_2', 'avx', 'avx2', 'bmi2', 'adx', 'sha_ni', 'avx512f', 'avx512dq'];
    const newerStill = [...newer, 'avx512bw', 'avx512vl', 'avx512_vnni', 'vaes', 'gfni'];
    const kvm = (model: string, cpuFlags: string[]) => ({
      accelerator: 'kvm (probe passed)',
      cpuModel: `host: ${model}`,
      cpuFlags,
    });
    const running = (id: string): Array<[string, computeV1.PowerState]> => [[id, P.POWER_STATE_RUNNING]];
    await report('a', running(vm.id), kvm('Intel Xeon Platinum 8380', newerStill));
    await report('b', running(onB.id), kvm('Intel Xeon E5-2690', ['fpu', 'sse4_2', 'avx']));
    await report('c', [], kvm('Intel Xeon Platinum 8480', [...newerStill, 'amx_tile']));
    await setState('b', 'MAINTENANCE', 'disk swap');
    try {
      expect(await host('b')).toMatchObject({
        accelerator: 'kvm (probe passed)',
        cpuModel: 'host: Intel Xeon E5-2690',
        cpuFlags: ['fpu', 'sse4_2', 'avx'],
      });

      const { blockers } = await check(vm.id, { destinationHostId: hosts.b.id });
      expect(blockers.map((b) => b.reason)).toEqual([
        'DESTINATION_HOST_STATE',
        'INSUFFICIENT_MEMORY',
        'CPU_INCOMPATIBLE',
      ]);
      expect(blockers[2]).toEqual({
        reason: 'CPU_INCOMPATIBLE',
        field: 'destination_host_id',
        description: `host mig-b (host: Intel Xeon E5-2690) lacks 11 CPU flags that vm ${vm.name} sees on host mig-a (host: Intel Xeon Platinum 8380): avx2, bmi2, adx, sha_ni, avx512f, avx512dq, avx512bw, avx512vl, avx512_vnni, vaes (first 10 of 11); a running guest may use any of them. Choose a host of the same CPU family, or restart the VM on host mig-b (shut it down, then start it there: it boots with that host's CPU)`,
        metadata: { resource_kind: 'host', resource_id: hosts.b.id },
      });
      const refusal = await refused(begin(vm.id, 'b'));
      expect(refusal.code).toBe(status.FAILED_PRECONDITION);
      expect(refusal.details.map((d) => d.reason)).toContain('CPU_INCOMPATIBLE');

      // With room on mig-b again, the scheduler still passes it over for the newer CPU of the family
      // (every flag and more), and finds nothing once that is excluded.
      await setState('b', 'ENABLED');
      const { operation } = await tenant.clients.vms.call.destroyVm({ id: onB.id, requestId: '' });
      await operationDone(tenant.clients.operations, operation!.id);
      expect(await check(vm.id)).toMatchObject({ destination: { id: hosts.c.id }, blockers: [] });
      const none = await check(vm.id, { excludeHostIds: [hosts.c.id] });
      expect(none.destination).toBeFalsy();
      expect(none.blockers.map((b) => b.reason)).toEqual(['NO_DESTINATION']);
      expect(none.blockers[0].description).toMatch(
        new RegExp(`of the excluded hosts, .*lack the CPU model or flags vm ${vm.name} sees on host mig-a`),
      );
    } finally {
      await setState('b', 'ENABLED');
      const agent = (h: 'a' | 'b' | 'c') => ({
        accelerator: hosts[h].accelerator,
        cpuModel: hosts[h].cpuModel,
        cpuFlags: hosts[h].cpuFlags,
      });
      await report('a', running(vm.id), agent('a'));
      await report('b', [], agent('b'));
      await report('c', [], agent('c'));
    }
  });

  it('refuses a CPU report whose flags are not /proc/cpuinfo names, naming the field', async () => {
    const bad = await refused(
      report('c', [], { accelerator: '', cpuModel: 'host: Any', cpuFlags: ['avx2', 'a flag; DROP'] }),
    );
    expect(bad.code).toBe(status.INVALID_ARGUMENT);
    expect(bad.message).toMatch(/^cpu_flags: has "a flag; DROP": flags are \/proc\/cpuinfo names/);
    expect((await host('c')).cpuModel).toBe('sim');
  });

  it('holds the VM from begin to end: its vCPUs and memory count on both hosts, the destination owns it after the commit', async () => {
    const vm = await startedOn('a', {
      vcpus: 2,
      memoryMib: 512,
      nics: [{ mac: '', forwards: [{ guestPort: 80, hostAddress: '' }] }],
    });
    const [a0, c0] = [await host('a'), await host('c')];
    const migrationId = randomUUID();
    const operationId = randomUUID();

    const begun = await begin(vm.id, 'c', migrationId, operationId);
    expect(begun).toMatchObject({
      vm: { id: vm.id, currentOperationId: operationId, hostId: hosts.a.id },
      source: { id: hosts.a.id },
      destination: { id: hosts.c.id, address: hosts.c.address },
      spec: { vmId: vm.id, name: vm.name, vcpus: 2, memoryMib: 512, disks: [] },
    });
    expect(begun.spec!.nics).toEqual([
      { mac: vm.nics[0].mac, forwards: [{ guestPort: 80, hostAddress: '' }] },
    ]);
    const held = await getVm(vm.id);
    expect(held).toMatchObject({
      currentOperationId: operationId,
      allowedOperations: [],
      hostId: hosts.a.id,
    });
    const [a1, c1] = [await host('a'), await host('c')];
    expect([a1.vcpusAllocated, a1.memoryMibAllocated]).toEqual([a0.vcpusAllocated, a0.memoryMibAllocated]);
    expect([c1.vcpusAllocated - c0.vcpusAllocated, c1.memoryMibAllocated - c0.memoryMibAllocated]).toEqual([
      2, 512,
    ]);

    // A repeated begin answers the same and reserves nothing more.
    expect(await begin(vm.id, 'c', migrationId, randomUUID())).toEqual(begun);
    expect((await host('c')).memoryMibAllocated).toBe(c1.memoryMibAllocated);

    const commitNics = [
      { mac: vm.nics[0].mac, forwards: [{ guestPort: 80, hostAddress: '127.0.0.1:40080' }] },
    ];
    const committed = await migrations.call.commitVmMigration({ vmId: vm.id, migrationId, nics: commitNics });
    expect(committed.vm).toMatchObject({ hostId: hosts.c.id, currentOperationId: operationId });
    expect(await migrations.call.commitVmMigration({ vmId: vm.id, migrationId, nics: commitNics })).toEqual(
      committed,
    );
    expect(await getVm(vm.id)).toMatchObject({ hostId: hosts.c.id, nics: commitNics, allowedOperations: [] });
    expect((await host('a')).memoryMibAllocated).toBe(a1.memoryMibAllocated);
    expect((await host('c')).memoryMibAllocated).toBe(c1.memoryMibAllocated);

    const ended = await end(vm.id, migrationId);
    expect(ended.vm).toMatchObject({
      hostId: hosts.c.id,
      currentOperationId: '',
      powerState: P.POWER_STATE_RUNNING,
    });
    expect(await end(vm.id, migrationId)).toEqual(ended);
    const [a2, c2] = [await host('a'), await host('c')];
    expect(a1.memoryMibAllocated - a2.memoryMibAllocated).toBe(512);
    expect(a1.vcpusAllocated - a2.vcpusAllocated).toBe(2);
    expect(c2.memoryMibAllocated).toBe(c1.memoryMibAllocated);
    expect((await getVm(vm.id)).allowedOperations).toContain(
      computeV1.VmOperation.VM_OPERATION_CLEAN_SHUTDOWN,
    );
  });

  it('refuses other operations on a held VM naming the migration, and a commit of a migration that does not hold it', async () => {
    const vm = await startedOn('a');
    const migrationId = randomUUID();
    await begin(vm.id, 'b', migrationId);
    try {
      const stop = await refused(
        tenant.clients.vms.call.shutdownVm({
          id: vm.id,
          requestId: '',
          mode: computeV1.ShutdownMode.SHUTDOWN_MODE_HARD,
          timeoutMs: 0,
        }),
      );
      expect(stop.code).toBe(status.FAILED_PRECONDITION);
      expect(stop.message).toContain(`is being migrated (migration ${migrationId}`);

      const another = await refused(begin(vm.id, 'c'));
      expect(another.code).toBe(status.FAILED_PRECONDITION);
      expect(another.details.map((d) => d.reason)).toEqual(['VM_OPERATION_IN_PROGRESS']);
      expect(another.details[0].description).toContain(`held by migration ${migrationId}`);

      const commit = await refused(
        migrations.call.commitVmMigration({ vmId: vm.id, migrationId: randomUUID(), nics: [] }),
      );
      expect(commit.code).toBe(status.FAILED_PRECONDITION);
      expect(commit.message).toContain(`(migration ${migrationId} holds it)`);
      // An end of another migration leaves this one's hold alone.
      await end(vm.id, randomUUID());
      expect((await getVm(vm.id)).currentOperationId).not.toBe('');
    } finally {
      await end(vm.id, migrationId);
    }
  });

  it('counts a migration in flight against its destination, and refuses a begin for capacity alone with RESOURCE_EXHAUSTED', async () => {
    const first = await startedOn('a', { memoryMib: 1536 });
    const second = await startedOn('b', { memoryMib: 1024 });
    const freeOnC = 2048 - (await host('c')).memoryMibAllocated;
    expect(freeOnC).toBeGreaterThanOrEqual(1536);
    const migrationId = randomUUID();
    await begin(first.id, 'c', migrationId);
    try {
      const inFlight = await check(second.id, { destinationHostId: hosts.c.id });
      expect(inFlight.blockers.map((b) => b.reason)).toEqual(['INSUFFICIENT_MEMORY']);
      const refusal = await refused(begin(second.id, 'c'));
      expect(refusal.code).toBe(status.RESOURCE_EXHAUSTED);
      expect(refusal.details.map((d) => d.reason)).toEqual(['INSUFFICIENT_MEMORY']);
      expect(refusal.message).toContain(`vm ${second.name} cannot migrate to host mig-c: host mig-c has`);
      // Its own reservation is no blocker to the migration that holds it.
      expect((await check(first.id, { migrationId })).blockers).toEqual([]);
      expect((await getVm(second.id)).currentOperationId).toBe('');
    } finally {
      await end(first.id, migrationId);
    }
    expect((await check(second.id, { destinationHostId: hosts.c.id })).blockers).toEqual([]);
  });

  it('ends a migration that lost the guest with the VM HALTED, saying why, and frees both hosts', async () => {
    const vm = await startedOn('a', { memoryMib: 512 });
    const [a0, b0] = [await host('a'), await host('b')];
    const migrationId = randomUUID();
    await begin(vm.id, 'b', migrationId);
    await migrations.call.commitVmMigration({ vmId: vm.id, migrationId, nics: [] });
    const lost = 'post-copy lost the connection to the source: the guest is gone';
    expect((await end(vm.id, migrationId, lost)).vm).toMatchObject({
      powerState: P.POWER_STATE_HALTED,
      hostId: '',
    });
    expect(await getVm(vm.id)).toMatchObject({
      powerState: P.POWER_STATE_HALTED,
      powerStateReason: lost,
      hostId: '',
    });
    expect((await host('a')).memoryMibAllocated).toBe(a0.memoryMibAllocated - 512);
    expect((await host('b')).memoryMibAllocated).toBe(b0.memoryMibAllocated);
  });

  it('changes nothing and destroys nothing on reports from either host while a migration holds the VM', async () => {
    const vm = await startedOn('a');
    const migrationId = randomUUID();
    await begin(vm.id, 'b', migrationId);
    // Twice each: two reports in a row are what the registry believes.
    for (let i = 0; i < 2; i++) {
      expect((await report('b', [[vm.id, P.POWER_STATE_PAUSED]])).destroyVmIds).toEqual([]);
      expect((await report('a', [])).destroyVmIds).toEqual([]);
    }
    expect(await getVm(vm.id)).toMatchObject({ powerState: P.POWER_STATE_RUNNING, hostId: hosts.a.id });

    await migrations.call.commitVmMigration({ vmId: vm.id, migrationId, nics: [] });
    for (let i = 0; i < 2; i++) {
      expect((await report('a', [[vm.id, P.POWER_STATE_RUNNING]])).destroyVmIds).toEqual([]);
      expect((await report('b', [])).destroyVmIds).toEqual([]);
    }
    expect(await getVm(vm.id)).toMatchObject({ powerState: P.POWER_STATE_RUNNING, hostId: hosts.b.id });

    // Once it ends, the source's copy is one to clean up.
    await end(vm.id, migrationId);
    await report('a', [[vm.id, P.POWER_STATE_RUNNING]]);
    expect((await report('a', [[vm.id, P.POWER_STATE_RUNNING]])).destroyVmIds).toEqual([vm.id]);
  });

  it('puts a host in MAINTENANCE, where no create, start or migration goes, until it is enabled', async () => {
    const maintained = await setState('c', 'MAINTENANCE', 'firmware update');
    expect(maintained).toMatchObject({ state: H.HOST_STATE_MAINTENANCE, stateReason: 'firmware update' });
    expect(await setState('c', 'MAINTENANCE')).toMatchObject({ stateReason: 'maintenance' });
    try {
      await setState('b', 'MAINTENANCE');
      for (let i = 0; i < 3; i++) {
        const { vm, operation } = await tenant.clients.vms.call.createVm(vmRequest({ name: `maint-${++n}` }));
        await operationDone(tenant.clients.operations, operation!.id);
        expect((await getVm(vm!.id)).hostId).toBe(hosts.a.id);
      }
      const halted = (
        await tenant.clients.vms.call.createVm(vmRequest({ name: `maint-${++n}`, start: false }))
      ).vm!;
      const pinned = await cloud.admin.vms.call.startVm({ id: halted.id, requestId: '', hostId: hosts.c.id });
      const failed = await operationDone(tenant.clients.operations, pinned.operation!.id);
      expect(failed.error).toMatchObject({
        code: status.RESOURCE_EXHAUSTED,
        message: expect.stringContaining('not ENABLED'),
      });

      const vm = await startedOn('a');
      const { blockers } = await check(vm.id);
      expect(blockers[0]).toMatchObject({
        reason: 'NO_DESTINATION',
        description: expect.stringMatching(/rejected by host-state \(not ENABLED: .*2 MAINTENANCE/),
      });
      const refusal = await refused(begin(vm.id, 'c'));
      expect(refusal.code).toBe(status.FAILED_PRECONDITION);
      expect(refusal.details.map((d) => d.reason)).toEqual(['DESTINATION_HOST_STATE']);
    } finally {
      await setState('b', 'ENABLED');
    }
    expect(await setState('c', 'ENABLED')).toMatchObject({ state: H.HOST_STATE_ENABLED, stateReason: '' });
  });

  it("keeps a host in MAINTENANCE with the operator's reason when its agent registers again", async () => {
    const agent = {
      name: 'mig-restarted',
      address: '127.0.0.1:1',
      driver: 'sim',
      accelerator: 'sim',
      cpuModel: 'sim',
      cpuFlags: [],
      cpus: 2,
      memoryMib: 2048,
      labels: {},
      vms: [],
    };
    const { hostId, epoch } = await registry.call.registerHost(agent);
    await cloud.admin.hosts.call.disableHost({ id: hostId, maintenance: true, reason: 'rack move' });
    expect(await registry.call.registerHost(agent)).toMatchObject({ hostId, epoch: epoch + 1 });
    expect((await cloud.admin.hosts.call.getHost({ id: hostId })).host).toMatchObject({
      state: H.HOST_STATE_MAINTENANCE,
      stateReason: 'rack move',
    });
  });
});

describe.each(testDatabase('PostgreSQL'))('a host that goes DOWN under a migration, on %s', (_db, url) => {
  let cloud: LocalCloud;
  let tenant: TestTenant;
  let migrations: GrpcClient<computeV1.VmMigrationServiceClient>;

  beforeAll(async () => {
    cloud = await startLocalCloud({
      databaseUrl: url,
      schemaPrefix: uniqueSchema('vmmigdown'),
      agents: [{ name: 'down-src' }, { name: 'down-dst' }],
      computeEnv: { FLOTILLA_HOST_DOWN_AFTER_MS: '1500', FLOTILLA_HEARTBEAT_INTERVAL_MS: '300' },
    });
    tenant = await cloud.tenant('migrating-down');
    migrations = new GrpcClient({
      address: cloud.compute.address,
      service: 'flotilla.compute.v1.VmMigrationService',
      staticMetadata: { [md.serviceToken]: cloud.serviceToken },
    });
  });
  afterAll(async () => {
    migrations?.close();
    await cloud?.stop();
  });

  it('leaves the held VM to the migration while its source is DOWN, and marks it UNKNOWN when the migration ends there', async () => {
    const hosts = await cloud.hostsReady(2);
    const [src, dst] = ['down-src', 'down-dst'].map((name) => hosts.find((h) => h.name === name)!);
    const { vm } = await tenant.clients.vms.call.createVm(vmRequest({ name: 'held', start: false }));
    const started = await cloud.admin.vms.call.startVm({ id: vm!.id, requestId: '', hostId: src.id });
    await operationDone(tenant.clients.operations, started.operation!.id);
    const migrationId = randomUUID();
    await migrations.call.beginVmMigration({
      vmId: vm!.id,
      tenantId: '',
      migrationId,
      operationId: randomUUID(),
      destinationHostId: dst.id,
    });

    await cloud.agents.find((a) => a.name === 'down-src')!.stop();
    await waitFor('down-src DOWN', async () => {
      const { host } = await cloud.admin.hosts.call.getHost({ id: src.id });
      return host!.state === H.HOST_STATE_DOWN;
    });
    expect((await tenant.clients.vms.call.getVm({ id: vm!.id })).vm!.powerState).toBe(P.POWER_STATE_RUNNING);
    const { blockers } = await migrations.call.checkVmMigration({
      vmId: vm!.id,
      tenantId: '',
      destinationHostId: '',
      excludeHostIds: [],
      migrationId,
    });
    expect(blockers.map((b) => b.reason)).toEqual(['SOURCE_HOST_UNAVAILABLE']);

    // The migration rolled back: the VM stays on its source, which is DOWN.
    await migrations.call.endVmMigration({ vmId: vm!.id, migrationId, lostReason: '' });
    expect((await tenant.clients.vms.call.getVm({ id: vm!.id })).vm).toMatchObject({
      powerState: P.POWER_STATE_UNKNOWN,
      powerStateReason: expect.stringContaining('host down-src is DOWN'),
      hostId: src.id,
      currentOperationId: '',
    });
  });
});
