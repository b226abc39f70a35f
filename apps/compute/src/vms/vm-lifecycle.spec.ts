import { commonV1, computeV1 } from '@flotilla/contracts';
import {
  LocalCloud,
  operationDone,
  rejection,
  startLocalCloud,
  TestTenant,
  testDatabases,
  uniqueSchema,
  vmRequest,
} from '@flotilla/platform';

// Real: gateway, compute, host agents, gRPC on loopback, the database (PGlite and PostgreSQL).
// Fake: the hypervisor (sim driver; 100 ms per power operation keeps an operation in flight while the
// concurrent requests of a test arrive).

const { OperationState: S } = commonV1;
const { PowerState: P } = computeV1;

describe.each(testDatabases())('VM lifecycle through the gateway on %s', (_db, url) => {
  let cloud: LocalCloud;
  let tenant: TestTenant;
  let n = 0;

  beforeAll(async () => {
    cloud = await startLocalCloud({
      databaseUrl: url,
      schemaPrefix: uniqueSchema('life'),
      simLatencyMs: 100,
    });
    tenant = await cloud.tenant('lifecycle');
  });
  afterAll(() => cloud?.stop());

  const createRunning = async (name = `vm-${++n}`) => {
    const created = await tenant.clients.vms.call.createVm(vmRequest({ name }));
    const op = await operationDone(tenant.clients.operations, created.operation!.id);
    expect(op.state).toBe(S.OPERATION_STATE_SUCCEEDED);
    return created.vm!;
  };

  const getVm = async (id: string) => (await tenant.clients.vms.call.getVm({ id })).vm!;

  it('takes a VM through start, pause, unpause, reboot, clean shutdown, start, hard shutdown and destroy', async () => {
    const vm = await createRunning();
    expect((await getVm(vm.id)).powerState).toBe(P.POWER_STATE_RUNNING);
    const vms = tenant.clients.vms.call;
    const steps: Array<
      [string, () => Promise<{ operation?: commonV1.Operation }>, computeV1.PowerState | 'GONE']
    > = [
      ['pause', () => vms.pauseVm({ id: vm.id, requestId: '' }), P.POWER_STATE_PAUSED],
      ['unpause', () => vms.unpauseVm({ id: vm.id, requestId: '' }), P.POWER_STATE_RUNNING],
      [
        'reboot',
        () => vms.rebootVm({ id: vm.id, requestId: '', mode: computeV1.ShutdownMode.SHUTDOWN_MODE_CLEAN }),
        P.POWER_STATE_RUNNING,
      ],
      [
        'clean shutdown',
        () =>
          vms.shutdownVm({
            id: vm.id,
            requestId: '',
            mode: computeV1.ShutdownMode.SHUTDOWN_MODE_CLEAN,
            timeoutMs: 0,
          }),
        P.POWER_STATE_HALTED,
      ],
      ['start', () => vms.startVm({ id: vm.id, requestId: '', hostId: '' }), P.POWER_STATE_RUNNING],
      [
        'hard shutdown',
        () =>
          vms.shutdownVm({
            id: vm.id,
            requestId: '',
            mode: computeV1.ShutdownMode.SHUTDOWN_MODE_HARD,
            timeoutMs: 0,
          }),
        P.POWER_STATE_HALTED,
      ],
      ['destroy', () => vms.destroyVm({ id: vm.id, requestId: '' }), 'GONE'],
    ];
    const seen: string[] = [];
    for (const [step, call, expected] of steps) {
      const { operation } = await call();
      const done = await operationDone(tenant.clients.operations, operation!.id);
      const after = expected === 'GONE' ? await rejection(vms.getVm({ id: vm.id })) : await getVm(vm.id);
      seen.push(`${step}: ${done.state} → ${'powerState' in after ? after.powerState : after.code}`);
    }
    expect(seen).toEqual([
      'pause: OPERATION_STATE_SUCCEEDED → POWER_STATE_PAUSED',
      'unpause: OPERATION_STATE_SUCCEEDED → POWER_STATE_RUNNING',
      'reboot: OPERATION_STATE_SUCCEEDED → POWER_STATE_RUNNING',
      'clean shutdown: OPERATION_STATE_SUCCEEDED → POWER_STATE_HALTED',
      'start: OPERATION_STATE_SUCCEEDED → POWER_STATE_RUNNING',
      'hard shutdown: OPERATION_STATE_SUCCEEDED → POWER_STATE_HALTED',
      'destroy: OPERATION_STATE_SUCCEEDED → NOT_FOUND',
    ]);
  });

  it('places a running VM on a host and frees it when the VM halts', async () => {
    const vm = await createRunning();
    const running = await getVm(vm.id);
    expect(running.hostId).toBe((await cloud.hostsReady())[0].id);
    const { operation } = await tenant.clients.vms.call.shutdownVm({
      id: vm.id,
      requestId: '',
      mode: computeV1.ShutdownMode.SHUTDOWN_MODE_HARD,
      timeoutMs: 0,
    });
    await operationDone(tenant.clients.operations, operation!.id);
    expect((await getVm(vm.id)).hostId).toBe('');
  });

  it('suspends a running VM on its host (keeping its claim) and resumes it there', async () => {
    const vm = await getVm((await createRunning()).id);
    expect(vm.hostId).not.toBe('');
    const suspended = await tenant.clients.vms.call.suspendVm({ id: vm.id, requestId: '' });
    expect((await operationDone(tenant.clients.operations, suspended.operation!.id)).state).toBe(
      'OPERATION_STATE_SUCCEEDED',
    );
    const after = await getVm(vm.id);
    expect(after.powerState).toBe('POWER_STATE_SUSPENDED');
    expect(after.hostId).toBe(vm.hostId);
    expect(after.allowedOperations).toEqual([
      'VM_OPERATION_RESUME',
      'VM_OPERATION_HARD_SHUTDOWN',
      'VM_OPERATION_DESTROY',
    ]);
    const resumed = await tenant.clients.vms.call.resumeVm({ id: vm.id, requestId: '' });
    await operationDone(tenant.clients.operations, resumed.operation!.id);
    expect(await getVm(vm.id)).toMatchObject({ powerState: 'POWER_STATE_RUNNING', hostId: vm.hostId });
  });

  it('gives a VM created without NICs one NIC with a generated MAC, and keeps asked-for port forwards', async () => {
    const plain = await tenant.clients.vms.call.createVm(vmRequest({ name: `nic-${++n}`, start: false }));
    expect(plain.vm!.nics).toEqual([
      { mac: expect.stringMatching(/^52:54:00(:[0-9a-f]{2}){3}$/), forwards: [] },
    ]);
    const forwarded = await tenant.clients.vms.call.createVm(
      vmRequest({
        name: `nic-${++n}`,
        start: false,
        nics: [{ mac: '', forwards: [{ guestPort: 80, hostAddress: '' }] }],
      }),
    );
    expect(forwarded.vm!.nics[0].forwards).toEqual([{ guestPort: 80, hostAddress: '' }]);
    // As committed, not only as answered.
    expect((await getVm(forwarded.vm!.id)).nics).toEqual(forwarded.vm!.nics);
    const refused = await rejection(
      tenant.clients.vms.call.createVm(
        vmRequest({ name: `nic-${++n}`, nics: [{ mac: '', forwards: [{ guestPort: 0, hostAddress: '' }] }] }),
      ),
    );
    expect(refused).toMatchObject({ code: 'INVALID_ARGUMENT' });
    expect(refused.message).toContain('nics[0].forwards[0].guest_port');
  });

  it('publishes the operations a running VM allows', async () => {
    const vm = await createRunning();
    expect((await getVm(vm.id)).allowedOperations).toEqual([
      'VM_OPERATION_CLEAN_SHUTDOWN',
      'VM_OPERATION_HARD_SHUTDOWN',
      'VM_OPERATION_CLEAN_REBOOT',
      'VM_OPERATION_HARD_REBOOT',
      'VM_OPERATION_PAUSE',
      'VM_OPERATION_SUSPEND',
      'VM_OPERATION_DESTROY',
      'VM_OPERATION_SNAPSHOT',
    ]);
  });

  it('refuses an operation the power state does not allow with FAILED_PRECONDITION naming the state and the allowed operations', async () => {
    const created = await tenant.clients.vms.call.createVm(
      vmRequest({ name: `halted-${++n}`, start: false }),
    );
    await operationDone(tenant.clients.operations, created.operation!.id);
    const refused = await rejection(tenant.clients.vms.call.pauseVm({ id: created.vm!.id, requestId: '' }));
    expect(refused.code).toBe('FAILED_PRECONDITION');
    expect(refused.message).toContain('is HALTED: PAUSE is not allowed; allowed operations: START, DESTROY');
  });

  it('returns the same VM and operation for a repeated create with the same request_id, and keeps one VM', async () => {
    const request = vmRequest({ requestId: `req-${++n}`, name: `idem-${n}`, start: false });
    const first = await tenant.clients.vms.call.createVm(request);
    const again = await tenant.clients.vms.call.createVm(request);
    expect(again.vm!.id).toBe(first.vm!.id);
    expect(again.operation!.id).toBe(first.operation!.id);
    const { vms } = await tenant.clients.vms.call.listVms({
      page: { pageSize: 10, pageToken: '', filter: `name=${request.name}` },
    });
    expect(vms.map((v) => v.id)).toEqual([first.vm!.id]);
  });

  it('creates one VM when the same request_id arrives several times at once', async () => {
    const request = vmRequest({ requestId: `req-${++n}`, name: `idem-${n}`, start: false });
    const answers = await Promise.all([1, 2, 3, 4].map(() => tenant.clients.vms.call.createVm(request)));
    expect(new Set(answers.map((a) => a.vm!.id)).size).toBe(1);
    expect(new Set(answers.map((a) => a.operation!.id)).size).toBe(1);
    const { vms } = await tenant.clients.vms.call.listVms({
      page: { pageSize: 10, pageToken: '', filter: `name=${request.name}` },
    });
    expect(vms).toHaveLength(1);
  });

  it('accepts exactly one of several power operations sent at once and refuses the others as an operation in progress', async () => {
    const vm = await createRunning();
    const vms = tenant.clients.vms.call;
    const hard = computeV1.ShutdownMode.SHUTDOWN_MODE_HARD;
    const results = await Promise.allSettled([
      vms.pauseVm({ id: vm.id, requestId: '' }),
      vms.rebootVm({ id: vm.id, requestId: '', mode: hard }),
      vms.shutdownVm({ id: vm.id, requestId: '', mode: hard, timeoutMs: 0 }),
      vms.rebootVm({ id: vm.id, requestId: '', mode: computeV1.ShutdownMode.SHUTDOWN_MODE_CLEAN }),
    ]);
    const accepted = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value.operation!] : []));
    const refused = await Promise.all(
      results.flatMap((r) => (r.status === 'rejected' ? [rejection(Promise.reject(r.reason))] : [])),
    );
    expect(accepted).toHaveLength(1);
    expect(refused).toEqual(
      Array(3).fill(
        expect.objectContaining({
          code: 'FAILED_PRECONDITION',
          message: expect.stringContaining(`${accepted[0].id} in progress`),
        }),
      ),
    );
    expect((await operationDone(tenant.clients.operations, accepted[0].id)).state).toBe(
      S.OPERATION_STATE_SUCCEEDED,
    );
  });
});
