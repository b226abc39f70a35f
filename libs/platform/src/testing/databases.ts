/**
 * The databases a persistence test runs against: the embedded PGlite started by jest's global setup, and
 * the real PostgreSQL of TEST_DATABASE_URL when it is set (CI sets it). Each test gets its own schema.
 */
export function testDatabases(): Array<[name: string, url: string]> {
  const out: Array<[string, string]> = [];
  if (process.env.FLOTILLA_TEST_PGLITE_URL) out.push(['PGlite', process.env.FLOTILLA_TEST_PGLITE_URL]);
  if (process.env.TEST_DATABASE_URL) out.push(['PostgreSQL', process.env.TEST_DATABASE_URL]);
  if (!out.length) throw new Error('no test database: run tests through jest (global setup starts PGlite)');
  return out;
}

/**
 * One database, for a slow suite whose subject is not the database (agents, disks, migrations, a front):
 * `preferred` when this run has it, else the one it has. The persistence layer, Watch, crash recovery and
 * the API's semantics run on both (testDatabases()); the slow suites are shared out between the two, so each
 * database carries some of them and CI stays within its half hour on two cores.
 */
export function testDatabase(preferred: 'PGlite' | 'PostgreSQL'): Array<[name: string, url: string]> {
  const all = testDatabases();
  return [all.find(([name]) => name === preferred) ?? all[0]];
}

let counter = 0;

/** A schema name no other test uses in this run. */
export function uniqueSchema(prefix: string): string {
  return `${prefix}_${process.pid}_${Date.now().toString(36)}_${counter++}`.toLowerCase();
}
