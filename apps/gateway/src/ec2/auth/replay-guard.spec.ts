import * as os from 'node:os';
import { createLogger, Database, openDatabase, testDatabases, uniqueSchema } from '@flotilla/platform';
import { Ec2SignatureRow, Ec2Signatures1764000000012, SignatureReplayGuard } from './replay-guard';
import type { VerifiedSignature } from './signed-request';

// Real: the gateway's ec2_signatures table and its migration on PGlite and PostgreSQL, two connection
// pools standing for two gateways (or one restarted). Fake: the prune clock (injected).

const logger = createLogger('replay-guard-test', 'silent');

describe.each(testDatabases())('SignatureReplayGuard on %s', (_db, url) => {
  const schema = uniqueSchema('ec2sig');
  const open: Database[] = [];
  const guards: SignatureReplayGuard[] = [];
  let now = Date.now();

  /** One gateway: its own pool on the shared schema (migrations run once, then are found done). */
  const gateway = async () => {
    const db = await openDatabase({
      url,
      dataDir: os.tmpdir(),
      schema,
      entities: [Ec2SignatureRow],
      migrations: [Ec2Signatures1764000000012],
      logger,
    });
    open.push(db);
    const guard = new SignatureReplayGuard(db.dataSource, { now: () => now });
    guards.push(guard);
    return { db, guard };
  };

  afterAll(async () => {
    for (const g of guards) g.close();
    await open[0]?.dataSource.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    for (const db of open) await db.close();
  });

  let n = 0;
  const signature = (validUntil = now + 15 * 60_000): VerifiedSignature => ({
    accessKeyId: 'AKIDEXAMPLE',
    signature: (++n).toString(16).padStart(64, '0'),
    version: 4,
    validUntil,
  });

  it('claims a signature the first time and refuses it the second', async () => {
    const { guard } = await gateway();
    const s = signature();
    expect(await guard.claim(s)).toBe(true);
    expect(await guard.claim(s)).toBe(false);
    expect(await guard.claim(signature())).toBe(true);
  });

  it('still refuses a claimed signature after a gateway restart, and on another gateway of the same database', async () => {
    const first = await gateway();
    const s = signature();
    expect(await first.guard.claim(s)).toBe(true);
    first.guard.close();
    await first.db.close();
    open.splice(open.indexOf(first.db), 1);

    const restarted = await gateway();
    expect(await restarted.guard.claim(s)).toBe(false);
    const other = await gateway();
    expect(await other.guard.claim(s)).toBe(false);
  });

  it('lets exactly one of many concurrent claims of one signature win', async () => {
    const [a, b] = [await gateway(), await gateway()];
    const s = signature();
    const results = await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 ? a : b).guard.claim(s)));
    expect(results.filter(Boolean)).toHaveLength(1);
  });

  it('keeps the SigV2 and SigV4 spaces apart', async () => {
    const { guard } = await gateway();
    const s = signature();
    expect(await guard.claim(s)).toBe(true);
    expect(await guard.claim({ ...s, version: 2 })).toBe(true);
  });

  it('prunes rows once their window (plus a grace for other gateways’ clocks) has closed', async () => {
    const { db, guard } = await gateway();
    const closing = signature(now + 1000);
    const open = signature(now + 60 * 60_000);
    await guard.claim(closing);
    await guard.claim(open);
    const stored = async (s: VerifiedSignature) =>
      (await db.dataSource.manager.countBy(Ec2SignatureRow, { signature: `v4:${s.signature}` })) === 1;

    now += 2000; // closed, but within the grace
    await guard.prune();
    expect(await stored(closing)).toBe(true);

    now += 10 * 60_000;
    expect(await guard.prune()).toBeGreaterThanOrEqual(1);
    expect(await stored(closing)).toBe(false);
    expect(await stored(open)).toBe(true);
    expect(await guard.claim(open)).toBe(false);
  });
});
