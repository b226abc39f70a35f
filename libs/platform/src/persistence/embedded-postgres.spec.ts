import { Client } from 'pg';
import { wholeMessagesEnd } from './embedded-postgres';

// Real: the embedded PGlite that jest's global setup serves over the wire protocol (built from this
// directory's embedded-postgres.ts by tools/build.mjs), and several `pg` connections to it.

const url = process.env.FLOTILLA_TEST_PGLITE_URL;

describe('embedded PostgreSQL (PGlite over the wire protocol)', () => {
  let clients: Client[] = [];

  beforeAll(async () => {
    if (!url)
      throw new Error('FLOTILLA_TEST_PGLITE_URL is unset: run through jest (global setup starts PGlite)');
    clients = Array.from({ length: 6 }, () => new Client({ connectionString: url }));
    await Promise.all(clients.map((c) => c.connect()));
  });
  afterAll(() => Promise.all(clients.map((c) => c.end())));

  it('answers concurrent parameterised queries from many connections each with its own parameters (electric-sql/pglite#1046)', async () => {
    // Each query is a Parse/Bind/Execute/Sync batch; interleaved batches bind to another connection's
    // statement and fail or return its rows.
    // Each connection sends its own statement text (and parameter count), so a batch bound to another
    // connection's statement shows.
    // Large parameters make a batch arrive in several socket reads, between which others' messages queue.
    const padding = 'x'.repeat(256 * 1024);
    const query = (k: number, i: number) =>
      clients[k]
        .query(
          `SELECT $1::int AS n, ${k} AS k, length($2::text) AS len${', $3::int AS extra'.repeat(k % 2)}`,
          k % 2 ? [i, padding, k] : [i, padding],
        )
        .then(
          (r) => `${r.rows[0].n}:${r.rows[0].k}`,
          (e: Error) => `error: ${e.message}`,
        );
    const answers = await Promise.all(Array.from({ length: 120 }, (_, i) => query(i % clients.length, i)));
    expect(answers).toEqual(Array.from({ length: 120 }, (_, i) => `${i}:${i % clients.length}`));
  });

  it('keeps serving other connections after one sends a statement that fails', async () => {
    const [bad, good] = clients;
    const results = await Promise.all([
      bad.query('SELECT $1::int / 0 AS boom', [1]).then(
        () => 'no error',
        (e: Error) => e.message,
      ),
      good.query('SELECT $1::text AS ok', ['still here']).then((r) => r.rows[0].ok),
    ]);
    expect(results).toEqual(['division by zero', 'still here']);
    expect((await bad.query('SELECT $1::int AS n', [7])).rows[0].n).toBe(7);
  });
});

describe('wholeMessagesEnd: the messages handed to PGlite in one call', () => {
  const message = (type: string, body = 'x') => {
    const out = Buffer.alloc(5 + body.length);
    out.write(type, 0);
    out.writeInt32BE(4 + body.length, 1);
    out.write(body, 5);
    return out;
  };
  const startup = () => {
    const params = Buffer.from('user\0postgres\0\0');
    const out = Buffer.alloc(8 + params.length);
    out.writeInt32BE(out.length, 0);
    out.writeInt32BE(196608, 4);
    params.copy(out, 8);
    return out;
  };

  it('takes a whole extended-protocol batch up to its Sync, and not what follows', () => {
    const batch = Buffer.concat(['P', 'B', 'D', 'E', 'S'].map((t) => message(t)));
    expect(wholeMessagesEnd(Buffer.concat([batch, message('Q', 'SELECT 1')]))).toBe(batch.length);
  });

  it('takes the whole messages of a batch whose rest is still on its way', () => {
    const parseBind = Buffer.concat([message('P'), message('B')]);
    const execute = message('E', 'abc');
    expect(wholeMessagesEnd(Buffer.concat([parseBind, execute.subarray(0, 4)]))).toBe(parseBind.length);
    expect(wholeMessagesEnd(execute.subarray(0, 7))).toBe(0);
  });

  it('takes a simple query alone, and the startup message alone once it is whole', () => {
    const query = message('Q', 'SELECT 1');
    expect(wholeMessagesEnd(Buffer.concat([query, message('Q', 'SELECT 2')]))).toBe(query.length);
    const hello = startup();
    expect(wholeMessagesEnd(Buffer.concat([hello, query]))).toBe(hello.length);
    expect(wholeMessagesEnd(hello.subarray(0, hello.length - 1))).toBe(0);
  });
});
