import { status } from '@grpc/grpc-js';
import * as os from 'node:os';
import { DomainError, ErrorCode } from '@flotilla/domain';
import { toGrpcStatus } from '../grpc/status';
import { createLogger } from '../logging';
import { testDatabases, uniqueSchema } from '../testing/databases';
import { waitFor } from '../testing/probes';
import { Database, openDatabase } from './data-source';
import { EventFeed, FeedEvent, Subscription } from './event-feed';
import { appendEvents, CreateOutbox1764000000000, NewEvent } from './outbox';

// Real: the outbox table and migrations on PGlite and PostgreSQL, the feed's poller. Nothing is faked.

const logger = createLogger('event-feed-test', 'silent');

describe.each(testDatabases())('EventFeed on %s', (_db, url) => {
  let db: Database;
  let feed: EventFeed;
  const open: Subscription[] = [];

  beforeAll(async () => {
    db = await openDatabase({
      url,
      dataDir: os.tmpdir(),
      schema: uniqueSchema('feed'),
      entities: [],
      migrations: [CreateOutbox1764000000000],
      logger,
    });
  });
  beforeEach(async () => {
    feed = new EventFeed(db.dataSource, logger, 20);
    await feed.start();
  });
  afterEach(() => {
    for (const s of open.splice(0)) s.close();
    feed.stop();
  });
  afterAll(async () => {
    await db?.dataSource.query(`DROP SCHEMA IF EXISTS "${db.schema}" CASCADE`);
    await db?.close();
  });

  const event = (resourceId: string): NewEvent => ({
    kind: 'thing',
    type: 'UPDATED',
    resourceId,
    payload: { resourceId },
  });
  const commit = (...ids: string[]) => db.dataSource.transaction((m) => appendEvents(m, ids.map(event)));
  const seqsAfter = async (token: string): Promise<string[]> =>
    (
      await db.dataSource.query(
        `SELECT e.seq::text AS seq FROM "${db.schema}".events e WHERE e.seq > $1 ORDER BY e.seq`,
        [token],
      )
    ).map((r: { seq: string }) => r.seq);

  /** Reads a subscription in the background; `events` grows as they arrive. */
  const reader = async (token: string, accept: (e: FeedEvent) => boolean = () => true) => {
    const sub = await feed.subscribe(token, accept);
    open.push(sub);
    const events: FeedEvent[] = [];
    void (async () => {
      for await (const e of sub.events) events.push(e);
    })();
    return { sub, events };
  };

  it('delivers events in commit order, even when a transaction that took a sequence number commits after a later one tried to', async () => {
    const { events } = await reader(feed.currentToken());
    const first = db.dataSource.createQueryRunner();
    await first.connect();
    await first.startTransaction();
    await appendEvents(first.manager, [event('first')]);
    // The second writer must wait for the first: were it to commit first, a reader could pass its sequence
    // number and never see the first's, which is lower. Give such a wrong implementation time to do that.
    const second = commit('second');
    await new Promise((r) => setTimeout(r, 200));
    await first.commitTransaction();
    await first.release();
    await second;
    await waitFor('both events', () => events.length >= 2);
    expect(events.map((e) => e.resourceId)).toEqual(['first', 'second']);
    expect(events[0].seq < events[1].seq).toBe(true);
  });

  it('delivers events committed concurrently each once, in increasing token order', async () => {
    const { events } = await reader(feed.currentToken());
    const ids = Array.from({ length: 30 }, (_, i) => `c${i}`);
    await Promise.all(ids.map((id) => commit(id)));
    await waitFor('30 events', () => events.length >= ids.length);
    expect(events.map((e) => e.resourceId).sort()).toEqual([...ids].sort());
    for (let i = 1; i < events.length; i++) expect(events[i - 1].seq < events[i].seq).toBe(true);
  });

  it('orders tokens as numbers, not text: the event after 999 is 1000 and is delivered', async () => {
    // Regression: the feed sorted by the text of the sequence ("1000" < "999") and then dropped the events
    // it had "already passed".
    const head = BigInt(feed.currentToken());
    let boundary = 10n;
    while (boundary < head + 10n) boundary *= 10n;
    await db.dataSource.query(`SELECT setval(pg_get_serial_sequence('"${db.schema}".events', 'seq'), $1)`, [
      (boundary - 2n).toString(),
    ]);
    const { events } = await reader(feed.currentToken());
    await commit('a', 'b', 'c', 'd');
    await waitFor('4 events', () => events.length >= 4);
    expect(events.map((e) => e.seq)).toEqual([boundary - 1n, boundary, boundary + 1n, boundary + 2n]);
  });

  it('gives a subscriber resuming from a token every later event exactly once while new ones commit during its catch-up', async () => {
    const from = feed.currentToken();
    // More than one catch-up batch (500) behind, so the catch-up reads several times while writers go on.
    for (let batch = 0; batch < 6; batch++)
      await commit(...Array.from({ length: 200 }, (_, i) => `old-${batch}-${i}`));
    let writing = true;
    const writer = (async () => {
      for (let i = 0; writing || i < 20; i++) await commit(`new-${i}`);
    })();
    const { events } = await reader(from);
    await waitFor('the catch-up to reach the live events', () =>
      events.some((e) => e.resourceId.startsWith('new-')),
    );
    writing = false;
    await writer;
    const expected = await seqsAfter(from);
    await waitFor(`${expected.length} events`, () => events.length >= expected.length, { timeoutMs: 20_000 });
    expect(events.map((e) => e.seq.toString())).toEqual(expected);
  });

  it('refuses a token older than the retained history with OUT_OF_RANGE', async () => {
    const from = feed.currentToken();
    await commit('a', 'b', 'c', 'd');
    const seqs = await seqsAfter(from);
    await waitFor('the feed to pass the new events', () => feed.currentToken() === seqs[seqs.length - 1]);
    const [oldest] = seqs;
    // Retention removed the first two events after the token.
    await db.dataSource.query(`DELETE FROM "${db.schema}".events WHERE seq <= $1`, [BigInt(oldest) + 1n]);
    const refused = await feed.subscribe(from, () => true).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(DomainError);
    expect((refused as DomainError).code).toBe(ErrorCode.OutOfRange);
    expect((refused as DomainError).message).toContain('older than the retained history');
    expect(toGrpcStatus(refused as DomainError).code).toBe(status.OUT_OF_RANGE);
  });

  it('resumes from the token just before the oldest retained event', async () => {
    const from = feed.currentToken();
    await commit('keep-1', 'keep-2');
    await db.dataSource.query(`DELETE FROM "${db.schema}".events WHERE seq <= $1`, [from]);
    const { events } = await reader(from);
    await waitFor('2 events', () => events.length >= 2);
    expect(events.map((e) => e.resourceId)).toEqual(['keep-1', 'keep-2']);
  });

  it.each([['not-a-token'], ['-1'], ['1.5'], ['99999999999999999999']])(
    'refuses the malformed token %j with INVALID_ARGUMENT naming resume_token',
    async (token) => {
      const refused = await feed.subscribe(token, () => true).catch((e: unknown) => e);
      expect(refused).toBeInstanceOf(DomainError);
      expect(toGrpcStatus(refused as DomainError).code).toBe(status.INVALID_ARGUMENT);
      expect((refused as DomainError).fields.field).toBe('resume_token');
    },
  );

  it('refuses a token ahead of the stream with OUT_OF_RANGE', async () => {
    const ahead = (BigInt(feed.currentToken()) + 1000n).toString();
    const refused = await feed.subscribe(ahead, () => true).catch((e: unknown) => e);
    expect((refused as DomainError).code).toBe(ErrorCode.OutOfRange);
  });

  it('moves a subscriber past events it filters out, so its position is a safe resume point', async () => {
    const { sub, events } = await reader(feed.currentToken(), (e) => e.resourceId !== 'hidden');
    await commit('hidden');
    await commit('shown');
    await waitFor('the shown event', () => events.length >= 1);
    expect(events.map((e) => e.resourceId)).toEqual(['shown']);
    expect(sub.position()).toBe(events[0].seq.toString());
  });

  it('reads no events while nobody watches, not even when woken after a commit', async () => {
    const query = jest.spyOn(db.dataSource, 'query');
    try {
      await commit('unwatched-1', 'unwatched-2');
      feed.wake();
      const seqs = await seqsAfter('0');
      await waitFor('the head to pass the new events', () => feed.currentToken() === seqs[seqs.length - 1]);
      const reads = query.mock.calls.filter(([sql]) => /\bpayload\b/.test(sql) && /^\s*SELECT/.test(sql));
      expect(reads).toEqual([]);
    } finally {
      query.mockRestore();
    }
  });

  it('starts a watcher without a token after every event committed before it subscribed, though nobody watched then', async () => {
    // A poll interval long enough that only the subscribe itself can have moved the head.
    feed.stop();
    feed = new EventFeed(db.dataSource, logger, 60_000);
    await feed.start();
    await commit('before-1', 'before-2');
    feed.wake();
    const { events } = await reader('');
    await commit('after');
    feed.wake();
    await waitFor('the event after subscribing', () => events.length >= 1);
    expect(events.map((e) => e.resourceId)).toEqual(['after']);
  });

  it('prunes events older than the retention, keeps the newest, and then answers an old token with OUT_OF_RANGE', async () => {
    await commit('old-1', 'old-2', 'newest');
    const [{ seq: first }] = await db.dataSource.query(
      `SELECT min(seq)::text AS seq FROM "${db.schema}".events`,
    );
    await db.dataSource.query(`UPDATE "${db.schema}".events SET created_at = now() - interval '2 days'`);
    const removed = await feed.pruneBefore(new Date(Date.now() - 24 * 3600 * 1000));
    const left: Array<{ resource_id: string }> = await db.dataSource.query(
      `SELECT resource_id FROM "${db.schema}".events ORDER BY seq`,
    );
    expect(left.map((r) => r.resource_id)).toEqual(['newest']);
    expect(removed).toBeGreaterThanOrEqual(2);
    await expect(feed.subscribe(String(BigInt(first) - 1n), () => true)).rejects.toMatchObject({
      code: ErrorCode.OutOfRange,
    });
  });
});
