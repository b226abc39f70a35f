/**
 * What the benchmarks in bench/ share: child processes (started, timed out, killed on exit, error and
 * Ctrl-C), CPU and memory of processes from /proc, how busy the machine is, the database the services use,
 * raw grpc-js clients with a deadline on every call, and the table printer.
 */
import * as grpc from '@grpc/grpc-js';
import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { serviceDefinition, withServiceNodeOptions } from '@flotilla/platform';

export const envInt = (name: string, fallback: number) => {
  const v = Number(process.env[name]);
  return Number.isFinite(v) && v > 0 ? Math.floor(v) : fallback;
};

// ---------------------------------------------------------------------------------------------------------
// Processes: children started by the benchmark, their CPU, and their end.

export interface Child {
  readonly name: string;
  readonly proc: ChildProcess;
  readonly log?: string;
  exited: boolean;
}

export const children = new Set<Child>();

export function killAllSync(): void {
  for (const c of children) if (!c.exited) c.proc.kill('SIGKILL');
}
/** Data directories to remove if the process ends before the run does (interrupted). */
export const tempDirs = new Set<string>();
/** More to do synchronously when the process ends (e.g. kill processes that are not Node children). */
export const exitHooks = new Set<() => void>();
process.on('exit', () => {
  killAllSync();
  for (const hook of exitHooks) {
    try {
      hook();
    } catch {
      // the next one still runs
    }
  }
  for (const dir of tempDirs) fs.rmSync(dir, { recursive: true, force: true });
});

/** Node flags for every child from an environment variable (split on white space). */
export function nodeArgsFromEnv(name: string): string[] {
  return (process.env[name] ?? '').split(/\s+/).filter(Boolean);
}

export function pidOf(child: Child): number {
  if (child.proc.pid === undefined) throw new Error(`${child.name} did not start`);
  return child.proc.pid;
}

export function startChild(
  name: string,
  args: string[],
  options: { env?: NodeJS.ProcessEnv; log?: string; pipeStdout?: boolean; nodeArgs?: string[] } = {},
): Child {
  const out = options.log ? fs.openSync(options.log, 'a') : 'ignore';
  // Extra node flags, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof" (see nodeArgsFromEnv).
  const nodeArgs = options.nodeArgs ?? [];
  const proc = spawn(process.execPath, [...nodeArgs, ...args], {
    env: options.env ?? process.env,
    // Without a log file, errors go to this process's stderr.
    stdio: ['ignore', options.pipeStdout ? 'pipe' : out, typeof out === 'number' ? out : 'inherit'],
  });
  if (typeof out === 'number') fs.closeSync(out);
  const child: Child = { name, proc, log: options.log, exited: false };
  proc.once('exit', () => (child.exited = true));
  children.add(child);
  return child;
}

/** An app's entry point in the build: dist/apps/<app>/src/main.js. */
export const serviceMain = (dist: string, app: string): string =>
  path.join(dist, 'apps', app, 'src', 'main.js');

/** Throws, naming the file and the fix, unless every app is built. */
export function requireBuilt(dist: string, apps: readonly string[]): void {
  for (const app of apps)
    if (!fs.existsSync(serviceMain(dist, app)))
      throw new Error(`${serviceMain(dist, app)} is missing: build first (node tools/build.mjs)`);
}

/**
 * A Flotilla service from the build, with the Node options `flotilla up` and docker-compose give it
 * (serviceNodeOptions): a benchmark measures the services as they are deployed.
 */
export function startService(
  name: string,
  dist: string,
  app: string,
  options: Parameters<typeof startChild>[2] = {},
): Child {
  return startChild(name, [serviceMain(dist, app)], {
    ...options,
    env: withServiceNodeOptions(app, options.env ?? process.env),
  });
}

/** Waits for the child's first stdout line that parses as JSON with ready: true. */
export function readyLine<T>(child: Child, timeoutMs: number): Promise<T> {
  return new Promise((resolve, reject) => {
    let buffer = '';
    const timer = setTimeout(
      () => reject(new Error(`${child.name}: not ready after ${timeoutMs} ms${logTail(child)}`)),
      timeoutMs,
    );
    child.proc.stdout?.on('data', (chunk: Buffer) => {
      buffer += chunk.toString();
      for (let nl = buffer.indexOf('\n'); nl >= 0; nl = buffer.indexOf('\n')) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        try {
          const parsed = JSON.parse(line) as T & { ready?: boolean };
          if (parsed.ready) {
            clearTimeout(timer);
            child.proc.stdout?.removeAllListeners('data');
            child.proc.stdout?.resume();
            resolve(parsed);
            return;
          }
        } catch {
          // a log line
        }
      }
    });
    child.proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${child.name} exited with ${code} before it was ready${logTail(child)}`));
    });
  });
}

export function logTail(child: Child): string {
  if (!child.log) return '';
  try {
    const text = fs.readFileSync(child.log, 'utf8').trim().split('\n').slice(-15).join('\n');
    return text ? `\n--- last lines of ${child.log}:\n${text}` : '';
  } catch {
    return '';
  }
}

export async function stopChild(child: Child): Promise<void> {
  if (child.exited) {
    children.delete(child);
    return;
  }
  const exited = new Promise<void>((r) => child.proc.once('exit', () => r()));
  child.proc.kill('SIGTERM');
  const killed = await Promise.race([exited.then(() => true), sleep(6000).then(() => false)]);
  if (!killed) {
    child.proc.kill('SIGKILL');
    await Promise.race([exited, sleep(2000)]);
  }
  children.delete(child);
}

export async function stopAll(): Promise<void> {
  await Promise.all([...children].reverse().map((c) => stopChild(c)));
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

let clockTicks = 0;
export function clockTicksPerSec(): number {
  if (!clockTicks) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

/** utime+stime of a process (all its threads), in µs; 0 once it is gone. */
export function processCpuUs(pid: number): number {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after "(comm)": state is field 3, utime field 14, stime field 15.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1e6) / clockTicksPerSec();
  } catch {
    return 0;
  }
}

/** CPU of a process or a group of processes. */
export type CpuSource = number | number[];

export function sourceCpuUs(source: CpuSource): number[] {
  return (typeof source === 'number' ? [source] : source).map(processCpuUs);
}

/** CPU used since `before`; a process that went away meanwhile counts for nothing. */
export function cpuSinceUs(source: CpuSource, before: number[]): number {
  return sourceCpuUs(source).reduce((sum, now, i) => sum + (now && before[i] ? now - before[i] : 0), 0);
}

/** Busy time of all CPUs (user, nice, system, irq, softirq) in µs. */
export function machineBusyUs(): number {
  const line = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0];
  const [, user, nice, system, , , irq, softirq] = line.trim().split(/\s+/).map(Number);
  return ((user + nice + system + irq + softirq) * 1e6) / clockTicksPerSec();
}

/** Share of all CPUs busy over `ms` (what else runs on this shared machine), 0..1. */
export async function backgroundLoad(ms: number): Promise<number> {
  const before = machineBusyUs();
  await sleep(ms);
  return (machineBusyUs() - before) / (ms * 1000 * os.cpus().length);
}

/**
 * The PostgreSQL processes working for the benchmark: the backends connected to its database and the WAL
 * writer (commits). Other databases of the same cluster (tests running beside the benchmark) are left out.
 */
export async function postgresPids(url: string): Promise<number[]> {
  const { Client } = await import('pg');
  const c = new Client({ connectionString: url });
  await c.connect();
  try {
    const { rows } = await c.query<{ pid: number }>(
      "SELECT pid FROM pg_stat_activity WHERE (datname = current_database() AND pid <> pg_backend_pid()) OR backend_type = 'walwriter'",
    );
    return rows.map((r) => Number(r.pid));
  } finally {
    await c.end();
  }
}

// ---------------------------------------------------------------------------------------------------------
// Load: N calls at concurrency C, timed one by one, with the CPU of the processes that served them.

export type UnaryFn = (
  req: unknown,
  metadata: grpc.Metadata,
  options: grpc.CallOptions,
  cb: (err: grpc.ServiceError | null, res: unknown) => void,
) => grpc.ClientUnaryCall;

export function client(address: string, service: string): grpc.Client {
  const Ctor = grpc.makeGenericClientConstructor(serviceDefinition(service), service);
  return new Ctor(address, grpc.credentials.createInsecure());
}

export const CALL_DEADLINE_MS = 10_000;

export function unary<R>(
  c: grpc.Client,
  method: string,
  req: unknown,
  metadata = new grpc.Metadata(),
  deadlineMs = CALL_DEADLINE_MS,
): Promise<R> {
  const fn = (c as unknown as Record<string, UnaryFn>)[method];
  return new Promise((resolve, reject) =>
    fn.call(c, req, metadata, { deadline: Date.now() + deadlineMs }, (err, res) =>
      err ? reject(err) : resolve(res as R),
    ),
  );
}

export function waitForReady(c: grpc.Client, ms: number): Promise<void> {
  return new Promise((resolve, reject) =>
    c.waitForReady(Date.now() + ms, (err) => (err ? reject(err) : resolve())),
  );
}

// ---------------------------------------------------------------------------------------------------------
// (a) and (b): GetFlavor on a bare grpc-js server and on the NestJS path.

export interface BenchDatabase {
  url: string;
  description: string;
  onPostgres: boolean;
  /** Processes doing the database's work, for CPU per call (looked up before each measured run). */
  cpu?: () => Promise<CpuSource>;
  /** Drop what the previous run left. */
  fresh: boolean;
}

export function run(cmd: string, args: string[]): { ok: boolean; out: string } {
  try {
    return {
      ok: true,
      out: execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 30_000 }),
    };
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    return { ok: false, out: String(err.stderr ?? err.message) };
  }
}

/** Starts the machine's PostgreSQL clusters as CI does and makes the bench role and database; undefined if it can't. */
export function localPostgres(): { url: string; port: string } | undefined {
  const clusters = run('pg_lsclusters', ['-h']);
  if (!clusters.ok || !clusters.out.trim()) return undefined;
  let port = '';
  for (const line of clusters.out.trim().split('\n')) {
    const [version, cluster, clusterPort] = line.trim().split(/\s+/);
    run('pg_ctlcluster', ['--skip-systemctl-redirect', version, cluster, 'start']); // "already running" is fine
    port ||= clusterPort;
  }
  const role = run('runuser', [
    '-u',
    'postgres',
    '--',
    'psql',
    '-p',
    port,
    '-c',
    "CREATE ROLE flotilla LOGIN PASSWORD 'flotilla' SUPERUSER",
  ]);
  if (!role.ok && !/already exists/.test(role.out)) return undefined;
  const db = run('runuser', [
    '-u',
    'postgres',
    '--',
    'createdb',
    '-p',
    port,
    '-O',
    'flotilla',
    'flotilla_bench',
  ]);
  if (!db.ok && !/already exists/.test(db.out)) return undefined;
  return { url: `postgres://flotilla:flotilla@127.0.0.1:${port}/flotilla_bench`, port };
}

/**
 * The database a benchmark's services use: BENCH_DATABASE_URL, TEST_DATABASE_URL, the machine's PostgreSQL
 * started like CI, else the embedded PGlite (a child process). `pgliteEnv` names the knob that forces PGlite.
 */
export async function benchDatabase(
  dataDir: string,
  options: { pgliteEnv: string; nodeArgs?: string[] },
): Promise<BenchDatabase> {
  const forcePglite = process.env[options.pgliteEnv] === '1';
  const given = (['BENCH_DATABASE_URL', 'TEST_DATABASE_URL'] as const).find((k) => process.env[k]);
  const givenUrl = given && process.env[given];
  if (given && givenUrl && !forcePglite) {
    const onThisMachine = /@(127\.0\.0\.1|localhost|\[::1\])[:/]/.test(givenUrl);
    return {
      url: givenUrl,
      description: `PostgreSQL from ${given}`,
      onPostgres: true,
      cpu: onThisMachine ? () => postgresPids(givenUrl) : undefined,
      fresh: true,
    };
  }
  // <pgliteEnv>=1 measures on the embedded database even where PostgreSQL is available.
  const local = forcePglite ? undefined : localPostgres();
  if (local) {
    const version = run('runuser', [
      '-u',
      'postgres',
      '--',
      'psql',
      '-p',
      local.port,
      '-Atc',
      'SHOW server_version',
    ]).out.trim();
    return {
      url: local.url,
      description:
        `PostgreSQL ${version || ''} on this machine (started like CI, database flotilla_bench)`.replace(
          '  ',
          ' ',
        ),
      onPostgres: true,
      cpu: () => postgresPids(local.url),
      fresh: true,
    };
  }
  const child = startChild('embedded db', [path.join(__dirname, 'rpc', 'embedded-db.js')], {
    log: path.join(dataDir, 'embedded-db.log'),
    pipeStdout: true,
    nodeArgs: options.nodeArgs,
  });
  const { url } = await readyLine<{ url: string }>(child, 60_000);
  return {
    url,
    description: forcePglite
      ? `embedded PGlite (${options.pgliteEnv}=1)`
      : 'embedded PGlite (no PostgreSQL found: set BENCH_DATABASE_URL for PostgreSQL figures)',
    onPostgres: false,
    cpu: async () => pidOf(child),
    fresh: false,
  };
}

/** Drops the schemas (what an earlier run left); names are plain identifiers chosen by the benchmark. */
export async function dropSchemas(url: string, schemas: string[]): Promise<void> {
  const { Client } = await import('pg');
  const c = new Client({ connectionString: url });
  await c.connect();
  try {
    for (const schema of schemas) {
      if (!/^[a-z_][a-z0-9_]*$/.test(schema)) throw new Error(`not a plain schema name: ${schema}`);
      await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    }
  } finally {
    await c.end();
  }
}

/** Interrupted (Ctrl-C, SIGTERM): the children this run started go with it; the exit hooks do the rest. */
export function killChildrenOnSignal(): void {
  for (const signal of ['SIGINT', 'SIGTERM'] as const)
    process.once(signal, () => {
      killAllSync();
      process.exit(130);
    });
}

/** The admin token a gateway child writes to tokenFile when it first starts. */
export function adminTokenFrom(tokenFile: string, alive: Child[], ms = 90_000): Promise<string> {
  return until(
    'the admin token file',
    ms,
    async () => {
      const t = fs.existsSync(tokenFile) ? fs.readFileSync(tokenFile, 'utf8').trim() : '';
      return t || undefined;
    },
    alive,
  );
}

export async function until<T>(
  what: string,
  ms: number,
  probe: () => Promise<T | undefined>,
  alive: Child[],
): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  while (Date.now() < deadline) {
    for (const c of alive)
      if (c.exited) throw new Error(`${c.name} exited while waiting for ${what}${logTail(c)}`);
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}${last instanceof Error ? `: ${last.message}` : ''}`);
}

export function machineDescription(): string {
  const model =
    /model name\s*:\s*(.*)/.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? os.cpus()[0]?.model ?? '?';
  return `${os.cpus().length} CPUs (${model}), ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB, Node ${process.version}`;
}

export function table(header: string[], rows: string[][]): string[] {
  const widths = header.map((h, col) => Math.max(h.length, ...rows.map((r) => r[col].length)));
  const line = (row: string[]) =>
    row.map((cell, col) => (col === 0 ? cell.padEnd(widths[col]) : cell.padStart(widths[col]))).join('  ');
  return [line(header), ...rows.map(line)];
}

export const f0 = (n: number) => (Number.isFinite(n) ? n.toFixed(0) : '-');
export const f2 = (n: number) => (Number.isFinite(n) ? n.toFixed(2) : '-');
export const x = (n: number) => (Number.isFinite(n) ? `${n.toFixed(2)}x` : '-');
/** Resident memory of a process (/proc/<pid>/status VmRSS) in KiB; 0 once it is gone. */
export function processRssKiB(pid: number): number {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

export function median(values: number[]): number {
  if (!values.length) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}
