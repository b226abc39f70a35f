// One jest run for the whole repository (faster than a process per project on 2 cores).
const swc = [
  '@swc/jest',
  {
    jsc: {
      parser: { syntax: 'typescript', decorators: true },
      transform: { legacyDecorator: true, decoratorMetadata: true },
      target: 'es2022',
      baseUrl: __dirname,
      paths: require('./tsconfig.base.json').compilerOptions.paths,
    },
    module: { type: 'commonjs' },
  },
];

const moduleNameMapper = Object.fromEntries(
  Object.entries(require('./tsconfig.base.json').compilerOptions.paths).map(([alias, [target]]) => [
    `^${alias.replace('/', '\\/')}$`,
    `<rootDir>/${target}`,
  ]),
);

/** @type {import('jest').Config} */
module.exports = {
  rootDir: __dirname,
  testEnvironment: 'node',
  transform: { '^.+\\.ts$': swc },
  moduleNameMapper,
  testMatch: ['<rootDir>/{apps,libs,tools}/**/*.spec.ts'],
  testPathIgnorePatterns: ['/node_modules/', '/dist/'],
  globalSetup: '<rootDir>/tools/testing/global-setup.js',
  globalTeardown: '<rootDir>/tools/testing/global-teardown.js',
  testTimeout: 30000,
  // One suite at a time in each of `npm test`'s two lanes (tools/test.mjs: real-guest suites beside the
  // rest). Two workers over every suite on CI's 2 CPUs were no faster there (1,119 s of tests against
  // 970–1,061 s for whole runs with one) and starved the real-QEMU suites (a guest, a migration and a CLI call
  // missed their time), since two guest-heavy suites then ran together. Ports come in a slice per worker.
  maxWorkers: 1,
  // That one suite at a time runs in a worker process, recycled once it holds more than this after a suite.
  // In band (jest's choice for one worker otherwise), every suite's module registry and what it left behind
  // stayed in one heap: it grew past a gigabyte within a dozen suites, and the later heavy suites ran up to
  // 2.3× slower than alone (the 120-host evacuation: 180 s in the full run, 77 s alone). The embedded PGlite
  // of the global setup then also stops sharing the tests' event loop.
  workerIdleMemoryLimit: '1GB',
};
