// Starts one embedded PGlite for the whole test run (it cannot start inside jest's sandbox) and publishes
// its URL; TEST_DATABASE_URL, when set, adds a real PostgreSQL (CI sets it).
const { startEmbeddedPostgres } = require('../../dist/libs/platform/src/persistence/embedded-postgres.js');

module.exports = async () => {
  // A remote call inside a database transaction fails in tests (libs/platform transaction-scope.ts).
  process.env.FLOTILLA_STRICT_TRANSACTIONS = '1';
  const embedded = await startEmbeddedPostgres({ maxConnections: 100 });
  globalThis.__FLOTILLA_EMBEDDED_PG__ = embedded;
  process.env.FLOTILLA_TEST_PGLITE_URL = embedded.url;
};
