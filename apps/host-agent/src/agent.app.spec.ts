import { randomUUID } from 'node:crypto';
import { computeV1, migrationV1 } from '@flotilla/contracts';
import {
  GrpcClient,
  LocalCloud,
  md,
  rejection,
  startLocalCloud,
  testDatabases,
  uniqueSchema,
} from '@flotilla/platform';

// Real: a host agent started by startAgent (as main does) inside a local cloud, called directly over gRPC
// on loopback the way compute calls it. Fake: the hypervisor (sim driver).

describe.each(testDatabases())('host agent on %s', (_db, url) => {
  let cloud: LocalCloud;
  const clients: Array<GrpcClient<unknown>> = [];

  beforeAll(async () => {
    cloud = await startLocalCloud({ databaseUrl: url, schemaPrefix: uniqueSchema('agent') });
  });
  afterAll(async () => {
    for (const c of clients) c.close();
    await cloud?.stop();
  });

  const agent = (serviceToken?: string) => {
    const c = new GrpcClient<computeV1.AgentServiceClient>({
      address: cloud.agents[0].address,
      service: 'flotilla.compute.v1.AgentService',
      staticMetadata: serviceToken ? { [md.serviceToken]: serviceToken } : {},
    });
    clients.push(c as GrpcClient<unknown>);
    return c.call;
  };
  const epoch = async () => (await cloud.hostsReady())[0].epoch;
  const spec = (vmId: string): computeV1.VmSpec => ({
    vmId,
    name: 'direct',
    vcpus: 1,
    memoryMib: 64,
    boot: { image: '', kernel: '', initrd: '', cmdline: '' },
    nics: [],
    kernelSha256: '',
    initrdSha256: '',
    disks: [],
  });

  it('refuses a command without the service identity with UNAUTHENTICATED', async () => {
    const refused = await rejection(agent().startVm({ epoch: await epoch(), spec: spec(randomUUID()) }));
    expect(refused).toMatchObject({ code: 'UNAUTHENTICATED' });
  });

  it('refuses a command with another service token with UNAUTHENTICATED', async () => {
    const refused = await rejection(agent('not-the-service-token').getVmStatus({ vmId: randomUUID() }));
    expect(refused).toMatchObject({ code: 'UNAUTHENTICATED' });
  });

  it('refuses a command carrying a stale epoch with FAILED_PRECONDITION naming the current one', async () => {
    const current = await epoch();
    const refused = await rejection(
      agent(cloud.serviceToken).startVm({ epoch: current - 1, spec: spec(randomUUID()) }),
    );
    expect(refused.code).toBe('FAILED_PRECONDITION');
    expect(refused.message).toContain(`this host is at epoch ${current}`);
  });

  it('answers a repeated start of a running VM with its status instead of starting it again', async () => {
    const call = agent(cloud.serviceToken);
    const vmId = randomUUID();
    const current = await epoch();
    const [first, again] = [
      await call.startVm({ epoch: current, spec: spec(vmId) }),
      await call.startVm({ epoch: current, spec: spec(vmId) }),
    ];
    expect(first.status?.powerState).toBe(computeV1.PowerState.POWER_STATE_RUNNING);
    expect(again.status).toEqual(first.status);
    await call.destroyVm({ epoch: current, vmId });
    expect(await rejection(call.getVmStatus({ vmId }))).toMatchObject({ code: 'NOT_FOUND' });
  });

  it('serves MigrationAgentService for the migration service, with the same epoch check', async () => {
    const c = new GrpcClient<migrationV1.MigrationAgentServiceClient>({
      address: cloud.agents[0].address,
      service: 'flotilla.migration.v1.MigrationAgentService',
      staticMetadata: { [md.serviceToken]: cloud.serviceToken },
    });
    clients.push(c as GrpcClient<unknown>);
    const current = await epoch();
    const stale = await rejection(
      c.call.switchOver({ epoch: current - 1, migrationId: randomUUID(), vmId: randomUUID() }),
    );
    expect(stale.code).toBe('FAILED_PRECONDITION');
    expect(stale.message).toContain(`this host is at epoch ${current}`);
    // The sim driver reports what it cannot do rather than pretending: never OK for an unknown migration.
    const unknown = await rejection(
      c.call.getOutgoingStatus({ epoch: current, migrationId: randomUUID(), vmId: randomUUID(), waitMs: 0 }),
    );
    expect(['NOT_FOUND', 'UNIMPLEMENTED']).toContain(unknown.code);
  });
});
