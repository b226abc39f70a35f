import { randomUUID } from 'node:crypto';
import * as os from 'node:os';
import {
  appendEvents,
  createLogger,
  Database,
  EventFeed,
  openDatabase,
  OutboxEvent,
  testDatabases,
  uniqueSchema,
  operationRow,
} from '@flotilla/platform';
import { ComputeStore } from '../persistence/compute-store';
import { computeEntities, notMigrating, OperationRow, VmRow } from '../persistence/entities';
import { computeMigrations } from '../persistence/migrations';
import { CreateBatcher, PreparedCreate } from './create-batcher';

// Real: the compute schema and its migrations on PGlite and PostgreSQL, group-committed creates, several
// batchers (as several compute replicas) on one database. Nothing is faked.

const logger = createLogger('create-batcher-test', 'silent');

function prepared(opts: {
  name: string;
  tenantId?: string;
  requestId?: string;
  flavorId?: string;
}): PreparedCreate {
  const now = new Date();
  const vm: VmRow = {
    id: randomUUID(),
    name: opts.name,
    tenantId: opts.tenantId ?? 'tenant-a',
    labels: { app: 'web' },
    flavorId: opts.flavorId ?? null,
    vcpus: 1,
    memoryMib: 64,
    rootDiskGib: 0,
    boot: {},
    powerState: 'HALTED',
    powerStateReason: '',
    hostId: null,
    currentOperationId: null,
    antiAffinityGroup: '',
    requiredHostLabels: {},
    nics: [{ mac: '52:54:00:00:00:01', forwards: [{ guestPort: 80 }] }],
    isSnapshot: false,
    snapshotOf: null,
    snapshotTime: null,
    requestId: opts.requestId ?? null,
    ...notMigrating,
    version: 1,
    createdAt: now,
    updatedAt: now,
  };
  const operation = operationRow({
    kind: 'vm.create',
    target: { kind: 'vm', id: vm.id, name: vm.name },
    tenantId: vm.tenantId,
    requestId: opts.requestId,
    params: { start: false },
    succeeded: true,
    now,
  });
  return { vm, operation };
}

const rejectionOf = (p: Promise<unknown>) =>
  p.then(
    () => undefined,
    (e: unknown) => e as Error & { code?: string; fields?: Record<string, string> },
  );

describe.each(testDatabases())('CreateBatcher on %s', (_db, url) => {
  const schema = uniqueSchema('batch');
  const open: Array<{ db: Database; feed: EventFeed }> = [];
  let store: ComputeStore;
  let batcher: CreateBatcher;
  let n = 0;
  const name = (prefix = 'vm') => `${prefix}-${++n}`;

  /** One compute replica: its own connection pool, event feed and batcher. */
  const replica = async () => {
    const db = await openDatabase({
      url,
      dataDir: os.tmpdir(),
      schema,
      entities: computeEntities,
      migrations: computeMigrations,
      logger,
    });
    const feed = new EventFeed(db.dataSource, logger);
    await feed.start();
    open.push({ db, feed });
    const s = new ComputeStore(db.dataSource, feed);
    return { store: s, batcher: new CreateBatcher(s) };
  };

  beforeAll(async () => {
    ({ store, batcher } = await replica());
  });
  afterAll(async () => {
    for (const { feed } of open) feed.stop();
    await open[0]?.db.dataSource.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    for (const { db } of open.reverse()) await db.close();
  });

  const vmRows = (ids: string[]) =>
    store.manager.findBy(
      VmRow,
      ids.map((id) => ({ id })),
    );
  const eventsOf = (ids: string[]) =>
    store.manager
      .createQueryBuilder(OutboxEvent, 'e')
      .where('e.resource_id IN (:...ids)', { ids })
      .orderBy('e.seq')
      .getMany();
  /** The transaction that wrote each row: creates of one batch share it. */
  const xmins = async (ids: string[]) =>
    new Set(
      (
        await store.manager.query(`SELECT xmin::text AS x FROM "${schema}".vms WHERE id = ANY($1::uuid[])`, [
          ids,
        ])
      ).map((r: { x: string }) => r.x),
    );

  it('commits creates submitted together in one transaction and answers each caller with its own VM and operation', async () => {
    const creates = [name(), name(), name(), name()].map((n) => prepared({ name: n }));
    const outcomes = await Promise.all(creates.map((c) => batcher.submit(c)));
    outcomes.forEach((o, i) => {
      expect(o.isNew).toBe(true);
      expect(o.vm.id).toBe(creates[i].vm.id);
      expect(o.operation.id).toBe(creates[i].operation.id);
    });
    const ids = creates.map((c) => c.vm.id);
    expect((await vmRows(ids)).map((v) => v.name).sort()).toEqual(creates.map((c) => c.vm.name).sort());
    expect(await xmins(ids)).toHaveProperty('size', 1);
    const ops = await store.manager.findBy(
      OperationRow,
      creates.map((c) => ({ id: c.operation.id })),
    );
    expect(ops.map((o) => [o.targetId, o.state, o.kind]).sort()).toEqual(
      ids.map((id) => [id, 'SUCCEEDED', 'vm.create']).sort(),
    );
  });

  it('appends each new VM event then its operation event, in submission order with consecutive sequence numbers', async () => {
    const creates = [name(), name(), name()].map((n) => prepared({ name: n }));
    await Promise.all(creates.map((c) => batcher.submit(c)));
    const evs = await eventsOf(creates.flatMap((c) => [c.vm.id, c.operation.id]));
    expect(evs.map((e) => [e.kind, e.type, e.resourceId, e.tenantId])).toEqual(
      creates.flatMap((c) => [
        ['vm', 'CREATED', c.vm.id, 'tenant-a'],
        ['operation', 'CREATED', c.operation.id, 'tenant-a'],
      ]),
    );
    const seqs = evs.map((e) => BigInt(e.seq));
    seqs.forEach((s, i) => i && expect(s).toBe(seqs[i - 1] + 1n));
    expect(evs[0].payload).toMatchObject({
      id: creates[0].vm.id,
      name: creates[0].vm.name,
      labels: { app: 'web' },
    });
  });

  it('answers ALREADY_EXISTS naming the field only to the create whose name is taken, in the batch or before it', async () => {
    const taken = name('taken');
    await batcher.submit(prepared({ name: taken }));
    const twice = name('twice');
    const [ok1, before, first, second, ok2] = await Promise.allSettled(
      [name(), taken, twice, twice, name()].map((n) => batcher.submit(prepared({ name: n }))),
    );
    expect([ok1.status, first.status, ok2.status]).toEqual(['fulfilled', 'fulfilled', 'fulfilled']);
    for (const refused of [before, second]) {
      expect(refused.status).toBe('rejected');
      const e = (refused as PromiseRejectedResult).reason as { code: string; fields: Record<string, string> };
      expect(e.code).toBe('ALREADY_EXISTS');
      expect(e.fields.field).toBe('name');
    }
  });

  it('lets two tenants use the same name in one batch', async () => {
    const shared = name('shared');
    const [a, b] = await Promise.all([
      batcher.submit(prepared({ name: shared, tenantId: 'tenant-a' })),
      batcher.submit(prepared({ name: shared, tenantId: 'tenant-b' })),
    ]);
    expect(a.vm.id).not.toBe(b.vm.id);
    expect([a.isNew, b.isNew]).toEqual([true, true]);
  });

  it('answers repeats of a request_id inside one batch with the first create, and commits one VM', async () => {
    const requestId = randomUUID();
    const repeats = [name(), name(), name()].map((n) => prepared({ name: n, requestId }));
    const outcomes = await Promise.all(repeats.map((c) => batcher.submit(c)));
    expect(outcomes.map((o) => [o.vm.id, o.operation.id, o.isNew])).toEqual([
      [repeats[0].vm.id, repeats[0].operation.id, true],
      [repeats[0].vm.id, repeats[0].operation.id, false],
      [repeats[0].vm.id, repeats[0].operation.id, false],
    ]);
    expect(await store.manager.countBy(VmRow, { tenantId: 'tenant-a', requestId })).toBe(1);
  });

  it('answers a request_id repeated in a later batch with the first VM and operation as they were recorded', async () => {
    const requestId = randomUUID();
    const first = await batcher.submit(prepared({ name: name(), requestId }));
    const again = await batcher.submit(prepared({ name: name(), requestId }));
    expect(again.isNew).toBe(false);
    expect(again.vm).toMatchObject({ id: first.vm.id, name: first.vm.name, requestId });
    expect(again.operation).toMatchObject({ id: first.operation.id, state: 'SUCCEEDED' });
    expect(await eventsOf([again.vm.id])).toHaveLength(1);
  });

  it('fails only the create that makes the batch statement fail and commits the others', async () => {
    const good = [name(), name()].map((n) => prepared({ name: n }));
    // The flavor does not exist: its foreign key fails the whole statement, then this create alone.
    const bad = prepared({ name: name(), flavorId: randomUUID() });
    const [g1, b, g2] = await Promise.allSettled([good[0], bad, good[1]].map((c) => batcher.submit(c)));
    expect([g1.status, b.status, g2.status]).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect((await vmRows([...good, bad].map((c) => c.vm.id))).map((v) => v.id).sort()).toEqual(
      good.map((c) => c.vm.id).sort(),
    );
    expect(await eventsOf([bad.vm.id])).toHaveLength(0);
  });

  it('keeps committing after a failed batch', async () => {
    await rejectionOf(batcher.submit(prepared({ name: name(), flavorId: randomUUID() })));
    const later = await batcher.submit(prepared({ name: name() }));
    expect(later.isNew).toBe(true);
  });

  it('takes the outbox lock, so its events commit after those of a transaction that holds it', async () => {
    const other = await replica();
    const runner = other.store.dataSource.createQueryRunner();
    await runner.connect();
    await runner.startTransaction();
    try {
      await appendEvents(runner.manager, [
        { kind: 'test', type: 'UPDATED', resourceId: 'held', payload: {} },
      ]);
      let done = false;
      const create = prepared({ name: name() });
      const pending = batcher.submit(create).finally(() => (done = true));
      await new Promise((r) => setTimeout(r, 300));
      expect(done).toBe(false);
      await runner.commitTransaction();
      await pending;
      const [held] = await eventsOf(['held']);
      const [created] = await eventsOf([create.vm.id]);
      expect(BigInt(created.seq)).toBeGreaterThan(BigInt(held.seq));
    } finally {
      if (runner.isTransactionActive) await runner.rollbackTransaction();
      await runner.release();
    }
  });

  it('creates each name once when several replicas race with the same names and request_ids', async () => {
    const others = [await replica(), await replica()];
    const names = Array.from({ length: 20 }, () => name('race'));
    const byName = new Map(names.map((n) => [n, randomUUID()]));
    const attempts = [batcher, ...others.map((o) => o.batcher)].flatMap((b, r) =>
      names.map((n, i) =>
        // Half the names come with one request_id shared by every replica (retries of one request), the
        // other half with a request_id of their own per replica (different requests for one name).
        b.submit(prepared({ name: n, requestId: i % 2 ? byName.get(n) : `${r}-${n}` })),
      ),
    );
    const results = await Promise.allSettled(attempts);
    const created = results.flatMap((r) => (r.status === 'fulfilled' && r.value.isNew ? [r.value.vm] : []));
    expect(created.map((v) => v.name).sort()).toEqual([...names].sort());
    results.forEach((r, k) => {
      const i = k % names.length;
      if (i % 2) expect(r.status).toBe('fulfilled');
      else if (r.status === 'rejected') expect((r.reason as { code: string }).code).toBe('ALREADY_EXISTS');
    });
    const evs = await eventsOf(created.map((v) => v.id));
    expect(evs).toHaveLength(created.length);
  });
});
