import { commonV1, computeV1, gatewayV1 } from '@flotilla/contracts';
import {
  LocalCloud,
  operationDone,
  startLocalCloud,
  TestTenant,
  testDatabase,
  uniqueSchema,
  vmRequest,
} from '@flotilla/platform';

// Real: gateway, compute (scheduler over the hosts in the database, reservation with the host row locked),
// two host agents, gRPC on loopback, the database (PGlite and PostgreSQL). Fake: the hypervisor (sim
// driver: 2 CPUs and 2048 MiB per host, so 8 vCPUs at the default 4:1 overcommit).

const { OperationState: S } = commonV1;

describe.each(testDatabase('PGlite'))('placement through the gateway on %s', (_db, url) => {
  let cloud: LocalCloud;
  let tenant: TestTenant;
  let n = 0;

  beforeAll(async () => {
    cloud = await startLocalCloud({
      databaseUrl: url,
      schemaPrefix: uniqueSchema('place'),
      agents: [
        { cpus: 2, memoryMib: 2048, labels: { zone: 'a' } },
        { cpus: 2, memoryMib: 2048, labels: { zone: 'b' } },
      ],
    });
    tenant = await cloud.tenant('placement', gatewayV1.Role.ROLE_VM_POWER_ADMIN);
  });
  afterAll(() => cloud?.stop());

  const start = async (over: Partial<computeV1.CreateVmRequest>) => {
    const created = await tenant.clients.vms.call.createVm(
      vmRequest({ name: `vm-${++n}`, flavorId: '', vcpus: 1, memoryMib: 256, ...over }),
    );
    const operation = await operationDone(tenant.clients.operations, created.operation!.id);
    const { vm } = await tenant.clients.vms.call.getVm({ id: created.vm!.id });
    return { operation, vm: vm! };
  };

  it('fails the start of a VM with more memory than any host with RESOURCE_EXHAUSTED naming the memory filter', async () => {
    const { operation, vm } = await start({ memoryMib: 4096 });
    expect(operation.state).toBe(S.OPERATION_STATE_FAILED);
    expect(operation.error).toMatchObject({
      code: 8,
      message: expect.stringContaining('2 hosts rejected by memory'),
    });
    expect(vm).toMatchObject({
      powerState: computeV1.PowerState.POWER_STATE_HALTED,
      hostId: '',
      currentOperationId: '',
    });
  });

  it('fails the start of a VM with more vCPUs than any host takes with RESOURCE_EXHAUSTED naming the vcpus filter', async () => {
    const { operation } = await start({ vcpus: 16 });
    expect(operation.state).toBe(S.OPERATION_STATE_FAILED);
    expect(operation.error).toMatchObject({ code: 8, message: expect.stringContaining('rejected by vcpus') });
  });

  it('places two VMs of one anti-affinity group on different hosts and fails the third naming anti-affinity', async () => {
    const first = await start({ antiAffinityGroup: 'web' });
    const second = await start({ antiAffinityGroup: 'web' });
    const third = await start({ antiAffinityGroup: 'web' });
    expect([first.operation.state, second.operation.state]).toEqual([
      S.OPERATION_STATE_SUCCEEDED,
      S.OPERATION_STATE_SUCCEEDED,
    ]);
    expect(first.vm.hostId).not.toBe(second.vm.hostId);
    expect(third.operation.state).toBe(S.OPERATION_STATE_FAILED);
    expect(third.operation.error).toMatchObject({
      code: 8,
      message: expect.stringContaining('2 hosts rejected by anti-affinity'),
    });
  });

  it('keeps an anti-affinity group apart when its VMs start at the same moment', async () => {
    const results = await Promise.all([1, 2, 3].map(() => start({ antiAffinityGroup: 'db' })));
    const placed = results.filter((r) => r.operation.state === S.OPERATION_STATE_SUCCEEDED);
    const failed = results.filter((r) => r.operation.state === S.OPERATION_STATE_FAILED);
    expect(placed).toHaveLength(2);
    expect(new Set(placed.map((r) => r.vm.hostId)).size).toBe(2);
    expect(failed).toHaveLength(1);
    expect(failed[0].operation.error?.code).toBe(8);
  });

  it('places a VM that requires a host label on the host carrying it', async () => {
    const hosts = await cloud.hostsReady();
    const zoneB = hosts.find((h) => h.labels.zone === 'b')!;
    const { operation, vm } = await start({ requiredHostLabels: { zone: 'b' } });
    expect(operation.state).toBe(S.OPERATION_STATE_SUCCEEDED);
    expect(vm.hostId).toBe(zoneB.id);
  });

  it('counts a running VM against its host and gives the capacity back when it halts', async () => {
    const { vm } = await start({ vcpus: 2, memoryMib: 512 });
    const allocated = async () => {
      const { host } = await cloud.admin.hosts.call.getHost({ id: vm.hostId });
      return host!;
    };
    const before = await allocated();
    const { operation } = await tenant.clients.vms.call.shutdownVm({
      id: vm.id,
      requestId: '',
      mode: computeV1.ShutdownMode.SHUTDOWN_MODE_HARD,
      timeoutMs: 0,
    });
    await operationDone(tenant.clients.operations, operation!.id);
    const after = await allocated();
    expect(before.vcpusAllocated - after.vcpusAllocated).toBe(2);
    expect(before.memoryMibAllocated - after.memoryMibAllocated).toBe(512);
  });
});
