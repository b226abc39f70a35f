import { computeV1 } from '@flotilla/contracts';
import { ErrorCode } from '@flotilla/domain';
import {
  LocalCloud,
  operationDone,
  startLocalCloud,
  testDatabases,
  uniqueSchema,
  vmRequest,
} from '@flotilla/platform';
import { ComputeHostControl } from './host-control';

// Real: compute (and the gateway, storage and two sim host agents of the local cloud) over gRPC on
// loopback, its database (the first test database). Checks that the HostControl an evacuation uses reads
// and drives the real compute as the fakes of evacuation.spec.ts assume.

const [[dbName, url]] = testDatabases();

describe(`ComputeHostControl against the real compute (${dbName})`, () => {
  let cloud: LocalCloud;
  let hosts: computeV1.Host[];
  let control: ComputeHostControl;
  const vmIds: string[] = [];

  beforeAll(async () => {
    cloud = await startLocalCloud({ databaseUrl: url, schemaPrefix: uniqueSchema('hostctl'), agents: 2 });
    hosts = (await cloud.hostsReady(2)).sort((a, b) => a.name.localeCompare(b.name));
    control = new ComputeHostControl(cloud.compute.address, cloud.serviceToken);
    const { vms, operations } = cloud.admin;
    for (const name of ['res-a', 'res-b', 'halted-c']) {
      const { vm } = await vms.call.createVm(vmRequest({ name, start: false }));
      vmIds.push(vm!.id);
    }
    for (const id of vmIds.slice(0, 2)) {
      const { operation } = await vms.call.startVm({ id, requestId: '', hostId: hosts[0].id });
      await operationDone(operations, operation!.id);
    }
  }, 120_000);

  afterAll(async () => {
    control?.close();
    await cloud?.stop();
  });

  it('lists the RUNNING and PAUSED VMs of a host, not its halted ones nor other hosts', async () => {
    expect((await control.residentVms(hosts[0].id)).map((v) => v.id).sort()).toEqual(
      vmIds.slice(0, 2).sort(),
    );
    expect(await control.residentVms(hosts[1].id)).toEqual([]);
  });

  it('reads a host by id or name with its state and free room', async () => {
    const byName = await control.host(hosts[0].name);
    expect(byName).toMatchObject({ id: hosts[0].id, state: 'ENABLED', driver: hosts[0].driver });
    const empty = await control.host(hosts[1].id);
    expect(byName.freeMemoryMib).toBeLessThan(empty.freeMemoryMib);
    expect((await control.hosts()).map((h) => h.id).sort()).toEqual(hosts.map((h) => h.id).sort());
  });

  it('answers NOT_FOUND for an unknown host', async () => {
    await expect(control.host('no-such-host')).rejects.toMatchObject({ code: ErrorCode.NotFound });
  });

  it('disables a host, puts it in MAINTENANCE and enables it again', async () => {
    expect((await control.disable(hosts[1].id, { maintenance: false, reason: 'test' })).state).toBe(
      'DISABLED',
    );
    expect((await control.disable(hosts[1].id, { maintenance: true, reason: 'test' })).state).toBe(
      'MAINTENANCE',
    );
    expect((await control.enable(hosts[1].id)).state).toBe('ENABLED');
  });

  it('shuts a VM down and waits until it is HALTED; the same request id asked again follows the same shutdown', async () => {
    const requestId = `evacuation-test:${vmIds[1]}:shutdown`;
    await control.shutdownVm({ vmId: vmIds[1], requestId, timeoutMs: 1000 });
    const { vm } = await cloud.admin.vms.call.getVm({ id: vmIds[1] });
    expect(vm?.powerState).toBe(computeV1.PowerState.POWER_STATE_HALTED);
    await control.shutdownVm({ vmId: vmIds[1], requestId, timeoutMs: 1000 });
    expect((await control.residentVms(hosts[0].id)).map((v) => v.id)).toEqual([vmIds[0]]);
  });
});
