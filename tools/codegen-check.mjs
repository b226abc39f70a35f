#!/usr/bin/env node
// `npm run codegen:check`: fails when the generated contracts are not what `npm run codegen` makes from proto/.
// It lints the protos, runs package.json's own `codegen` script in a scratch copy of its inputs (the work tree
// is never written), and compares every output directory of buf.gen.yaml with the work tree's, file by file.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cp, mkdtemp, readdir, readFile, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const started = Date.now();

class CheckFailed extends Error {}
function fail(message) {
  throw new CheckFailed(message);
}

function run(command, args, cwd) {
  const env = { ...process.env, PATH: [join(cwd, 'node_modules', '.bin'), process.env.PATH].join(delimiter) };
  const r = spawnSync(command, args, { cwd, env, stdio: 'inherit' });
  if (r.error) fail(`cannot run ${command}: ${r.error.message}`);
  return r.status ?? 1;
}

async function files(dir, base = dir) {
  const out = new Map();
  for (const entry of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const full = join(dir, entry.name);
    if (entry.isDirectory()) for (const [k, v] of await files(full, base)) out.set(k, v);
    else if (entry.isFile()) out.set(relative(base, full), full);
  }
  return out;
}

let scratch;
async function check() {
  const pkg = JSON.parse(await readFile(join(root, 'package.json'), 'utf8'));
  const script = pkg.scripts?.codegen;
  if (!script) fail('package.json has no "codegen" script');
  if (!existsSync(join(root, 'node_modules', '.bin', 'buf')))
    fail('node_modules/.bin/buf is missing: run npm ci first');

  // 1. The protos themselves.
  if (run('buf', ['lint'], root) !== 0) fail('buf lint failed: fix the .proto files named above');

  // 2. What the codegen reads and writes.
  const bufYaml = parse(await readFile(join(root, 'buf.yaml'), 'utf8')) ?? {};
  const genYaml = parse(await readFile(join(root, 'buf.gen.yaml'), 'utf8')) ?? {};
  const modules = (bufYaml.modules ?? [{ path: 'proto' }]).map((m) => m.path);
  const outputs = [...new Set((genYaml.plugins ?? []).map((p) => p.out).filter(Boolean))];
  if (!outputs.length) fail('buf.gen.yaml names no plugin output directory');

  // 3. Run the codegen script in a scratch copy: the top-level files (buf and prettier configuration,
  //    package.json), the proto modules, and node_modules as a link.
  scratch = await mkdtemp(join(tmpdir(), 'flotilla-codegen-'));
  for (const entry of await readdir(root, { withFileTypes: true }))
    if (entry.isFile()) await cp(join(root, entry.name), join(scratch, entry.name));
  for (const dir of modules) await cp(join(root, dir), join(scratch, dir), { recursive: true });
  await symlink(join(root, 'node_modules'), join(scratch, 'node_modules'), 'dir');
  if (run('sh', ['-c', script], scratch) !== 0) fail(`the codegen script failed: ${script}`);

  // 4. Compare.
  const problems = [];
  let count = 0;
  for (const out of outputs) {
    const fresh = await files(join(scratch, out));
    const committed = await files(join(root, out));
    count += fresh.size;
    for (const [name, path] of fresh) {
      const mine = committed.get(name);
      if (!mine) problems.push(`missing   ${join(out, name)}`);
      else if (!(await readFile(path)).equals(await readFile(mine)))
        problems.push(`different ${join(out, name)}`);
    }
    for (const name of committed.keys()) if (!fresh.has(name)) problems.push(`extra     ${join(out, name)}`);
  }
  if (problems.length) {
    process.stderr.write(`${problems.slice(0, 30).join('\n')}\n`);
    if (problems.length > 30) process.stderr.write(`… and ${problems.length - 30} more\n`);
    fail('generated code is stale: run npm run codegen and commit');
  }

  // A fresh clone sees only what is committed: name generated files that are not (a warning, not a failure).
  const git = spawnSync('git', ['status', '--porcelain', '--', ...outputs], { cwd: root, encoding: 'utf8' });
  if (git.status === 0 && git.stdout.trim())
    process.stderr.write(`codegen check: warning: not committed yet:\n${git.stdout}`);
  console.log(`codegen check: ${count} generated files up to date (${Date.now() - started} ms)`);
}

try {
  await check();
} catch (e) {
  if (!(e instanceof CheckFailed)) throw e;
  process.stderr.write(`codegen check: ${e.message}\n`);
  process.exitCode = 1;
} finally {
  if (scratch) await rm(scratch, { recursive: true, force: true });
}
