#!/usr/bin/env node
// `npm run bench`: builds dist/ (node tools/build.mjs), then runs every benchmark in bench/ as its own
// process (output straight to this terminal) and ends with a summary. Benchmarks report their targets;
// they do not assert them: this exits non-zero only when a benchmark crashes (or the build fails).
//
//   npm run bench                 every benchmark
//   npm run bench -- rpc          only those named (scheduler, rpc, boot, storage, migration, sigv4, ec2-front)
import { spawn, execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

/** name → the compiled entry point; each runs its main() when executed directly. */
const benchmarks = [
  { name: 'scheduler', file: 'dist/bench/scheduler/scheduler.bench.js' },
  { name: 'rpc', file: 'dist/bench/rpc/rpc.bench.js' },
  { name: 'boot', file: 'dist/bench/boot/boot.bench.js' },
  { name: 'storage', file: 'dist/bench/storage/storage.bench.js' },
  { name: 'migration', file: 'dist/bench/migration/migration.bench.js' },
  { name: 'sigv4', file: 'dist/bench/ec2/sigv4.bench.js' },
  { name: 'ec2-front', file: 'dist/bench/ec2/ec2-front.bench.js' },
];

const wanted = process.argv.slice(2).filter((a) => !a.startsWith('-'));
const unknown = wanted.filter((w) => !benchmarks.some((b) => b.name === w));
if (unknown.length) {
  console.error(
    `unknown benchmark(s): ${unknown.join(', ')}; known: ${benchmarks.map((b) => b.name).join(', ')}`,
  );
  process.exit(2);
}
const selected = wanted.length ? benchmarks.filter((b) => wanted.includes(b.name)) : benchmarks;

try {
  execFileSync(process.execPath, [join(root, 'tools/build.mjs')], { cwd: root, stdio: 'inherit' });
} catch (e) {
  console.error('bench: the build failed');
  process.exit(typeof e.status === 'number' && e.status !== 0 ? e.status : 1);
}

/** The child being run, so that Ctrl-C or a kill of this process ends it too. */
let current;
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    current?.kill(signal);
    process.exit(130);
  });
}

function run(bench) {
  return new Promise((resolve) => {
    const started = Date.now();
    const file = join(root, bench.file);
    if (!existsSync(file)) {
      resolve({ ...bench, seconds: 0, status: `missing ${bench.file}`, ok: false });
      return;
    }
    console.log(`\n=== bench ${bench.name} (${bench.file})\n`);
    current = spawn(process.execPath, [file], { cwd: root, stdio: 'inherit' });
    current.once('error', (e) =>
      resolve({ ...bench, seconds: (Date.now() - started) / 1000, status: e.message, ok: false }),
    );
    current.once('exit', (code, signal) => {
      current = undefined;
      const seconds = (Date.now() - started) / 1000;
      if (code === 0) resolve({ ...bench, seconds, status: 'ok', ok: true });
      else
        resolve({
          ...bench,
          seconds,
          status: signal ? `killed by ${signal}` : `exit code ${code}`,
          ok: false,
        });
    });
  });
}

const results = [];
for (const bench of selected) results.push(await run(bench));

const width = Math.max(...results.map((r) => r.name.length));
console.log("\n=== bench summary (targets are reported in each benchmark's output above, not asserted)");
for (const r of results)
  console.log(
    `  ${r.name.padEnd(width)}  ${r.ok ? 'ok     ' : 'CRASHED'}  ${r.seconds.toFixed(1).padStart(6)} s  ${r.ok ? '' : r.status}`,
  );
const crashed = results.filter((r) => !r.ok);
if (crashed.length) {
  console.log(`bench: ${crashed.length} of ${results.length} benchmark(s) crashed`);
  process.exit(1);
}
