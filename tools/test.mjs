#!/usr/bin/env node
// `npm test`: builds dist/ (the end-to-end tests run the built services as `npm start` does), type-checks,
// then runs every jest suite once.
//
// A whole run goes in two lanes side by side, each one jest process running one suite at a time: `vms`,
// the suites that boot real guests (CPU-bound: TCG), and `services`, the rest, which mostly wait on gRPC,
// databases and timers (their jest worker averaged about 15 % of a CPU). On CI's two cores that nearly
// halves the run, while no two guest-heavy suites ever share the machine (two jest workers over every suite
// did that, and guests missed their deadlines). Arguments that pick tests (paths, -t, --watch, …) make it
// one plain jest run, as does FLOTILLA_TEST_LANES=1. `--json --outputFile=F` gets both lanes' results in F.
//
// Every process a run starts carries FLOTILLA_TEST_RUN in its environment, QEMU guests included (the qemu
// driver starts them detached, so that a VM outlives its agent, and only a suite's afterAll stops them).
// Whatever still carries it when the run ends, or is interrupted, is stopped and named.
import { execFileSync, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const jest = join(root, 'node_modules/jest/bin/jest.js');
const args = process.argv.slice(2);

/** The suites that boot real QEMU guests. */
const VM_SUITES = '/(tools/e2e|libs/hypervisor/src/qemu)/';
/** jest.config.js's own ignore patterns, which a --testPathIgnorePatterns on the command line replaces. */
const IGNORED = ['/node_modules/', '/dist/'];
/** Signals passed on to jest (every process of a lane), after which this process still cleans up. */
const FORWARDED = ['SIGINT', 'SIGTERM'];
/** Options after which a run is not "every suite once". */
const SELECTING =
  /^(-t|-o|-i|--(testNamePattern|testPathPatterns?|findRelatedTests|onlyChanged|onlyFailures|changedSince|watch|watchAll|listTests|selectProjects|shard|runInBand|maxWorkers|runTestsByPath))(=|$)/;

process.env.FLOTILLA_TEST_RUN = randomUUID();

try {
  execFileSync(process.execPath, [join(root, 'tools/build.mjs'), '--typecheck'], {
    cwd: root,
    stdio: 'inherit',
  });
} catch (e) {
  process.exit(typeof e.status === 'number' && e.status !== 0 ? e.status : 1);
}

const wholeRun = !args.some((a) => !a.startsWith('-') || SELECTING.test(a));
if (!wholeRun || process.env.FLOTILLA_TEST_LANES === '1') {
  const child = spawn(process.execPath, [jest, ...args], { cwd: root, stdio: 'inherit' });
  // Ctrl-C reaches jest from the terminal; this process stays to clean up after it.
  for (const signal of FORWARDED) process.on(signal, () => child.kill(signal));
  child.on('exit', (code, signal) => {
    stopLeftovers();
    process.exit(code ?? (signal ? 1 : 0));
  });
} else {
  const code = await runLanes();
  stopLeftovers();
  process.exit(code);
}

/** Stops every process of this run still alive (Linux: read from /proc), and says which they were. */
function stopLeftovers() {
  const mark = Buffer.from(`FLOTILLA_TEST_RUN=${process.env.FLOTILLA_TEST_RUN}\0`);
  let pids;
  try {
    pids = fs.readdirSync('/proc').filter((e) => /^\d+$/.test(e) && Number(e) !== process.pid);
  } catch {
    return; // no /proc: nothing to look at
  }
  const stopped = [];
  for (const pid of pids) {
    try {
      if (!fs.readFileSync(`/proc/${pid}/environ`).includes(mark)) continue;
      const name = fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
      process.kill(Number(pid), 'SIGKILL');
      stopped.push(`${name} (pid ${pid})`);
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  if (stopped.length)
    console.error(
      `npm test: stopped ${stopped.length} process(es) the tests left running: ${stopped.join(', ')}`,
    );
}

async function runLanes() {
  const { outputFile, rest } = takeOutputFile(args);
  const lanes = [
    { name: 'vms', select: ['--testPathPatterns', VM_SUITES] },
    { name: 'services', select: ['--testPathIgnorePatterns', ...IGNORED, VM_SUITES] },
  ];
  const results = await Promise.all(
    lanes.map((lane, index) => {
      const report = outputFile ? `${outputFile}.${lane.name}` : undefined;
      const laneArgs = [...rest, ...(report ? ['--json', `--outputFile=${report}`] : [])];
      return runLane(lane.name, index, [...laneArgs, ...lane.select]).then((result) => ({
        ...result,
        report,
      }));
    }),
  );
  if (outputFile)
    mergeReports(
      outputFile,
      results.map((r) => r.report),
    );
  console.error('');
  for (const r of results)
    console.error(`lane ${r.name}: ${r.code === 0 ? 'passed' : `FAILED (exit ${r.code})`} in ${r.seconds} s`);
  return results.find((r) => r.code !== 0)?.code ?? 0;
}

/** One jest process, its output line by line behind the lane's name. */
function runLane(name, index, laneArgs) {
  const started = Date.now();
  const child = spawn(process.execPath, [jest, ...laneArgs], {
    cwd: root,
    // A lane of its own for the test ports (libs/platform/src/testing/ports.ts).
    env: { ...process.env, FLOTILLA_TEST_LANE: String(index) },
    stdio: ['ignore', 'pipe', 'pipe'],
    // Its own process group, so that a signal reaches jest's worker too: jest does not pass SIGTERM on,
    // and a worker left behind goes on running its suite.
    detached: true,
  });
  const prefix = `[${name}] `;
  for (const [from, to] of [
    [child.stdout, process.stdout],
    [child.stderr, process.stderr],
  ])
    createInterface({ input: from, crlfDelay: Infinity }).on('line', (line) =>
      to.write(prefix + line + '\n'),
    );
  // Ctrl-C or a kill of this process reaches every process of the lane, and this process waits for them.
  const forward = (signal) => {
    try {
      process.kill(-child.pid, signal);
    } catch {
      // the lane has ended
    }
  };
  for (const signal of FORWARDED) process.on(signal, forward);
  return new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      for (const signal of FORWARDED) process.off(signal, forward);
      resolve({ name, code: code ?? (signal ? 1 : 0), seconds: Math.round((Date.now() - started) / 1000) });
    });
  });
}

function takeOutputFile(all) {
  let outputFile;
  const rest = [];
  for (let i = 0; i < all.length; i++) {
    const a = all[i];
    if (a === '--json') continue;
    if (a.startsWith('--outputFile=')) outputFile = a.slice('--outputFile='.length);
    else if (a === '--outputFile') outputFile = all[++i];
    else rest.push(a);
  }
  return { outputFile, rest };
}

/** One jest JSON report from the lanes' reports: counts added, suites listed together. */
function mergeReports(outputFile, reports) {
  const parts = reports.filter((f) => fs.existsSync(f)).map((f) => JSON.parse(fs.readFileSync(f, 'utf8')));
  if (!parts.length) return;
  const merged = { ...parts[0], testResults: [], openHandles: [] };
  for (const key of Object.keys(parts[0]))
    if (key.startsWith('num')) merged[key] = parts.reduce((sum, p) => sum + (p[key] ?? 0), 0);
  for (const p of parts) {
    merged.testResults.push(...(p.testResults ?? []));
    merged.openHandles.push(...(p.openHandles ?? []));
  }
  merged.startTime = Math.min(...parts.map((p) => p.startTime));
  merged.success = parts.length === reports.length && parts.every((p) => p.success);
  merged.wasInterrupted = parts.some((p) => p.wasInterrupted);
  fs.writeFileSync(outputFile, JSON.stringify(merged));
  for (const f of reports) fs.rmSync(f, { force: true });
}
