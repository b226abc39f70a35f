import { Client } from 'pg';
import { commonV1, computeV1 } from '@flotilla/contracts';
import {
  LocalCloud,
  rejection,
  startLocalCloud,
  TestTenant,
  testDatabases,
  uniqueSchema,
  waitFor,
  WatchRecorder,
  vmRequest,
} from '@flotilla/platform';

// Real: compute as a child process (node dist/apps/compute/src/main.js) that is SIGKILLed with operations in
// flight and started again, the gateway and two host agents in this process, gRPC on loopback, the
// database (PGlite and PostgreSQL). Fake: the hypervisor (sim driver, 300 ms per power operation, so
// that operations are inside agent calls when compute dies).

const { OperationState: S } = commonV1;
const unfinished = new Set<string>([S.OPERATION_STATE_PENDING, S.OPERATION_STATE_RUNNING]);

describe.each(testDatabases())('compute killed with operations in flight on %s', (_db, url) => {
  let cloud: LocalCloud;
  let tenant: TestTenant;
  const recorders: WatchRecorder[] = [];

  beforeAll(async () => {
    cloud = await startLocalCloud({
      databaseUrl: url,
      schemaPrefix: uniqueSchema('crash'),
      agents: 2,
      simLatencyMs: 300,
      computeAsProcess: true,
      computeEnv: { FLOTILLA_HEARTBEAT_INTERVAL_MS: '300' },
    });
    tenant = await cloud.tenant('crash');
  }, 60_000);
  afterAll(async () => {
    for (const r of recorders) r.close();
    await cloud?.stop();
  });

  const allOperations = async () =>
    (
      await tenant.clients.operations.call.listOperations({
        page: { pageSize: 1000, pageToken: '', filter: '' },
      })
    ).operations;

  it('finishes every operation, keeps every committed VM, gets its agents back and lets a Watch resume without gaps', async () => {
    const watcher = new WatchRecorder(tenant.clients.events, { kinds: ['vm', 'operation'] });
    recorders.push(watcher);
    await watcher.ready();
    const from = watcher.messages[0].event!.token;

    // Twelve creates that start their VM, sent at once; compute dies while they are being carried out.
    const creates = Array.from({ length: 12 }, (_, i) =>
      tenant.clients.vms.call.createVm(vmRequest({ requestId: `crash-${i}`, name: `crash-${i}` })).then(
        (r) => ({ vm: r.vm!, operation: r.operation! }),
        () => undefined,
      ),
    );
    const inFlight = await waitFor('an operation inside its agent call', async () => {
      const running = (await allOperations()).filter(
        (o) => o.state === S.OPERATION_STATE_RUNNING && o.step.startsWith('starting on host'),
      );
      return running.length > 0 && running;
    });
    await cloud.compute.kill();
    const committed = (await Promise.all(creates)).filter((c) => c !== undefined);
    expect(committed.length).toBeGreaterThan(0);
    await waitFor('the Watch stream to end with compute', () => watcher.ended);

    await cloud.compute.restart();

    const operations = await waitFor(
      'every operation finished',
      async () => {
        const ops = await allOperations();
        return ops.length > 0 && ops.every((o) => !unfinished.has(o.state)) && ops;
      },
      { timeoutMs: 30_000 },
    );
    // Operations cut off inside their agent call are resumed (agent commands are idempotent) and succeed.
    expect(operations.filter((o) => inFlight.some((f) => f.id === o.id)).map((o) => o.state)).toEqual(
      inFlight.map(() => S.OPERATION_STATE_SUCCEEDED),
    );
    const failedWithoutReason = operations.filter(
      (o) => o.state !== S.OPERATION_STATE_SUCCEEDED && !o.error?.message,
    );
    expect(failedWithoutReason).toEqual([]);

    // The agents are back. A host silent for longer than the heartbeat timeout while compute was down (a
    // busy machine) went DOWN after the restart and its VMs read UNKNOWN until its agent reported them again.
    const hosts = await cloud.hostsReady(2);
    expect(hosts.filter((h) => h.state === computeV1.HostState.HOST_STATE_ENABLED)).toHaveLength(2);
    const started = committed.filter(
      ({ operation }) => operations.find((o) => o.id === operation.id)!.state === S.OPERATION_STATE_SUCCEEDED,
    );
    const vms = await waitFor('the started VMs reported RUNNING by their agents', async () => {
      const listing = await tenant.clients.vms.call.listVms({
        page: { pageSize: 1000, pageToken: '', filter: '' },
      });
      const running = (id: string) =>
        listing.vms.find((v) => v.id === id)?.powerState === computeV1.PowerState.POWER_STATE_RUNNING;
      return started.every(({ vm }) => running(vm.id)) && listing.vms;
    });
    const listed = new Map(vms.map((v) => [v.id, v]));
    for (const { vm, operation } of committed) {
      expect(listed.get(vm.id)?.name).toBe(vm.name);
      const finished = operations.find((o) => o.id === operation.id)!;
      if (finished.state === S.OPERATION_STATE_SUCCEEDED)
        expect(listed.get(vm.id)).toMatchObject({
          powerState: computeV1.PowerState.POWER_STATE_RUNNING,
          currentOperationId: '',
        });
    }
    // Every VM the pool has is one a create committed, and none is left waiting on an operation.
    expect(vms.every((v) => v.currentOperationId === '')).toBe(true);

    // The watcher reconnects with the last token it had and must get exactly what the outbox holds after it.
    const resumed = new WatchRecorder(tenant.clients.events, {
      resumeToken: watcher.lastToken,
      kinds: ['vm', 'operation'],
    });
    recorders.push(resumed);
    const expected = await outboxTokens(url, cloud.schemas.compute, tenant.id, from);
    const last = expected[expected.length - 1];
    await resumed.until(`token ${last}`, (m) => m.event!.token === last);
    const lastExpected = BigInt(last);
    const received = [...watcher.events, ...resumed.events]
      .map((m) => m.event!.token)
      .filter((t) => BigInt(t) <= lastExpected);
    expect(received).toEqual(expected);
  }, 60_000);

  it('answers UNAVAILABLE, naming the compute service, while compute is down', async () => {
    await cloud.compute.kill();
    try {
      const refused = await rejection(tenant.clients.vms.call.listVms({ page: undefined }));
      expect(refused.code).toBe('UNAVAILABLE');
      expect(refused.message).toContain('compute service');
    } finally {
      await cloud.compute.restart();
    }
  }, 60_000);
});

/** Tokens of the tenant's vm and operation events after `from`, in order, read straight from the outbox. */
async function outboxTokens(url: string, schema: string, tenantId: string, from: string): Promise<string[]> {
  const db = new Client({ connectionString: url });
  await db.connect();
  try {
    const { rows } = await db.query(
      `SELECT e.seq::text AS seq FROM "${schema}".events e
        WHERE e.seq > $1 AND e.tenant_id = $2 AND e.kind IN ('vm', 'operation') ORDER BY e.seq`,
      [from, tenantId],
    );
    return rows.map((r: { seq: string }) => r.seq);
  } finally {
    await db.end();
  }
}
