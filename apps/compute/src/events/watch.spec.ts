import { Client } from 'pg';
import { commonV1, computeV1 } from '@flotilla/contracts';
import {
  LocalCloud,
  operationDone,
  startLocalCloud,
  TestTenant,
  testDatabases,
  uniqueSchema,
  waitFor,
  WatchRecorder,
  vmRequest,
} from '@flotilla/platform';

// Real: gateway (relays the stream), compute (outbox, event feed, Watch), one host agent, gRPC on loopback,
// the database (PGlite and PostgreSQL). Fake: the hypervisor (sim driver, no latency).

const { EventType: E } = commonV1;
const hard = computeV1.ShutdownMode.SHUTDOWN_MODE_HARD;

describe.each(testDatabases())('Watch through the gateway on %s', (_db, url) => {
  let cloud: LocalCloud;
  let tenant: TestTenant;
  const recorders: WatchRecorder[] = [];
  let n = 0;

  beforeAll(async () => {
    cloud = await startLocalCloud({ databaseUrl: url, schemaPrefix: uniqueSchema('watch') });
    tenant = await cloud.tenant('watchers');
  });
  afterEach(() => {
    for (const r of recorders.splice(0)) r.close();
  });
  afterAll(() => cloud?.stop());

  const watch = async (t: TestTenant, cursor: Partial<commonV1.WatchCursor> = {}) => {
    const r = new WatchRecorder(t.clients.events, cursor);
    recorders.push(r);
    await r.ready();
    return r;
  };

  const done = (t: TestTenant, op: { operation?: commonV1.Operation }) =>
    operationDone(t.clients.operations, op.operation!.id);

  /** Creates and starts a VM, pauses it, hard-stops it and destroys it; returns its id. */
  const lifecycle = async (t: TestTenant, name = `vm-${++n}`) => {
    const created = await t.clients.vms.call.createVm(vmRequest({ name }));
    const id = created.vm!.id;
    await done(t, created);
    await done(t, await t.clients.vms.call.pauseVm({ id, requestId: '' }));
    await done(t, await t.clients.vms.call.shutdownVm({ id, requestId: '', mode: hard, timeoutMs: 0 }));
    await done(t, await t.clients.vms.call.destroyVm({ id, requestId: '' }));
    return id;
  };

  const tokens = (r: WatchRecorder[]) => r.flatMap((x) => x.events.map((m) => m.event!.token));

  it("delivers a VM's lifecycle events in order, from CREATED through each power state to DELETED", async () => {
    const r = await watch(tenant, { kinds: ['vm'] });
    const id = await lifecycle(tenant);
    await r.until(
      'the VM deleted',
      (m) => m.event?.resourceId === id && m.event.type === E.EVENT_TYPE_DELETED,
    );
    const mine = r.events.filter((m) => m.event!.resourceId === id);
    expect(mine[0].event!.type).toBe(E.EVENT_TYPE_CREATED);
    expect(mine[mine.length - 1].event!.type).toBe(E.EVENT_TYPE_DELETED);
    const states = mine.map((m) => m.vm!.powerState).filter((s, i, all) => i === 0 || s !== all[i - 1]);
    expect(states).toEqual([
      'POWER_STATE_HALTED',
      'POWER_STATE_RUNNING',
      'POWER_STATE_PAUSED',
      'POWER_STATE_HALTED',
    ]);
    const seqs = mine.map((m) => BigInt(m.event!.token));
    expect(seqs).toEqual([...seqs].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0)));
    expect(new Set(seqs).size).toBe(seqs.length);
  });

  it('opens every stream with a bookmark whose token is a resume point', async () => {
    const r = await watch(tenant);
    expect(r.messages[0].event).toMatchObject({
      type: E.EVENT_TYPE_BOOKMARK,
      token: expect.stringMatching(/^\d+$/),
    });
  });

  it('lets a client that disconnects and resumes with its last token miss nothing and repeat nothing', async () => {
    const reference = await watch(tenant);
    const first = await watch(tenant, { resumeToken: reference.messages[0].event!.token });
    const a = await lifecycle(tenant);
    await first.until(
      'the first VM deleted',
      (m) => m.event?.resourceId === a && m.event.type === E.EVENT_TYPE_DELETED,
    );
    first.close();
    // Changes while the client is away.
    const b = await lifecycle(tenant);
    const resumed = await watch(tenant, { resumeToken: first.lastToken });
    const c = await lifecycle(tenant);
    const last = (r: WatchRecorder) =>
      r.until(
        'the third VM deleted',
        (m) => m.event?.resourceId === c && m.event.type === E.EVENT_TYPE_DELETED,
      );
    await Promise.all([last(reference), last(resumed)]);
    expect(tokens([first, resumed])).toEqual(tokens([reference]));
    expect(reference.events.map((m) => m.event!.resourceId)).toEqual(expect.arrayContaining([a, b, c]));
  });

  it("does not show tenant B tenant A's VMs or operations", async () => {
    const other = await cloud.tenant(`other-${++n}`);
    const seenByB = await watch(other);
    const a = await lifecycle(tenant);
    // B's own change commits after all of A's: once B sees it, B has passed A's events.
    const marker = await other.clients.vms.call.createVm(vmRequest({ name: 'marker', start: false }));
    await seenByB.until('its own VM', (m) => m.event?.resourceId === marker.vm!.id);
    expect(seenByB.events.filter((m) => m.event!.tenantId !== other.id)).toEqual([]);
    expect(seenByB.events.some((m) => m.event!.resourceId === a || m.operation?.target?.id === a)).toBe(
      false,
    );
  });

  it('refuses to resume from a token older than the retained history with OUT_OF_RANGE', async () => {
    const r = await watch(tenant);
    const old = r.messages[0].event!.token;
    await lifecycle(tenant);
    // Retention dropped everything up to now.
    const db = new Client({ connectionString: url });
    await db.connect();
    try {
      await waitFor('the outbox to hold the new events', async () => {
        const { rows } = await db.query(
          `SELECT count(*)::int AS n FROM "${cloud.schemas.compute}".events WHERE seq > $1`,
          [old],
        );
        return rows[0].n > 2;
      });
      await db.query(`DELETE FROM "${cloud.schemas.compute}".events WHERE seq <= $1::bigint + 2`, [old]);
    } finally {
      await db.end();
    }
    const late = new WatchRecorder(tenant.clients.events, { resumeToken: old });
    recorders.push(late);
    await waitFor('the stream to end', () => late.ended);
    expect(late.error).toMatchObject({
      code: 'OUT_OF_RANGE',
      message: expect.stringContaining('older than the retained history'),
    });
  });
});
