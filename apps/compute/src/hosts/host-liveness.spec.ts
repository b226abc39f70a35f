import { computeV1 } from '@flotilla/contracts';
import {
  LocalCloud,
  operationDone,
  startLocalCloud,
  TestTenant,
  testDatabase,
  testDatabases,
  uniqueSchema,
  waitFor,
  vmRequest,
} from '@flotilla/platform';

// Real: gateway, compute (heartbeats, host reaper, reconciliation), host agents that stop and start again,
// gRPC on loopback, the database (PGlite and PostgreSQL). Fake: the hypervisor (sim driver; its VMs "keep
// running" in the agent's state directory while no agent runs).

const { PowerState: P, HostState: H } = computeV1;

const hostNamed = async (cloud: LocalCloud, name: string) =>
  (await cloud.admin.hosts.call.listHosts({ page: { pageSize: 10, pageToken: '', filter: `name=${name}` } }))
    .hosts[0];

/** A local cloud of one agent whose heartbeats (every 300 ms) compute stops trusting after downAfterMs. */
const cloudWithOneHost = (url: string, prefix: string, host: string, downAfterMs: number) =>
  startLocalCloud({
    databaseUrl: url,
    schemaPrefix: uniqueSchema(prefix),
    agents: [{ name: host }],
    computeEnv: { FLOTILLA_HOST_DOWN_AFTER_MS: String(downAfterMs), FLOTILLA_HEARTBEAT_INTERVAL_MS: '300' },
  });

describe.each(testDatabases())('host liveness on %s', (_db, url) => {
  let cloud: LocalCloud;
  let tenant: TestTenant;

  beforeAll(async () => {
    cloud = await cloudWithOneHost(url, 'liveness', 'host-a', 1500);
    tenant = await cloud.tenant('liveness');
  });
  afterAll(() => cloud?.stop());

  const host = (name: string) => hostNamed(cloud, name);
  const vmStates = async (ids: string[]) =>
    Promise.all(ids.map(async (id) => (await tenant.clients.vms.call.getVm({ id })).vm!));

  it('marks a silent host DOWN and its VMs UNKNOWN, and brings both back when an agent with its name and state returns', async () => {
    const ids: string[] = [];
    for (const name of ['web', 'batch']) {
      const created = await tenant.clients.vms.call.createVm(vmRequest({ name }));
      await operationDone(tenant.clients.operations, created.operation!.id);
      ids.push(created.vm!.id);
    }
    const paused = await tenant.clients.vms.call.pauseVm({ id: ids[1], requestId: '' });
    await operationDone(tenant.clients.operations, paused.operation!.id);
    const before = await host('host-a');

    const [agent] = cloud.agents;
    await agent.stop();

    const down = await waitFor('host-a DOWN', async () =>
      (await host('host-a')).state === H.HOST_STATE_DOWN ? host('host-a') : false,
    );
    expect(down.stateReason).toContain('no heartbeat');
    const unknown = await waitFor('both VMs UNKNOWN', async () => {
      const vms = await vmStates(ids);
      return vms.every((v) => v.powerState === P.POWER_STATE_UNKNOWN) && vms;
    });
    expect(unknown[0].powerStateReason).toContain('host-a is DOWN');
    // Without its host, only what is safe may be asked of a VM.
    expect(unknown[0].allowedOperations).toEqual(['VM_OPERATION_HARD_SHUTDOWN', 'VM_OPERATION_DESTROY']);
    expect(unknown[0].hostId).toBe(before.id);

    await cloud.startAgent({ name: 'host-a', stateDir: agent.stateDir });

    const back = await waitFor('host-a ENABLED again', async () => {
      const h = await host('host-a');
      return h.state === H.HOST_STATE_ENABLED && h;
    });
    expect(back.id).toBe(before.id);
    expect(back.epoch).toBeGreaterThan(before.epoch);
    const vms = await waitFor('the VMs reported again', async () => {
      const v = await vmStates(ids);
      return v.every((x) => x.powerState !== P.POWER_STATE_UNKNOWN) && v;
    });
    expect(vms.map((v) => v.powerState)).toEqual([P.POWER_STATE_RUNNING, P.POWER_STATE_PAUSED]);
    expect(vms.map((v) => v.hostId)).toEqual([before.id, before.id]);
  });
});

// The reaper's rule, not the database's: one database is enough.
describe.each(testDatabase('PostgreSQL'))('host liveness across a compute restart on %s', (_db, url) => {
  const downAfterMs = 4000; // compute sweeps for silent hosts every 1 s at this setting
  let cloud: LocalCloud;
  let tenant: TestTenant;

  beforeAll(async () => {
    cloud = await cloudWithOneHost(url, 'restart', 'host-r', downAfterMs);
    tenant = await cloud.tenant('restart');
  });
  afterAll(() => cloud?.stop());

  const hostR = () => hostNamed(cloud, 'host-r');

  it('does not count the time compute itself was down: a restart longer than the timeout leaves hosts and VMs alone', async () => {
    const created = await tenant.clients.vms.call.createVm(vmRequest({ name: 'steady' }));
    await operationDone(tenant.clients.operations, created.operation!.id);
    const before = (await tenant.clients.vms.call.getVm({ id: created.vm!.id })).vm!;
    expect(before.powerState).toBe(P.POWER_STATE_RUNNING);
    const hostBefore = await hostR();

    // Compute and the agent both silent for longer than the timeout ...
    const [agent] = cloud.agents;
    await agent.stop();
    await cloud.compute.kill();
    await new Promise((r) => setTimeout(r, downAfterMs + 500));
    await cloud.compute.restart();
    // ... and compute sweeps for silent hosts once before the agent reports again. A host it has not
    // listened to for the whole timeout is not judged yet (before, this sweep marked it DOWN).
    await new Promise((r) => setTimeout(r, 1100));
    await cloud.startAgent({ name: 'host-r', stateDir: agent.stateDir });

    await waitFor('host-r ENABLED with a new epoch', async () => {
      const h = await hostR();
      return h.state === H.HOST_STATE_ENABLED && h.epoch > hostBefore.epoch && h;
    });
    const after = (await tenant.clients.vms.call.getVm({ id: created.vm!.id })).vm!;
    // Never UNKNOWN in between: its record did not change at all.
    expect(after.powerState).toBe(P.POWER_STATE_RUNNING);
    expect(after.etag).toBe(before.etag);
  }, 30_000);
});
