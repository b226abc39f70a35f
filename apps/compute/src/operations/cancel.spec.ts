import { commonV1 } from '@flotilla/contracts';
import {
  LocalCloud,
  operationDone,
  rejection,
  startLocalCloud,
  TestTenant,
  testDatabases,
  uniqueSchema,
  waitFor,
  vmRequest,
} from '@flotilla/platform';

// Real: gateway, compute (operation records, runner), one host agent, gRPC on loopback, the database
// (PGlite and PostgreSQL). Fake: the hypervisor (sim driver, 2 s per power operation so that a start
// is caught inside its agent call even on a loaded CI machine: 500 ms once was not).

const { OperationState: S } = commonV1;

describe.each(testDatabases())('cancelling operations on %s', (_db, url) => {
  let cloud: LocalCloud;
  let tenant: TestTenant;
  let n = 0;

  beforeAll(async () => {
    cloud = await startLocalCloud({
      databaseUrl: url,
      schemaPrefix: uniqueSchema('cancel'),
      simLatencyMs: 2000,
    });
    tenant = await cloud.tenant('cancel');
  });
  afterAll(() => cloud?.stop());

  const create = (start: boolean) =>
    tenant.clients.vms.call.createVm(vmRequest({ name: `vm-${++n}`, start }));

  it('refuses to cancel a finished operation with FAILED_PRECONDITION, and the service keeps answering', async () => {
    // Regression: the cancel read the operation outside its own transaction, which on PGlite (one session)
    // waited for that transaction forever and wedged every later query.
    const created = await create(false);
    await operationDone(tenant.clients.operations, created.operation!.id);
    const refused = await rejection(
      tenant.clients.operations.call.cancelOperation({ id: created.operation!.id }, { deadlineMs: 5000 }),
    );
    expect(refused).toMatchObject({
      code: 'FAILED_PRECONDITION',
      message: expect.stringContaining('already finished (SUCCEEDED)'),
    });
    const { vm } = await tenant.clients.vms.call.getVm({ id: created.vm!.id }, { deadlineMs: 5000 });
    expect(vm!.id).toBe(created.vm!.id);
  });

  it('refuses to cancel an operation past its point of no return, which then finishes on its own', async () => {
    const created = await create(true);
    const id = created.operation!.id;
    await waitFor('the start inside its agent call', async () => {
      const { operation } = await tenant.clients.operations.call.getOperation({ id });
      return operation!.step.startsWith('starting on host');
    });
    const refused = await rejection(
      tenant.clients.operations.call.cancelOperation({ id }, { deadlineMs: 5000 }),
    );
    expect(refused).toMatchObject({
      code: 'FAILED_PRECONDITION',
      message: expect.stringContaining('point of no return'),
    });
    expect((await operationDone(tenant.clients.operations, id)).state).toBe(S.OPERATION_STATE_SUCCEEDED);
  });

  it("answers NOT_FOUND when another tenant cancels a tenant's operation", async () => {
    const other = await cloud.tenant(`other-${++n}`);
    const created = await create(false);
    expect(
      await rejection(other.clients.operations.call.cancelOperation({ id: created.operation!.id })),
    ).toMatchObject({
      code: 'NOT_FOUND',
    });
    await operationDone(tenant.clients.operations, created.operation!.id);
  });
});
