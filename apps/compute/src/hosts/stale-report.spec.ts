import { computeV1 } from '@flotilla/contracts';
import {
  GrpcClient,
  LocalCloud,
  md,
  operationDone,
  startLocalCloud,
  TestTenant,
  testDatabase,
  uniqueSchema,
  vmRequest,
} from '@flotilla/platform';

// Real: gateway, compute, one sim host agent, gRPC on loopback, the database. The test speaks for the
// host agent itself (Heartbeat with the host's id and epoch) to deliver reports that are out of date, as a
// report taken just before a start and delivered after it is. The agent's own heartbeats are made rare so
// that the reports the test sends follow each other.

const { PowerState: P } = computeV1;

describe.each(testDatabase('PGlite'))('reports that predate a change, on %s', (_db, url) => {
  let cloud: LocalCloud;
  let tenant: TestTenant;
  let registry: GrpcClient<computeV1.HostRegistryServiceClient>;
  let host: computeV1.Host;

  beforeAll(async () => {
    cloud = await startLocalCloud({
      databaseUrl: url,
      schemaPrefix: uniqueSchema('stale'),
      agents: [{ name: 'host-s' }],
      computeEnv: { FLOTILLA_HEARTBEAT_INTERVAL_MS: '60000', FLOTILLA_HOST_DOWN_AFTER_MS: '600000' },
    });
    tenant = await cloud.tenant('stale');
    [host] = await cloud.hostsReady(1);
    registry = new GrpcClient({
      address: cloud.compute.address,
      service: 'flotilla.compute.v1.HostRegistryService',
      staticMetadata: { [md.serviceToken]: cloud.serviceToken },
    });
  });
  afterAll(async () => {
    registry?.close();
    await cloud?.stop();
  });

  const report = (vms: computeV1.VmStatus[]) =>
    registry.call.heartbeat({
      hostId: host.id,
      epoch: host.epoch,
      vms,
      accelerator: '',
      cpuModel: '',
      cpuFlags: [],
    });
  const running = (vmId: string): computeV1.VmStatus => ({
    vmId,
    powerState: P.POWER_STATE_RUNNING,
    reason: '',
    nics: [],
  });
  const startedVm = async (name: string) => {
    const created = await tenant.clients.vms.call.createVm(vmRequest({ name }));
    expect((await operationDone(tenant.clients.operations, created.operation!.id)).state).toBe(
      'OPERATION_STATE_SUCCEEDED',
    );
    return created.vm!.id;
  };
  const vm = async (id: string) => (await tenant.clients.vms.call.getVm({ id })).vm!;

  it('does not halt a running VM on one report taken before it started; the next report without it does', async () => {
    const id = await startedVm('late-report');
    expect((await report([])).destroyVmIds).toEqual([]);
    expect(await vm(id)).toMatchObject({ powerState: P.POWER_STATE_RUNNING, hostId: host.id });

    // A report that has it clears the doubt: one more report without it is again only a doubt.
    await report([running(id)]);
    await report([]);
    expect((await vm(id)).powerState).toBe(P.POWER_STATE_RUNNING);

    await report([]);
    expect(await vm(id)).toMatchObject({
      powerState: P.POWER_STATE_HALTED,
      powerStateReason: 'not running on host host-s when it reported',
    });
  });

  it('destroys a VM the pool keeps elsewhere only when two reports in a row show it running there', async () => {
    const id = await startedVm('stopped-meanwhile');
    const stop = await tenant.clients.vms.call.shutdownVm({
      id,
      requestId: '',
      mode: computeV1.ShutdownMode.SHUTDOWN_MODE_HARD,
      timeoutMs: 0,
    });
    await operationDone(tenant.clients.operations, stop.operation!.id);
    expect((await report([running(id)])).destroyVmIds).toEqual([]);
    expect((await report([running(id)])).destroyVmIds).toEqual([id]);
  });

  it('keeps a suspended VM SUSPENDED on one report taken during the suspend that says HALTED', async () => {
    const id = await startedVm('suspended-meanwhile');
    const suspend = await tenant.clients.vms.call.suspendVm({ id, requestId: '' });
    expect((await operationDone(tenant.clients.operations, suspend.operation!.id)).state).toBe(
      'OPERATION_STATE_SUCCEEDED',
    );
    const halted: computeV1.VmStatus = { ...running(id), powerState: P.POWER_STATE_HALTED, reason: 'killed' };
    expect((await report([halted])).destroyVmIds).toEqual([]);
    expect(await vm(id)).toMatchObject({ powerState: P.POWER_STATE_SUSPENDED, hostId: host.id });
    // A report with the truth clears the doubt; the same claim twice in a row is believed.
    await report([{ ...running(id), powerState: P.POWER_STATE_SUSPENDED }]);
    await report([halted]);
    expect((await vm(id)).powerState).toBe(P.POWER_STATE_SUSPENDED);
    await report([halted]);
    expect(await vm(id)).toMatchObject({ powerState: P.POWER_STATE_HALTED, powerStateReason: 'killed' });
  });

  it('destroys at once a VM the pool does not know', async () => {
    const unknown = '00000000-0000-4000-8000-0000000000aa';
    expect((await report([running(unknown)])).destroyVmIds).toEqual([unknown]);
  });
});
