import {
  LocalCloud,
  operationDone,
  rejection,
  startLocalCloud,
  testDatabases,
  uniqueSchema,
  vmRequest,
} from '@flotilla/platform';

// Real: gateway, compute (flavor catalogue), one host agent, gRPC on loopback, the database (PGlite and
// PostgreSQL). Fake: the hypervisor (sim driver).

describe.each(testDatabases())('flavors on %s', (_db, url) => {
  let cloud: LocalCloud;

  beforeAll(async () => {
    cloud = await startLocalCloud({ databaseUrl: url, schemaPrefix: uniqueSchema('flavor') });
  });
  afterAll(() => cloud?.stop());

  const flavors = () => cloud.admin.flavors.call;

  it('lists the default flavors, smallest first', async () => {
    const { flavors: list } = await flavors().listFlavors({ page: undefined });
    expect(list.map((f) => f.name)).toEqual(['m1.tiny', 'm1.small', 'm1.medium', 'm1.large', 'm1.xlarge']);
  });

  it('deletes an unused flavor, and the service keeps answering', async () => {
    // Regression: the delete read the flavor outside its own transaction, which on PGlite (one session)
    // waited for that transaction forever and wedged every later query.
    await flavors().createFlavor({ name: 'short-lived', vcpus: 1, memoryMib: 64, rootDiskGib: 1 });
    await flavors().deleteFlavor({ id: 'short-lived' }, { deadlineMs: 5000 });
    expect(await rejection(flavors().getFlavor({ id: 'short-lived' }, { deadlineMs: 5000 }))).toMatchObject({
      code: 'NOT_FOUND',
    });
  });

  it('refuses to delete a flavor a VM uses with FAILED_PRECONDITION', async () => {
    const tenant = await cloud.tenant('flavor-users');
    await flavors().createFlavor({ name: 'in-use', vcpus: 1, memoryMib: 64, rootDiskGib: 1 });
    const created = await tenant.clients.vms.call.createVm(
      vmRequest({ name: 'user', flavorId: 'in-use', start: false }),
    );
    await operationDone(tenant.clients.operations, created.operation!.id);
    const refused = await rejection(flavors().deleteFlavor({ id: 'in-use' }, { deadlineMs: 5000 }));
    expect(refused).toMatchObject({
      code: 'FAILED_PRECONDITION',
      message: expect.stringContaining('is used by 1 VM(s)'),
    });
  });

  it('answers ALREADY_EXISTS naming the field for a flavor name that is taken', async () => {
    expect(
      await rejection(flavors().createFlavor({ name: 'm1.tiny', vcpus: 1, memoryMib: 64, rootDiskGib: 1 })),
    ).toMatchObject({
      code: 'ALREADY_EXISTS',
      field: 'name',
    });
  });

  it('answers PERMISSION_DENIED when a tenant creates a flavor', async () => {
    const tenant = await cloud.tenant('flavor-wannabe');
    const refused = await rejection(
      tenant.clients.flavors.call.createFlavor({ name: 'mine', vcpus: 1, memoryMib: 64, rootDiskGib: 1 }),
    );
    expect(refused.code).toBe('PERMISSION_DENIED');
  });
});
