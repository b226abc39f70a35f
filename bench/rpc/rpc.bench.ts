/**
 * RPC benchmark: what Flotilla's gRPC path costs, against baselines measured in the same run.
 *
 *  (a) baseline: a bare grpc-js server (child process) answering flotilla.compute.v1.FlavorService/GetFlavor
 *      with a fixed Flavor; the client (this process) makes N unary calls at concurrency C and one call at a
 *      time for latency. Reported: calls/s, p50/p99, and the SERVER process's CPU time per RPC
 *      (utime+stime from /proc/<pid>/stat).
 *  (b) the same call through the NestJS path (startGrpcService: interceptor, error filter, health,
 *      reflection) with a one-method controller: same figures and its server-CPU ratio to (a).
 *      Target: ≤ 1.25× the bare server's CPU per RPC.
 *  (c) the real path: compute, gateway and one sim host agent as child processes on free ports with a fresh
 *      data directory and database. Committed creates (CreateVm start=false through the gateway):
 *      creates/s, p50/p99 and gateway/compute CPU per create (target ≥ 1,500/s and p99 < 20 ms against
 *      PostgreSQL); and create+start round trips (CreateVm start=true, then WaitOperation until SUCCEEDED).
 *      Then the same creates in an open loop: offered at fixed rates (evenly spaced, whatever the replies
 *      do), latency from each create's scheduled send time, by grpc-js's client and by the gateway's lean
 *      http2 client (UpstreamSession), since the load generator shares the machine's CPUs; and by the lean
 *      client straight at compute with the metadata the gateway's relay sends: the committed create alone
 *      (RPC, validation, one transaction with its outbox row), without the gateway's hop.
 *
 * Database for (c): BENCH_DATABASE_URL, else TEST_DATABASE_URL, else the machine's PostgreSQL cluster
 * started like CI does (role flotilla, database flotilla_bench), else the embedded PGlite (said so in the
 * output; the create targets are for PostgreSQL). The schemas compute and gateway are dropped first.
 *
 * (a) and (b) run side by side in alternating rounds; every run is also capped in time, so a busy machine
 * gives fewer calls, not a longer benchmark. CPU figures are per successful call and include work a call
 * leaves behind (the benchmark waits for the processes to go idle before it reads them).
 *
 * A benchmark reports, it does not assert: missing targets do not fail the run, a crash does.
 * Run: the build compiles it to dist/bench/rpc/rpc.bench.js; `node <that file>` runs main(), and a harness
 * may call runRpcBench() instead. Environment knobs: RPC_BENCH_CALLS, RPC_BENCH_CREATES, RPC_BENCH_ROUND_TRIPS
 * (sizes), RPC_BENCH_OPEN_RATES (offered creates/s, e.g. "1000,1500"; "none": no open loop),
 * RPC_BENCH_OPEN_SECONDS and RPC_BENCH_OPEN_WARMUP_SECONDS (per rate), RPC_BENCH_PGLITE=1 (measure (c) on PGlite), RPC_BENCH_NODE_ARGS (node flags for every child,
 * e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof"), RPC_BENCH_KEEP=0 (delete the services' logs even on failure) or
 * RPC_BENCH_KEEP=1 (keep them after a good run too, e.g. for "--trace-gc" output).
 */
import * as grpc from '@grpc/grpc-js';
import { randomBytes, randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { freePort, md, serviceDefinition } from '@flotilla/platform';
// The gateway's lean unary gRPC client (Node's http2, one session): real gRPC on the wire. The module
// boundaries allow bench → app (type:bench may depend on type:app); it needs nothing of the gateway's.
import { UpstreamSession } from '../../apps/gateway/src/proxy/upstream-session';
import {
  backgroundLoad,
  benchDatabase,
  client,
  clockTicksPerSec,
  CpuSource,
  cpuSinceUs,
  dropSchemas,
  envInt,
  f0,
  f2,
  killAllSync,
  logTail,
  machineBusyUs,
  machineDescription,
  nodeArgsFromEnv,
  pidOf,
  readyLine,
  sleep,
  sourceCpuUs,
  startChild as startNodeChild,
  stopAll,
  stopChild,
  table,
  tempDirs,
  unary,
  until,
  waitForReady,
  x,
  killChildrenOnSignal,
  adminTokenFrom,
  requireBuilt,
  startService,
} from '../harness';

/** RPC_BENCH_NODE_ARGS: extra node flags for every child, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof". */
const startChild = (name: string, args: string[], options: Parameters<typeof startNodeChild>[2] = {}) =>
  startNodeChild(name, args, { ...options, nodeArgs: nodeArgsFromEnv('RPC_BENCH_NODE_ARGS') });

export interface RpcBenchOptions {
  /** Unary calls per throughput run of (a) and (b). */
  readonly calls?: number;
  readonly concurrency?: number;
  /** Calls made one at a time for the latency runs of (a) and (b). */
  readonly latencyCalls?: number;
  /** Committed creates in (c). */
  readonly creates?: number;
  readonly createConcurrency?: number;
  /** Create+start round trips in (c). */
  readonly roundTrips?: number;
  readonly roundTripConcurrency?: number;
  /** Open-loop committed creates in (c): offered rates, creates/s (empty: none). */
  readonly openRates?: number[];
  /** Seconds measured at each offered rate, after openWarmupSeconds at that rate. */
  readonly openSeconds?: number;
  readonly openWarmupSeconds?: number;
  /** Skip (c), e.g. on a machine without the built services. */
  readonly skipRealPath?: boolean;
}

export interface LoadSummary {
  readonly calls: number;
  readonly errors: number;
  readonly firstError?: string;
  readonly seconds: number;
  readonly callsPerSec: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
  /** CPU time (user+system) of each named process per successful call, µs. */
  readonly cpuUsPerCall: Record<string, number>;
  /** Busy CPU of the whole machine (all cores, /proc/stat) per successful call, µs. */
  readonly machineCpuUsPerCall: number;
}

export interface ServerRun {
  readonly throughput: LoadSummary;
  readonly latency: LoadSummary;
  /** Server CPU per RPC, µs, from the throughput run. */
  readonly serverCpuUsPerRpc: number;
}

export interface RealPathRun {
  readonly database: string;
  readonly onPostgres: boolean;
  readonly creates: LoadSummary;
  /** The same creates one at a time: latency without queueing. */
  readonly serialCreates: LoadSummary;
  readonly roundTrips: LoadSummary;
  /** Open-loop committed creates: one row per offered rate and load generator. */
  readonly open: OpenLoopRun[];
  /** CPU each process uses while no call is made (heartbeats, event feed, timers), ms per second. */
  readonly idleCpuMsPerSec: Record<string, number>;
  readonly createTargetMet: boolean;
}

/** Committed creates offered at a fixed rate (open loop), latency from each create's scheduled send time. */
export interface OpenLoopRun {
  /**
   * The load generator: grpc-js's client (as the closed loop) or the lean http2 client (UpstreamSession),
   * both through the gateway; or the lean client straight at compute's VmService ('compute'), with the
   * metadata the gateway's relay sends (service token, tenant, role): the committed create alone — RPC,
   * validation, one transaction with its outbox row — without the gateway's hop.
   */
  readonly generator: 'grpc-js' | 'lean' | 'compute';
  readonly offeredPerSec: number;
  /** Creates scheduled in the measured window. */
  readonly scheduled: number;
  /** Successful replies received within the measured window, per second. */
  readonly achievedPerSec: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
  /** Creates of the window that failed or got no reply (deadline). */
  readonly errors: number;
  readonly firstError?: string;
  /** Creates slower than the p99 target, and in how many of the window's 100 ms slices (by send time). */
  readonly slow: number;
  readonly slowSlices: number;
  readonly slices: number;
  /** CPU (user+system) of each process over the measured window per create scheduled in it, µs. */
  readonly cpuUsPerCall: Record<string, number>;
  readonly machineCpuUsPerCall: number;
  /** achieved ≥ offered − 1 % and p99 < 20 ms (the target's conditions, at this rate). */
  readonly keptUp: boolean;
}

export interface RpcBenchResult {
  readonly machine: string;
  /** Share of all CPUs busy during 1 s before the benchmark started (other work on this machine). */
  readonly backgroundLoad: number;
  readonly clockTicksPerSec: number;
  readonly bare: ServerRun;
  readonly nest: ServerRun;
  /** nest server CPU per RPC over bare server CPU per RPC. */
  readonly nestCpuRatio: number;
  readonly nestTargetMet: boolean;
  readonly real?: RealPathRun;
}

const generatorNames: Record<OpenLoopRun['generator'], string> = {
  'grpc-js': 'grpc-js client, via gateway',
  lean: 'lean http2 (UpstreamSession), via gateway',
  compute: 'lean http2, straight to compute',
};

const NEST_CPU_RATIO_TARGET = 1.25;
const CREATES_PER_SEC_TARGET = 1500;
const CREATE_P99_TARGET_MS = 20;
/** The whole benchmark stops (children killed) if it runs longer than this. */
const WATCHDOG_MS = 300_000;
/** Deadline of each open-loop create: a create later than this counts as an error. */
const OPEN_DEADLINE_MS = 5000;

// ---------------------------------------------------------------------------------------------------------
// Load: N calls at concurrency C, timed one by one, with the CPU of the processes that served them.

function percentile(sorted: Float64Array, q: number): number {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

/** One measured run before summarising: runs of the same kind can be merged (interleaved rounds). */
interface LoadRaw {
  calls: number;
  latencies: Float64Array;
  errors: number;
  firstError?: string;
  seconds: number;
  cpuUs: Record<string, number>;
  machineUs: number;
}

async function measure(
  calls: number,
  concurrency: number,
  call: (i: number) => Promise<void>,
  cpu: Record<string, CpuSource>,
  options: { settle?: boolean; maxSeconds?: number } = {},
): Promise<LoadRaw> {
  const latencies = new Float64Array(calls);
  let next = 0;
  let done = 0;
  let errors = 0;
  let firstError: string | undefined;
  const cpuBefore = Object.fromEntries(Object.entries(cpu).map(([k, s]) => [k, sourceCpuUs(s)]));
  const busyBefore = machineBusyUs();
  const clientBefore = process.cpuUsage();
  const started = process.hrtime.bigint();
  // A run stops taking new calls after maxSeconds (a busy machine must not stretch the benchmark).
  const stopAt = Date.now() + (options.maxSeconds ?? Infinity) * 1000;
  const worker = async () => {
    while (next < calls && Date.now() < stopAt) {
      const i = next++;
      const t0 = process.hrtime.bigint();
      try {
        await call(i);
        latencies[done++] = Number(process.hrtime.bigint() - t0) / 1e6;
      } catch (e) {
        errors++;
        firstError ??= e instanceof Error ? e.message : String(e);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, calls) }, worker));
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const clientCpu = process.cpuUsage(clientBefore);
  // Work the calls left behind (operations run after CreateVm answers) counts too: wait until it is done.
  if (options.settle) await settle(cpu);
  return {
    calls: next,
    latencies: latencies.slice(0, done),
    errors,
    firstError,
    seconds,
    cpuUs: {
      ...Object.fromEntries(Object.entries(cpu).map(([k, s]) => [k, cpuSinceUs(s, cpuBefore[k])])),
      client: clientCpu.user + clientCpu.system,
    },
    machineUs: machineBusyUs() - busyBefore,
  };
}

function summarise(raws: LoadRaw[]): LoadSummary {
  const sum = (f: (r: LoadRaw) => number) => raws.reduce((acc, r) => acc + f(r), 0);
  const done = sum((r) => r.latencies.length);
  const ok = Math.max(1, done);
  const seconds = sum((r) => r.seconds);
  const sorted = new Float64Array(done);
  let at = 0;
  for (const r of raws) {
    sorted.set(r.latencies, at);
    at += r.latencies.length;
  }
  sorted.sort();
  const keys = Object.keys(raws[0]?.cpuUs ?? {});
  return {
    calls: sum((r) => r.calls),
    errors: sum((r) => r.errors),
    firstError: raws.find((r) => r.firstError)?.firstError,
    seconds,
    callsPerSec: done / seconds,
    p50Ms: percentile(sorted, 0.5),
    p99Ms: percentile(sorted, 0.99),
    maxMs: done ? sorted[done - 1] : NaN,
    cpuUsPerCall: Object.fromEntries(keys.map((k) => [k, sum((r) => r.cpuUs[k] ?? 0) / ok])),
    machineCpuUsPerCall: sum((r) => r.machineUs) / ok,
  };
}

async function runLoad(...args: Parameters<typeof measure>): Promise<LoadSummary> {
  return summarise([await measure(...args)]);
}

/** Waits (≤ 3 s) until the processes have been nearly idle for 300 ms. */
async function settle(cpu: Record<string, CpuSource>): Promise<void> {
  const total = (): number =>
    Object.values(cpu).reduce<number>((sum, s) => sum + sourceCpuUs(s).reduce((a, b) => a + b, 0), 0);
  const deadline = Date.now() + 3000;
  let last = total();
  while (Date.now() < deadline) {
    await sleep(300);
    const now = total();
    if (now - last <= 30_000) return; // ≤ 10% of one core over the window: background only
    last = now;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Open loop: calls sent at a fixed rate whatever the replies do; each call's latency counts from the time it
// was scheduled, so a generator or system that falls behind shows up in the latency (no coordinated
// omission). Calls are evenly spaced; a 1 ms timer sends every call that is due.

type SendFn = (i: number, done: (error?: string) => void) => void;

async function openLoop(
  rate: number,
  warmupS: number,
  measureS: number,
  send: SendFn,
  cpu: Record<string, CpuSource>,
): Promise<Omit<OpenLoopRun, 'generator' | 'keptUp'>> {
  const total = Math.round(rate * (warmupS + measureS));
  const first = Math.round(rate * warmupS); // the first measured call
  const latencies = new Float64Array(total - first);
  const slowSlices = new Set<number>();
  let slow = 0;
  let recorded = 0;
  let errors = 0;
  let firstError: string | undefined;
  let pending = 0;
  const t0 = performance.now() + 5;
  const windowStart = t0 + warmupS * 1000;
  const windowEnd = windowStart + measureS * 1000;
  let okInWindow = 0;
  let cpuBefore: Record<string, number[]> | undefined;
  let busyBefore = 0;
  let clientBefore: NodeJS.CpuUsage | undefined;
  let cpuUs: Record<string, number> = {};
  let machineUs = 0;
  const snapshotStart = () => {
    cpuBefore = Object.fromEntries(Object.entries(cpu).map(([k, s]) => [k, sourceCpuUs(s)]));
    busyBefore = machineBusyUs();
    clientBefore = process.cpuUsage();
  };
  const snapshotEnd = () => {
    const client = process.cpuUsage(clientBefore);
    cpuUs = {
      ...Object.fromEntries(Object.entries(cpu).map(([k, s]) => [k, cpuSinceUs(s, cpuBefore?.[k] ?? [])])),
      client: client.user + client.system,
    };
    machineUs = machineBusyUs() - busyBefore;
  };
  let next = 0;
  let allReplied!: () => void;
  const replied = new Promise<void>((r) => (allReplied = r));
  await new Promise<void>((sentAll) => {
    const tick = () => {
      const now = performance.now();
      if (!cpuBefore && now >= windowStart) snapshotStart();
      while (next < total && t0 + (next * 1000) / rate <= now) {
        const i = next++;
        const scheduled = t0 + (i * 1000) / rate;
        pending++;
        send(i, (error) => {
          const end = performance.now();
          if (i >= first) {
            if (error === undefined) {
              const ms = (latencies[recorded++] = end - scheduled);
              if (ms >= CREATE_P99_TARGET_MS) {
                slow++;
                slowSlices.add(Math.floor((scheduled - windowStart) / 100));
              }
            } else {
              errors++;
              firstError ??= error;
            }
          }
          if (error === undefined && end >= windowStart && end < windowEnd) okInWindow++;
          if (--pending === 0 && next === total) allReplied();
        });
      }
      if (next < total) setTimeout(tick, 1);
      else sentAll();
    };
    setTimeout(tick, Math.max(0, t0 - performance.now()));
  });
  // The window ends with the last scheduled call; CPU is read then (calls in flight at either end of the
  // window roughly cancel out).
  await sleep(Math.max(0, windowEnd - performance.now()));
  snapshotEnd();
  if (pending) await Promise.race([replied, sleep(OPEN_DEADLINE_MS + 1000)]);
  const missing = total - first - recorded - errors;
  if (missing > 0) {
    errors += missing;
    firstError ??= `${missing} calls without a reply`;
  }
  const sorted = latencies.slice(0, recorded).sort();
  const n = total - first;
  return {
    offeredPerSec: rate,
    scheduled: n,
    achievedPerSec: okInWindow / measureS,
    p50Ms: percentile(sorted, 0.5),
    p99Ms: percentile(sorted, 0.99),
    maxMs: recorded ? sorted[recorded - 1] : NaN,
    errors,
    firstError,
    slow,
    slowSlices: slowSlices.size,
    slices: Math.ceil(measureS * 10),
    cpuUsPerCall: Object.fromEntries(Object.entries(cpuUs).map(([k, v]) => [k, v / Math.max(1, n)])),
    machineCpuUsPerCall: machineUs / Math.max(1, n),
  };
}

// ---------------------------------------------------------------------------------------------------------
// (a) and (b): GetFlavor on a bare grpc-js server and on the NestJS path.

const distBench = __dirname;

/**
 * Both servers run side by side and are measured in alternating rounds (the order swapped every round),
 * so that what else this shared machine does at the time weighs on both alike.
 */
async function benchBaselines(opts: {
  calls: number;
  concurrency: number;
  latencyCalls: number;
  rounds: number;
}): Promise<{ bare: ServerRun; nest: ServerRun }> {
  const modes = ['bare', 'nest'] as const;
  const servers = await Promise.all(
    modes.map(async (mode) => {
      const address = `127.0.0.1:${await freePort()}`;
      const child = startChild(`${mode} server`, [path.join(distBench, 'flavor-server.js'), mode, address], {
        env: { ...process.env, FLOTILLA_LOG_LEVEL: 'warn' },
        pipeStdout: true,
      });
      return { mode, child, client: client(address, 'flotilla.compute.v1.FlavorService') };
    }),
  );
  try {
    const runs = await Promise.all(
      servers.map(async (s) => {
        await readyLine(s.child, 30_000);
        await waitForReady(s.client, 5000);
        const get = async () => {
          await unary(s.client, 'GetFlavor', { id: 'm1.small' }, new grpc.Metadata(), 5000);
        };
        return {
          ...s,
          get,
          cpu: { server: pidOf(s.child) },
          throughput: [] as LoadRaw[],
          latency: [] as LoadRaw[],
        };
      }),
    );
    // Warm-up: JIT on both sides, HTTP/2 windows.
    for (const r of runs)
      await measure(Math.min(5000, opts.calls), opts.concurrency, r.get, {}, { maxSeconds: 3 });
    const perRound = (n: number) => Math.max(1, Math.round(n / opts.rounds));
    for (let round = 0; round < opts.rounds; round++) {
      for (const r of round % 2 ? [...runs].reverse() : runs) {
        r.throughput.push(
          await measure(perRound(opts.calls), opts.concurrency, r.get, r.cpu, { maxSeconds: 3 }),
        );
        r.latency.push(await measure(perRound(opts.latencyCalls), 1, r.get, r.cpu, { maxSeconds: 1.5 }));
      }
    }
    const result = (mode: 'bare' | 'nest'): ServerRun => {
      const r = runs[modes.indexOf(mode)];
      const throughput = summarise(r.throughput);
      return { throughput, latency: summarise(r.latency), serverCpuUsPerRpc: throughput.cpuUsPerCall.server };
    };
    return { bare: result('bare'), nest: result('nest') };
  } finally {
    for (const s of servers) s.client.close();
    await Promise.all(servers.map((s) => stopChild(s.child)));
  }
}

// ---------------------------------------------------------------------------------------------------------
// (c) the real path.

interface Op {
  id: string;
  state: string;
  error?: { message?: string };
}

async function benchRealPath(opts: {
  creates: number;
  createConcurrency: number;
  roundTrips: number;
  roundTripConcurrency: number;
  openRates: number[];
  openSeconds: number;
  openWarmupSeconds: number;
}): Promise<RealPathRun> {
  const dist = path.resolve(distBench, '..', '..');
  requireBuilt(dist, ['compute', 'storage', 'gateway', 'host-agent']);

  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-rpc-bench-'));
  tempDirs.add(dataDir);
  const clients: grpc.Client[] = [];
  let lean: UpstreamSession | undefined;
  let direct: UpstreamSession | undefined;
  let failed = true;
  try {
    const db = await benchDatabase(dataDir, {
      pgliteEnv: 'RPC_BENCH_PGLITE',
      nodeArgs: nodeArgsFromEnv('RPC_BENCH_NODE_ARGS'),
    });
    if (db.fresh) await dropSchemas(db.url, ['compute', 'storage', 'gateway']);
    const [gatewayPort, computePort, storagePort, adminPort, agentPort, ec2Port, openstackPort] =
      await Promise.all(Array.from({ length: 7 }, () => freePort()));
    const tokenFile = path.join(dataDir, 'admin-token');
    // Only this benchmark's settings: a FLOTILLA_* of the caller (a schema, a port, a CLI token) would
    // change what is measured or make the services collide.
    const env: NodeJS.ProcessEnv = Object.fromEntries(
      Object.entries(process.env).filter(([k]) => !k.startsWith('FLOTILLA_') && k !== 'DATABASE_URL'),
    );
    Object.assign(env, {
      DATABASE_URL: db.url,
      FLOTILLA_SERVICE_TOKEN: randomBytes(24).toString('base64url'),
      FLOTILLA_DATA_DIR: dataDir,
      FLOTILLA_COMPUTE_ADDRESS: `127.0.0.1:${computePort}`,
      FLOTILLA_COMPUTE_URL: `127.0.0.1:${computePort}`,
      // A VM's start lists its disks at storage (none here: sim VMs without disks).
      FLOTILLA_STORAGE_ADDRESS: `127.0.0.1:${storagePort}`,
      FLOTILLA_STORAGE_URL: `127.0.0.1:${storagePort}`,
      FLOTILLA_GATEWAY_ADDRESS: `127.0.0.1:${gatewayPort}`,
      FLOTILLA_ADMIN_HTTP_ADDRESS: `127.0.0.1:${adminPort}`,
      FLOTILLA_EC2_ADDRESS: `127.0.0.1:${ec2Port}`,
      FLOTILLA_OPENSTACK_ADDRESS: `127.0.0.1:${openstackPort}`,
      FLOTILLA_BOOTSTRAP_TOKEN_FILE: tokenFile,
      FLOTILLA_AGENT_ADDRESS: `127.0.0.1:${agentPort}`,
      FLOTILLA_AGENT_NAME: 'bench-host-1',
      FLOTILLA_DRIVER: 'sim',
      FLOTILLA_SIM_LATENCY_MS: '0',
      // Room for every VM the round trips start.
      FLOTILLA_SIM_CPUS: '4096',
      FLOTILLA_SIM_MEMORY_MIB: String(16 * 1024 * 1024),
    });
    const log = (name: string) => path.join(dataDir, `${name}.log`);
    const service = (name: string, app: string) =>
      startService(name, dist, app, { env, log: log(app), nodeArgs: nodeArgsFromEnv('RPC_BENCH_NODE_ARGS') });
    const compute = service('compute', 'compute');
    const storage = service('storage', 'storage');
    const gateway = service('gateway', 'gateway');
    const agent = service('host agent', 'host-agent');
    const all = [compute, storage, gateway, agent];

    const token = await adminTokenFrom(tokenFile, all, 60_000);
    const auth = new grpc.Metadata();
    auth.set('authorization', `Bearer ${token}`);
    const gw = `127.0.0.1:${gatewayPort}`;
    const vms = client(gw, 'flotilla.compute.v1.VmService');
    const hosts = client(gw, 'flotilla.compute.v1.HostService');
    const ops = client(gw, 'flotilla.common.v1.OperationService');
    clients.push(vms, hosts, ops);
    const page = { page: { pageSize: 10, pageToken: '', filter: '' } };
    await until(
      'the gateway and compute',
      60_000,
      async () => {
        await unary(vms, 'ListVms', page, auth, 2000);
        return true;
      },
      all,
    );
    await until(
      'host bench-host-1 ENABLED',
      60_000,
      async () => {
        const res = await unary<{ hosts: Array<{ name: string; state: string }> }>(
          hosts,
          'ListHosts',
          page,
          auth,
          2000,
        );
        return res.hosts.some((h) => h.name === 'bench-host-1' && h.state === 'HOST_STATE_ENABLED')
          ? true
          : undefined;
      },
      all,
    );

    const runId = Date.now().toString(36);
    const create = (prefix: string, start: boolean) => (i: number) =>
      unary<{ vm: { id: string }; operation: Op }>(
        vms,
        'CreateVm',
        {
          requestId: `bench-${randomUUID()}`,
          name: `${prefix}-${runId}-${i}`,
          vcpus: 1,
          memoryMib: 64,
          start,
        },
        auth,
      );
    const roundTrip = (prefix: string) => async (i: number) => {
      const { operation } = await create(prefix, true)(i);
      let op = operation;
      const deadline = Date.now() + 30_000;
      while (op.state !== 'OPERATION_STATE_SUCCEEDED') {
        if (op.state === 'OPERATION_STATE_FAILED' || op.state === 'OPERATION_STATE_CANCELLED')
          throw new Error(`operation ${op.id} ${op.state}: ${op.error?.message ?? ''}`);
        if (Date.now() > deadline) throw new Error(`operation ${op.id} still ${op.state} after 30 s`);
        op = (
          await unary<{ operation: Op }>(ops, 'WaitOperation', { id: op.id, timeoutMs: 10_000 }, auth, 15_000)
        ).operation;
      }
    };
    const cpu = async (): Promise<Record<string, CpuSource>> => ({
      gateway: pidOf(gateway),
      compute: pidOf(compute),
      storage: pidOf(storage),
      agent: pidOf(agent),
      ...(db.cpu ? { database: await db.cpu() } : {}),
    });
    const check = (what: string, s: LoadSummary) => {
      for (const c of all) if (c.exited) throw new Error(`${c.name} exited during ${what}${logTail(c)}`);
      if (s.errors > s.calls / 100)
        throw new Error(`${what}: ${s.errors} of ${s.calls} calls failed, e.g. ${s.firstError}`);
    };

    // Warm-up of every process on both paths, then the measured runs.
    check(
      'warm-up',
      await runLoad(
        Math.min(300, opts.creates),
        opts.createConcurrency,
        (i) => create('warm', false)(i).then(() => undefined),
        await cpu(),
        { settle: true, maxSeconds: 5 },
      ),
    );
    check(
      'warm-up',
      await runLoad(
        Math.min(100, opts.roundTrips),
        opts.roundTripConcurrency,
        roundTrip('warmrt'),
        await cpu(),
        { settle: true, maxSeconds: 5 },
      ),
    );
    // What the processes use with no calls at all: it is inside every per-call CPU figure below.
    const idleSources = await cpu();
    const idleBefore = Object.fromEntries(
      Object.entries(idleSources).map(([k, src]) => [k, sourceCpuUs(src)]),
    );
    await sleep(2000);
    const idleCpuMsPerSec = Object.fromEntries(
      Object.entries(idleSources).map(([k, src]) => [k, cpuSinceUs(src, idleBefore[k]) / 1000 / 2]),
    );
    const creates = await runLoad(
      opts.creates,
      opts.createConcurrency,
      (i) => create('c', false)(i).then(() => undefined),
      await cpu(),
      { settle: true, maxSeconds: 20 },
    );
    check('creates', creates);
    const serialCreates = await runLoad(
      Math.min(300, opts.creates),
      1,
      (i) => create('s', false)(i).then(() => undefined),
      await cpu(),
      { settle: true, maxSeconds: 4 },
    );
    check('creates one at a time', serialCreates);

    // Open loop: the same creates offered at fixed rates, by each load generator in turn.
    const createRequest = (name: string) => ({
      requestId: `bench-${randomUUID()}`,
      name,
      vcpus: 1,
      memoryMib: 64,
      start: false,
    });
    const grpcJsSend =
      (prefix: string): SendFn =>
      (i, done) =>
        unary(vms, 'CreateVm', createRequest(`${prefix}-${runId}-${i}`), auth, OPEN_DEADLINE_MS).then(
          () => done(),
          (e: unknown) => done(e instanceof Error ? e.message : String(e)),
        );
    const createDef = serviceDefinition('flotilla.compute.v1.VmService').CreateVm;
    lean = new UpstreamSession({
      address: gw,
      maxReceiveBytes: 4 * 1024 * 1024,
      keepaliveMs: 30_000,
      keepaliveTimeoutMs: 20_000,
    });
    direct = new UpstreamSession({
      address: `127.0.0.1:${computePort}`,
      maxReceiveBytes: 4 * 1024 * 1024,
      keepaliveMs: 30_000,
      keepaliveTimeoutMs: 20_000,
    });
    // What the gateway's relay adds for the admin token's principal (its tenant read from a VM it made).
    const { vm: probe } = await create('probe', false)(0);
    const relayHeaders = {
      [md.serviceToken]: String(env.FLOTILLA_SERVICE_TOKEN),
      [md.tenantId]: String((probe as { tenantId?: string }).tenantId),
      [md.role]: 'pool-admin',
    };
    const leanSendTo =
      (session: UpstreamSession, headers: Record<string, string>) =>
      (prefix: string): SendFn =>
      (i, done) =>
        session.unary(
          createDef.path,
          createDef.requestSerialize(createRequest(`${prefix}-${runId}-${i}`)),
          headers,
          Date.now() + OPEN_DEADLINE_MS,
          (status, reply) => {
            if (status) return done(`${status.code} ${status.details}`);
            // Decoded as a real client would (grpc-js's client decodes every reply too).
            const res = createDef.responseDeserialize(reply as Buffer) as { vm?: { id?: string } };
            done(res.vm?.id ? undefined : 'reply without a VM');
          },
        );
    const open: OpenLoopRun[] = [];
    const generators = [
      ['grpc-js', grpcJsSend],
      ['lean', leanSendTo(lean, { authorization: `Bearer ${token}` })],
      ['compute', leanSendTo(direct, relayHeaders)],
    ] as const;
    for (const [k, rate] of opts.openRates.entries()) {
      // The order rotates at every rate, so the machine's drift weighs on every generator alike.
      for (const [generator, send] of [...generators.slice(k % 3), ...generators.slice(0, k % 3)]) {
        const run = await openLoop(
          rate,
          opts.openWarmupSeconds,
          opts.openSeconds,
          send(`o${generator[0]}${rate}`),
          await cpu(),
        );
        for (const c of all)
          if (c.exited) throw new Error(`${c.name} exited during the open loop${logTail(c)}`);
        await settle(await cpu());
        open.push({
          generator,
          ...run,
          keptUp: run.errors === 0 && run.achievedPerSec >= rate * 0.99 && run.p99Ms < CREATE_P99_TARGET_MS,
        });
      }
    }
    const roundTrips = await runLoad(
      opts.roundTrips,
      opts.roundTripConcurrency,
      roundTrip('rt'),
      await cpu(),
      { settle: true, maxSeconds: 15 },
    );
    check('create+start round trips', roundTrips);
    failed = false;
    return {
      database: db.description,
      onPostgres: db.onPostgres,
      creates,
      serialCreates,
      roundTrips,
      open,
      idleCpuMsPerSec,
      createTargetMet:
        db.onPostgres &&
        creates.callsPerSec >= CREATES_PER_SEC_TARGET &&
        creates.p99Ms < CREATE_P99_TARGET_MS,
    };
  } finally {
    for (const c of clients) c.close();
    lean?.close();
    direct?.close();
    await stopAll();
    tempDirs.delete(dataDir);
    const keep = process.env.RPC_BENCH_KEEP;
    if ((failed && keep !== '0') || keep === '1')
      process.stderr.write(`rpc bench: logs kept in ${dataDir}\n`);
    else fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

/** A comma-separated list of rates ("1000,1500"); "none" or "0": no open-loop runs. */
function envRates(name: string, fallback: number[]): number[] {
  const v = process.env[name];
  if (v === undefined || v.trim() === '') return fallback;
  return v
    .split(',')
    .map((r) => Number(r.trim()))
    .filter((r) => Number.isFinite(r) && r > 0);
}

export async function runRpcBench(options: RpcBenchOptions = {}): Promise<RpcBenchResult> {
  const calls = options.calls ?? envInt('RPC_BENCH_CALLS', 20_000);
  const concurrency = options.concurrency ?? 32;
  const latencyCalls = options.latencyCalls ?? Math.min(3000, calls);
  const watchdog = setTimeout(() => {
    process.stderr.write(`rpc bench: still running after ${WATCHDOG_MS / 1000} s: stopping\n`);
    killAllSync();
    process.exit(1);
  }, WATCHDOG_MS);
  watchdog.unref();
  try {
    const background = await backgroundLoad(1000);
    const { bare, nest } = await benchBaselines({ calls, concurrency, latencyCalls, rounds: 4 });
    const nestCpuRatio = nest.serverCpuUsPerRpc / bare.serverCpuUsPerRpc;
    const real = options.skipRealPath
      ? undefined
      : await benchRealPath({
          creates: options.creates ?? envInt('RPC_BENCH_CREATES', 3000),
          createConcurrency: options.createConcurrency ?? 32,
          roundTrips: options.roundTrips ?? envInt('RPC_BENCH_ROUND_TRIPS', 1000),
          roundTripConcurrency: options.roundTripConcurrency ?? 16,
          openRates: options.openRates ?? envRates('RPC_BENCH_OPEN_RATES', [1000, 1250, 1500, 1750]),
          openSeconds: options.openSeconds ?? envInt('RPC_BENCH_OPEN_SECONDS', 4),
          openWarmupSeconds: options.openWarmupSeconds ?? envInt('RPC_BENCH_OPEN_WARMUP_SECONDS', 1),
        });
    return {
      machine: machineDescription(),
      backgroundLoad: background,
      clockTicksPerSec: clockTicksPerSec(),
      bare,
      nest,
      nestCpuRatio,
      nestTargetMet: nestCpuRatio <= NEST_CPU_RATIO_TARGET,
      real,
    };
  } finally {
    clearTimeout(watchdog);
    await stopAll();
  }
}

// ---------------------------------------------------------------------------------------------------------
// Output.

export function formatRpcBench(r: RpcBenchResult): string {
  const { bare, nest } = r;
  const b = bare.throughput;
  const serverRow = (name: string, s: ServerRun) => [
    name,
    f0(s.throughput.callsPerSec),
    x(s.throughput.callsPerSec / b.callsPerSec),
    f2(s.throughput.p50Ms),
    f2(s.throughput.p99Ms),
    f2(s.latency.p50Ms),
    f2(s.latency.p99Ms),
    x(s.latency.p50Ms / bare.latency.p50Ms),
    f0(s.serverCpuUsPerRpc),
    x(s.serverCpuUsPerRpc / bare.serverCpuUsPerRpc),
    f0(s.throughput.cpuUsPerCall.client),
    String(s.throughput.errors + s.latency.errors),
  ];
  const out = [
    `rpc: GetFlavor, ${b.calls} calls at concurrency 32 and ${bare.latency.calls} at concurrency 1; ${r.machine}; CLK_TCK ${r.clockTicksPerSec}`,
    `machine busy before the run (other work on this shared VM): ${(r.backgroundLoad * 100).toFixed(0)}% of all CPUs`,
    ...table(
      [
        'server',
        'calls/s',
        'vs bare',
        'p50 ms',
        'p99 ms',
        'C=1 p50',
        'C=1 p99',
        'vs bare',
        'server µs/RPC',
        'vs bare',
        'client µs/RPC',
        'errors',
      ],
      [serverRow('(a) baseline: bare grpc-js', bare), serverRow('(b) NestJS startGrpcService', nest)],
    ),
    `(b) server CPU per RPC / (a): ${x(r.nestCpuRatio)} (target ≤ ${NEST_CPU_RATIO_TARGET}x: ${r.nestTargetMet ? 'met' : 'NOT met'})`,
  ];
  if (r.real) {
    const { creates: c, serialCreates: c1, roundTrips: t } = r.real;
    const cpuCols = (s: LoadSummary) => {
      const cells = ['gateway', 'compute', 'storage', 'agent', 'database', 'client'].map((k) =>
        s.cpuUsPerCall[k] === undefined
          ? '-'
          : `${f0(s.cpuUsPerCall[k])} (${x(s.cpuUsPerCall[k] / bare.serverCpuUsPerRpc)})`,
      );
      return [...cells, f0(s.machineCpuUsPerCall)];
    };
    out.push(
      '',
      `rpc real path: gateway → compute (→ host agent, sim driver, latency 0) on ${r.real.database}`,
      ...table(
        [
          'run',
          'ops/s',
          'vs bare',
          'p50 ms',
          'vs bare',
          'p99 ms',
          'vs bare',
          'gateway µs/op',
          'compute µs/op',
          'storage µs/op',
          'agent µs/op',
          'database µs/op',
          'bench client µs/op',
          'machine µs/op',
          'errors',
        ],
        [
          [`committed creates (C=32, ${c.calls})`, c, b] as const,
          [`committed creates (C=1, ${c1.calls})`, c1, bare.latency] as const,
          [`create+start round trips (C=16, ${t.calls})`, t, b] as const,
        ].map(([name, s, base]) => [
          name,
          f0(s.callsPerSec),
          x(s.callsPerSec / base.callsPerSec),
          f2(s.p50Ms),
          x(s.p50Ms / base.p50Ms),
          f2(s.p99Ms),
          x(s.p99Ms / base.p99Ms),
          ...cpuCols(s),
          String(s.errors),
        ]),
      ),
      "(ratios: against (a) at concurrency 32, the C=1 row against (a) at C=1; CPU columns: µs per op and, in brackets, that over the bare server's µs per RPC)",
      `idle CPU with no calls (included above), ms per s: ${Object.entries(r.real.idleCpuMsPerSec)
        .map(([k, v]) => `${k} ${v.toFixed(1)}`)
        .join(', ')}`,
      r.real.onPostgres
        ? `creates target ≥ ${CREATES_PER_SEC_TARGET}/s and p99 < ${CREATE_P99_TARGET_MS} ms on PostgreSQL, closed loop C=32: ${r.real.createTargetMet ? 'met' : 'NOT met'}` +
            ` (${f0(c.callsPerSec)}/s, p99 ${f2(c.p99Ms)} ms)`
        : `creates target (≥ ${CREATES_PER_SEC_TARGET}/s, p99 < ${CREATE_P99_TARGET_MS} ms) applies to PostgreSQL: this run used the embedded PGlite, so it is not judged`,
    );
    const open = r.real.open;
    if (open.length) {
      const o0 = open[0];
      out.push(
        '',
        `open loop: committed creates offered at a fixed rate (evenly spaced), latency from each create's scheduled send time; per rate and generator ${f0(o0.scheduled / o0.offeredPerSec)} s measured after a warm-up at the same rate; deadline ${OPEN_DEADLINE_MS / 1000} s`,
        ...table(
          [
            'generator',
            'offered/s',
            'achieved/s',
            'vs offered',
            'p50 ms',
            'p99 ms',
            'max ms',
            'gateway µs/op',
            'compute µs/op',
            'storage µs/op',
            'agent µs/op',
            'database µs/op',
            'bench client µs/op',
            'machine µs/op',
            'errors',
            `≥ ${CREATE_P99_TARGET_MS} ms (100-ms slices)`,
            `≥ offered, p99 < ${CREATE_P99_TARGET_MS} ms`,
          ],
          open.map((o) => [
            generatorNames[o.generator],
            f0(o.offeredPerSec),
            f0(o.achievedPerSec),
            x(o.achievedPerSec / o.offeredPerSec),
            f2(o.p50Ms),
            f2(o.p99Ms),
            f2(o.maxMs),
            ...['gateway', 'compute', 'storage', 'agent', 'database', 'client'].map((k) =>
              o.cpuUsPerCall[k] === undefined ? '-' : f0(o.cpuUsPerCall[k]),
            ),
            f0(o.machineCpuUsPerCall),
            String(o.errors),
            `${((o.slow / Math.max(1, o.scheduled)) * 100).toFixed(1)}% (${o.slowSlices}/${o.slices})`,
            o.keptUp ? 'yes' : 'no',
          ]),
        ),
        `(CPU: µs over the measured window per create scheduled in it; "≥ ${CREATE_P99_TARGET_MS} ms": share of creates that took that long, and in how many 100-ms slices of send time they fell; "≥ offered": achieved ≥ 99 % of offered, no errors)`,
      );
      for (const o of open.filter((o) => o.offeredPerSec === CREATES_PER_SEC_TARGET))
        out.push(
          `open loop at ${CREATES_PER_SEC_TARGET}/s offered, ${generatorNames[o.generator]}${r.real.onPostgres ? '' : ' (PGlite: not judged)'}: achieved ${f0(o.achievedPerSec)}/s, p99 ${f2(o.p99Ms)} ms, ${o.errors} errors: target ${r.real.onPostgres && o.keptUp ? 'met' : 'NOT met'}`,
        );
      for (const e of open.filter((o) => o.firstError))
        out.push(`open loop ${e.generator} at ${e.offeredPerSec}/s: first error: ${e.firstError}`);
    }
  }
  return out.join('\n');
}

export async function main(): Promise<void> {
  killChildrenOnSignal();
  console.log(formatRpcBench(await runRpcBench()));
}

if (require.main === module) {
  main().catch((error: unknown) => {
    console.error(error);
    process.exitCode = 1;
  });
}
