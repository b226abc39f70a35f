import { Metadata, status } from '@grpc/grpc-js';
import { computeV1, gatewayV1 } from '@flotilla/contracts';
import {
  cloudClients,
  CloudClients,
  LocalCloud,
  operationDone,
  rejection,
  startLocalCloud,
  TestTenant,
  testDatabases,
  uniqueSchema,
  vmRequest,
} from '@flotilla/platform';

// Real: gateway (token auth, relaying), compute (tenant scoping, roles), one host agent, gRPC on loopback,
// the database (PGlite and PostgreSQL). Fake: the hypervisor (sim driver).

const createRequest = (name: string): computeV1.CreateVmRequest => vmRequest({ name });

describe.each(testDatabases())('access through the gateway on %s', (_db, url) => {
  let cloud: LocalCloud;
  let a: TestTenant;
  let b: TestTenant;
  let vmOfA: computeV1.Vm;

  beforeAll(async () => {
    cloud = await startLocalCloud({ databaseUrl: url, schemaPrefix: uniqueSchema('access') });
    a = await cloud.tenant('tenant-a');
    b = await cloud.tenant('tenant-b');
    const created = await a.clients.vms.call.createVm(createRequest('a-web'));
    await operationDone(a.clients.operations, created.operation!.id);
    vmOfA = created.vm!;
  });
  afterAll(() => cloud?.stop());

  describe('tenant isolation', () => {
    it("answers NOT_FOUND when tenant B reads tenant A's VM", async () => {
      expect(await rejection(b.clients.vms.call.getVm({ id: vmOfA.id }))).toMatchObject({
        code: 'NOT_FOUND',
      });
    });

    it("answers NOT_FOUND when tenant B asks for a power operation on tenant A's VM, and the VM keeps running", async () => {
      const refused = await rejection(
        b.clients.vms.call.shutdownVm({
          id: vmOfA.id,
          requestId: '',
          mode: computeV1.ShutdownMode.SHUTDOWN_MODE_HARD,
          timeoutMs: 0,
        }),
      );
      expect(refused.code).toBe('NOT_FOUND');
      expect((await a.clients.vms.call.getVm({ id: vmOfA.id })).vm!.powerState).toBe(
        computeV1.PowerState.POWER_STATE_RUNNING,
      );
    });

    it("answers NOT_FOUND when tenant B reads the operation that created tenant A's VM", async () => {
      const { operations } = await a.clients.operations.call.listOperations({
        page: { pageSize: 10, pageToken: '', filter: `target_id=${vmOfA.id}` },
      });
      expect(operations).not.toHaveLength(0);
      expect(await rejection(b.clients.operations.call.getOperation({ id: operations[0].id }))).toMatchObject(
        { code: 'NOT_FOUND' },
      );
    });

    it("does not list tenant A's VMs or operations to tenant B", async () => {
      const own = await b.clients.vms.call.createVm({ ...createRequest('b-web'), start: false });
      const { vms } = await b.clients.vms.call.listVms({
        page: { pageSize: 1000, pageToken: '', filter: '' },
      });
      expect(vms.map((v) => v.id)).toEqual([own.vm!.id]);
      const { operations } = await b.clients.operations.call.listOperations({
        page: { pageSize: 1000, pageToken: '', filter: '' },
      });
      expect(operations.every((o) => o.tenantId === b.id)).toBe(true);
    });

    it("lists every tenant's VMs to the pool-admin", async () => {
      const { vms } = await cloud.admin.vms.call.listVms({
        page: { pageSize: 1000, pageToken: '', filter: '' },
      });
      expect(vms.map((v) => v.id)).toContain(vmOfA.id);
    });
  });

  describe('authentication', () => {
    const listWith = (clients: CloudClients) =>
      clients.vms.call.listVms({ page: { pageSize: 1, pageToken: '', filter: '' } });

    it('answers UNAUTHENTICATED without a token, saying how to send one', async () => {
      const refused = await rejection(listWith(cloud.clients()));
      expect(refused.code).toBe('UNAUTHENTICATED');
      expect(refused.message).toContain('authorization: Bearer');
    });

    it.each([
      ['not a bearer header', 'Basic dXNlcjpwYXNz'],
      ['a token of the wrong shape', 'Bearer not-a-flotilla-token'],
      ['a well-formed token nobody issued', `Bearer flt_${'A'.repeat(43)}`],
    ])('answers UNAUTHENTICATED for %s', async (_what, header) => {
      const metadata = new Metadata();
      metadata.set('authorization', header);
      const clients = cloud.clients();
      expect(await rejection(clients.vms.call.listVms({ page: undefined }, { metadata }))).toMatchObject({
        code: 'UNAUTHENTICATED',
      });
    });

    it('answers UNAUTHENTICATED for a revoked token at once', async () => {
      const t = await cloud.tenant('revoked', gatewayV1.Role.ROLE_READ_ONLY);
      await listWith(t.clients);
      const { tokens } = await cloud.admin.tokens.call.listTokens({
        page: { pageSize: 10, pageToken: '', filter: `tenant_id=${t.id}` },
      });
      await cloud.admin.tokens.call.revokeToken({ id: tokens[0].id });
      expect(await rejection(listWith(t.clients))).toMatchObject({ code: 'UNAUTHENTICATED' });
    });

    it('refuses a Watch stream without a token with UNAUTHENTICATED', async () => {
      const clients = cloudClients(cloud.gatewayAddress);
      try {
        const stream = clients.events.stream('Watch', { cursor: { resumeToken: '', kinds: [] } });
        const failure = await new Promise<{ code?: number }>((resolve) => {
          stream.on('error', resolve);
          stream.on('data', () => resolve({}));
        });
        expect(failure.code).toBe(status.UNAUTHENTICATED);
      } finally {
        for (const c of Object.values(clients)) c.close();
      }
    });
  });

  describe('roles', () => {
    it('answers PERMISSION_DENIED when a vm-operator token creates a VM, naming the role it needs', async () => {
      const operator = await cloud.tenant('operators', gatewayV1.Role.ROLE_VM_OPERATOR);
      const refused = await rejection(operator.clients.vms.call.createVm(createRequest('not-allowed')));
      expect(refused.code).toBe('PERMISSION_DENIED');
      expect(refused.message).toContain('needs role vm-admin or above; this token has vm-operator');
    });

    it('answers PERMISSION_DENIED when a read-only token asks for a power operation', async () => {
      const reader = await cloud.tenant('readers', gatewayV1.Role.ROLE_READ_ONLY);
      const refused = await rejection(reader.clients.vms.call.pauseVm({ id: vmOfA.id, requestId: '' }));
      expect(refused.code).toBe('PERMISSION_DENIED');
    });

    it('answers PERMISSION_DENIED when a tenant token lists hosts', async () => {
      expect(await rejection(a.clients.hosts.call.listHosts({ page: undefined }))).toMatchObject({
        code: 'PERMISSION_DENIED',
      });
    });

    it('answers PERMISSION_DENIED when a tenant token creates a tenant', async () => {
      const refused = await rejection(
        a.clients.tenants.call.createTenant({ requestId: '', name: 'sneaky', description: '', labels: {} }),
      );
      expect(refused.code).toBe('PERMISSION_DENIED');
    });
  });
});
