/**
 * Migration benchmark (issue 6): what Flotilla adds to a live migration of a real VM, against the same QEMU
 * migration driven by hand over QMP in the same run, and how long a host evacuation takes.
 *
 *  (a) baseline, by hand: the QEMU command the qemu driver ran for the Flotilla VM of the same dirty rate
 *      (its recorded spec.json, buildQemuArgv: same machine, CPU model, memory, kernel, cmdline), started as
 *      a source; a destination QEMU with `-incoming defer`; over QMP the parameters Flotilla sets (max-bandwidth,
 *      downtime-limit, no auto-converge, return-path on both: MIGRATION_BENCH_HAND_RETURN_PATH=0 leaves it off,
 *      and QEMU's downtime then stops before the destination has loaded the state), `migrate-incoming` and
 *      `migrate` on loopback (no pause-before-switchover: that pause is Flotilla's own); polled every 5 ms
 *      until the destination runs; then the source is quit. Wall time from spawning the destination to the
 *      source gone; downtime as QEMU measured it (query-migrate on the source).
 *  (b) through Flotilla: CreateMigration at the gateway (→ migration service → compute, storage, the two host
 *      agents → the two QEMUs) for a running VM created with `demo.dirty=<MiB>` in its kernel cmdline; wall
 *      time from the RPC to the migration read SUCCEEDED (GetMigration polled every 5 ms; the source QEMU is
 *      gone by then); downtime from the migration's stats (QEMU's own figure; since 2026-11-27 the switch is
 *      armed, so the source agent continues from pre-switchover by itself and no call of the migration
 *      service is inside it; before, the point of no return was recorded while the source waited there).
 *      A guest found HALTED after a migration (QEMU under TCG loses some) is counted and reported, its
 *      sample skipped, and a fresh VM goes on; any other failure ends the run.
 *      Targets: (b) wall ≤ 1.05× (a) wall; (b) downtime ≤ (a) downtime + 10 ms.
 *  (c) a guest that dirties memory faster than the link (demo.dirty at a low bandwidth cap): how many rounds
 *      until Flotilla says it does not converge, and the outcome without options, with auto-converge and with
 *      post-copy (each refused on TCG hosts, where QEMU 7.2 corrupts the memory of some guests migrated so).
 *  (d) evacuation: a host with N idle VMs (128 MiB) emptied with `EvacuateHost` (max_parallel 2), time to
 *      SUCCEEDED, beside N × the single idle migration of (b) measured in this run.
 *
 * The cloud is `flotilla up --driver qemu` (embedded PGlite, two host agents, every service its own
 * process) in a scratch directory, as a user runs it. (a) and (b) alternate, after one unmeasured round of
 * each. Knobs: MIGRATION_BENCH_ROUNDS (3), MIGRATION_BENCH_MEMORY_MIB (512), MIGRATION_BENCH_DIRTY (0,16,64),
 * MIGRATION_BENCH_BANDWIDTH_MIB (4096), MIGRATION_BENCH_EVACUATE_VMS (10), MIGRATION_BENCH_PARTS (c,d: which
 * of (c) and (d) follow (a) and (b); empty for neither), MIGRATION_BENCH_KEEP=1 keeps the
 * data directory, MIGRATION_BENCH_LOG_LEVEL (warn; info also reports the source agents' armed-switch times), MIGRATION_BENCH_DATABASE_URL (the cloud on that PostgreSQL database instead of PGlite). A
 * benchmark reports, it does not assert: a missed target does not fail the run.
 */
import * as grpc from '@grpc/grpc-js';
import { ChildProcess, execFile, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { commonV1, computeV1, migrationV1 } from '@flotilla/contracts';
import { expectPresent } from '@flotilla/domain';
import { buildQemuArgv, DEMO_READY_MARKER, QemuLaunchSpec, QmpClient, vmUuid } from '@flotilla/hypervisor';
import {
  cloudClients,
  CloudClients,
  freePort,
  GrpcClient,
  operationDone,
  vmRequest,
} from '@flotilla/platform';
import { envInt, exitHooks, f0, f2, machineDescription, median, sleep, table, tempDirs, x } from '../harness';

// Run from dist/bench/migration (built) or bench/migration (ts-node): the repository's bin either way.
const root = [path.resolve(__dirname, '../..'), path.resolve(__dirname, '../../..')].find((d) =>
  fs.existsSync(path.join(d, 'bin/flotilla.js')),
);
const bin = path.join(root ?? process.cwd(), 'bin/flotilla.js');
const MiB = 1024 * 1024;
const ROUNDS = envInt('MIGRATION_BENCH_ROUNDS', 3);
const MEMORY_MIB = envInt('MIGRATION_BENCH_MEMORY_MIB', 512);
const BANDWIDTH = envInt('MIGRATION_BENCH_BANDWIDTH_MIB', 4096) * MiB;
const DOWNTIME_LIMIT_MS = 300;
const HAND_RETURN_PATH = process.env.MIGRATION_BENCH_HAND_RETURN_PATH !== '0';
const EVACUATE_VMS = envInt('MIGRATION_BENCH_EVACUATE_VMS', 10);
const DIRTY = (process.env.MIGRATION_BENCH_DIRTY ?? '0,16,64')
  .split(',')
  .map((s) => Number(s.trim()))
  .filter((n) => Number.isInteger(n) && n >= 0);
/** Which of (c) and (d) run after (a) and (b): "c,d" by default, "" for (a) and (b) alone. */
const PARTS = new Set((process.env.MIGRATION_BENCH_PARTS ?? 'c,d').split(',').map((s) => s.trim()));

interface Cloud {
  dir: string;
  up: ChildProcess;
  env: NodeJS.ProcessEnv;
  admin: CloudClients;
  migrations: GrpcClient<migrationV1.MigrationServiceClient>;
  evacuations: GrpcClient<migrationV1.EvacuationServiceClient>;
  hosts: computeV1.Host[];
  output(): string;
  /** From QEMU's pause to migrate-continue, per armed switch of the run (the source agents' log lines). */
  armedSwitchMs: number[];
}

/** What one migration took, by hand or through Flotilla. */
interface Sample {
  wallMs: number;
  downtimeMs: number;
  qemuTotalMs: number;
  rounds: number;
  bytes: number;
}

const need = <T>(v: T | null | undefined, what: string): T => expectPresent(v, `no ${what} in the reply`);
const vmOf = async (c: CloudClients, id: string) => need((await c.vms.call.getVm({ id })).vm, 'vm');

const qemus = new Set<ChildProcess>();
exitHooks.add(() => {
  for (const q of qemus) if (q.exitCode === null) q.kill('SIGKILL');
});

function cli(cloud: Pick<Cloud, 'env'>, ...args: string[]): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(process.execPath, [bin, ...args], { env: cloud.env, timeout: 600_000 }, (err, stdout, stderr) =>
      err ? reject(new Error(`flotilla ${args.join(' ')}: ${stderr || err.message}`)) : resolve(stdout),
    ),
  );
}

async function until<T>(what: string, ms: number, probe: () => Promise<T | undefined>, every = 100) {
  const deadline = Date.now() + ms;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    await sleep(every);
  }
  throw new Error(`timed out waiting for ${what}${last instanceof Error ? `: ${last.message}` : ''}`);
}

async function startCloud(): Promise<Cloud> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-migration-bench-'));
  if (process.env.MIGRATION_BENCH_KEEP !== '1') tempDirs.add(dir);
  const basePort = 23000 + Math.floor(Math.random() * 60) * 100;
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    FLOTILLA_CONFIG: path.join(dir, 'config.json'),
    // info: the source agents' armed-switch reaction times are printed (their log lines); more output.
    FLOTILLA_LOG_LEVEL: process.env.MIGRATION_BENCH_LOG_LEVEL ?? 'warn',
    // Ten evacuated VMs (1 vCPU each) and the benchmark's own on a 2-CPU host: more vCPU overcommit.
    FLOTILLA_CPU_OVERCOMMIT: '16',
    // PostgreSQL instead of the embedded PGlite, as a deployment runs it (a database of its own: up migrates it).
    ...(process.env.MIGRATION_BENCH_DATABASE_URL
      ? { DATABASE_URL: process.env.MIGRATION_BENCH_DATABASE_URL }
      : {}),
  };
  let output = '';
  const up = spawn(
    process.execPath,
    [bin, 'up', '--data-dir', path.join(dir, 'var'), '--base-port', String(basePort), '--driver', 'qemu'],
    { env, cwd: dir, stdio: ['ignore', 'pipe', 'pipe'], detached: true },
  );
  // The source agents' armed switches, as their logs say, whatever the kept tail of the output holds.
  const armedSwitchMs: number[] = [];
  let partial = '';
  const onOutput = (d: Buffer) => {
    const lines = (partial + d.toString()).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      const armed = /switched over ([\d.]+) ms after QEMU paused \(armed\)/.exec(line);
      if (armed) armedSwitchMs.push(Number(armed[1]));
      output = (output + line + '\n').slice(-20_000);
    }
  };
  expectPresent(up.stdout, 'up stdout').on('data', onOutput);
  expectPresent(up.stderr, 'up stderr').on('data', onOutput);
  exitHooks.add(() => {
    // VMs outlive their control plane by design: kill this run's QEMUs (their paths name the directory).
    for (const p of fs.readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
      try {
        if (fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(dir)) process.kill(Number(p), 'SIGKILL');
      } catch {
        // gone meanwhile
      }
    }
    try {
      if (up.pid) process.kill(-up.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  });
  await until('the profile `up` writes', 120_000, async () => {
    if (up.exitCode !== null) throw new Error(`flotilla up exited ${up.exitCode}:\n${output.slice(-3000)}`);
    return fs.existsSync(path.join(dir, 'config.json')) ? true : undefined;
  });
  const token = fs.readFileSync(path.join(dir, 'var/admin-token'), 'utf8').trim();
  const gateway = `127.0.0.1:${basePort}`;
  const admin = cloudClients(gateway, token);
  const client = <C>(service: string) =>
    new GrpcClient<C>({
      address: gateway,
      service: `flotilla.migration.v1.${service}`,
      staticMetadata: { authorization: `Bearer ${token}` },
      defaultDeadlineMs: 30_000,
    });
  const hosts = await until('two ENABLED qemu hosts', 120_000, async () => {
    const { hosts } = await admin.hosts.call.listHosts({ page: { pageSize: 10, pageToken: '', filter: '' } });
    const ready = hosts.filter((h) => h.state === computeV1.HostState.HOST_STATE_ENABLED);
    return ready.length >= 2 ? ready.sort((a, b) => a.name.localeCompare(b.name)) : undefined;
  });
  const cloud = {
    dir,
    up,
    env,
    admin,
    migrations: client<migrationV1.MigrationServiceClient>('MigrationService'),
    evacuations: client<migrationV1.EvacuationServiceClient>('EvacuationService'),
    hosts,
    output: () => output + partial,
    armedSwitchMs,
  };
  await cli(cloud, 'image', 'build-demo');
  return cloud;
}

async function stopCloud(cloud: Cloud): Promise<void> {
  const exited = new Promise<void>((r) =>
    cloud.up.exitCode !== null ? r() : cloud.up.once('exit', () => r()),
  );
  cloud.up.kill('SIGINT');
  await Promise.race([exited, sleep(30_000)]);
}

const stateDirOf = (cloud: Cloud, host: computeV1.Host) => path.join(cloud.dir, 'var', 'agents', host.name);

async function createVm(
  cloud: Cloud,
  name: string,
  memoryMib: number,
  dirtyMiB: number,
): Promise<computeV1.Vm> {
  const { vm, operation } = await cloud.admin.vms.call.createVm(
    vmRequest({
      name,
      vcpus: 1,
      memoryMib,
      boot: { image: 'demo', kernel: '', initrd: '', cmdline: dirtyMiB ? `demo.dirty=${dirtyMiB}` : '' },
      nics: [{ mac: '', forwards: [{ guestPort: 80, hostAddress: '' }] }],
    }),
  );
  const done = await operationDone(cloud.admin.operations, need(operation, 'operation').id, 180_000);
  if (done.state !== commonV1.OperationState.OPERATION_STATE_SUCCEEDED)
    throw new Error(`creating ${name}: ${done.error?.message}`);
  const got = await vmOf(cloud.admin, need(vm, 'vm').id);
  await until(`${name} ready`, 120_000, async () => {
    const log = (await cloud.admin.vms.call.getVmConsoleLog({ id: got.id, maxBytes: 0 })).data;
    const text = Buffer.from(log).toString();
    return text.includes(DEMO_READY_MARKER) && (!dirtyMiB || text.includes('DEMO-DIRTY')) ? true : undefined;
  });
  return got;
}

function options(over: Partial<migrationV1.MigrationOptions> = {}): migrationV1.MigrationOptions {
  return {
    downtimeLimitMs: DOWNTIME_LIMIT_MS,
    bandwidthBytesPerSec: BANDWIDTH,
    autoConverge: false,
    postCopy: false,
    postCopyAfterRounds: 0,
    timeoutMs: 0,
    shutdownTimeoutMs: 0,
    ...over,
  };
}

async function migrateThroughFlotilla(
  cloud: Cloud,
  vm: computeV1.Vm,
  to: computeV1.Host,
  opts = options(),
): Promise<{ sample: Sample; migration: migrationV1.Migration }> {
  const started = process.hrtime.bigint();
  const { migration } = await cloud.migrations.call.createMigration({
    requestId: randomUUID(),
    name: '',
    labels: {},
    spec: {
      vmId: vm.id,
      destinationHostId: to.id,
      mode: migrationV1.MigrationMode.MIGRATION_MODE_LIVE,
      withStorage: false,
      vdiMap: {},
      options: opts,
    },
  });
  const finished = await until(
    `migration of ${vm.name}`,
    300_000,
    async () => {
      const m = need(
        (await cloud.migrations.call.getMigration({ id: need(migration, 'migration').id })).migration,
        'migration',
      );
      return m.phase === migrationV1.MigrationPhase.MIGRATION_PHASE_DONE ? m : undefined;
    },
    5,
  );
  const wallMs = Number(process.hrtime.bigint() - started) / 1e6;
  const s = need(finished.stats, 'stats');
  return {
    migration: finished,
    sample: {
      wallMs,
      downtimeMs: Number(s.downtimeMs),
      qemuTotalMs: Number(s.totalTimeMs),
      rounds: s.rounds,
      bytes: Number(s.bytesTransferred),
    },
  };
}

async function destroy(cloud: Cloud, vmId: string): Promise<void> {
  const { operation } = await cloud.admin.vms.call.destroyVm({ id: vmId, requestId: '' });
  if (operation) await operationDone(cloud.admin.operations, operation.id, 120_000);
}

const succeeded = (m: migrationV1.Migration) =>
  m.state === migrationV1.MigrationState.MIGRATION_STATE_SUCCEEDED;

/** One QEMU by hand from a launch spec, in its own directory; resolves with its QMP connection. */
async function qemuByHand(
  template: QemuLaunchSpec,
  dir: string,
  incoming: boolean,
): Promise<{ proc: ChildProcess; qmp: QmpClient; serialLog: string }> {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const paths = {
    pidFile: path.join(dir, 'qemu.pid'),
    qmpSocket: path.join(dir, 'qmp.sock'),
    consoleSocket: path.join(dir, 'console.sock'),
    serialLog: path.join(dir, 'serial.log'),
  };
  const hostPort = await freePort();
  const launch: QemuLaunchSpec = {
    ...template,
    vm: {
      ...template.vm,
      nics: template.vm.nics.map((n) => ({ ...n, forwards: n.forwards.map((f) => ({ ...f, hostPort })) })),
    },
  };
  const log = fs.openSync(path.join(dir, 'qemu.log'), 'a', 0o600);
  const proc = spawn('qemu-system-x86_64', buildQemuArgv(launch, paths, { incoming }), {
    detached: true,
    stdio: ['ignore', log, log],
    cwd: dir,
  });
  fs.closeSync(log);
  qemus.add(proc);
  proc.once('exit', () => qemus.delete(proc));
  const qmp = await until(
    'a QMP socket',
    30_000,
    async () => {
      if (proc.exitCode !== null || proc.signalCode !== null)
        throw new Error(
          `QEMU by hand exited (${proc.exitCode ?? proc.signalCode}): ${fs.readFileSync(path.join(dir, 'qemu.log'), 'utf8').slice(-800)}`,
        );
      return fs.existsSync(paths.qmpSocket) ? QmpClient.connect({ socketPath: paths.qmpSocket }) : undefined;
    },
    2,
  );
  return { proc, qmp, serialLog: paths.serialLog };
}

type QueryMigrate = {
  status?: string;
  'total-time'?: number;
  downtime?: number;
  ram?: { transferred?: number; 'dirty-sync-count'?: number };
  'error-desc'?: string;
};

/**
 * (a): the Flotilla VM's recorded launch spec run by hand as a source (a fresh uuid and directory), then the
 * same migration Flotilla does, driven over QMP.
 */
async function migrateByHand(template: QemuLaunchSpec, workDir: string, dirtyMiB: number): Promise<Sample> {
  const vmId = randomUUID();
  const spec: QemuLaunchSpec = { ...template, uuid: vmUuid(vmId), vm: { ...template.vm, vmId } };
  const dir = path.join(workDir, vmId.slice(0, 8));
  const source = await qemuByHand(spec, path.join(dir, 'src'), false);
  let destination: Awaited<ReturnType<typeof qemuByHand>> | undefined;
  try {
    await until('the hand-started guest ready', 120_000, async () => {
      const text = fs.existsSync(source.serialLog) ? fs.readFileSync(source.serialLog, 'utf8') : '';
      return text.includes(DEMO_READY_MARKER) && (!dirtyMiB || text.includes('DEMO-DIRTY'))
        ? true
        : undefined;
    });
    await sleep(1000);
    const started = process.hrtime.bigint();
    destination = await qemuByHand(spec, path.join(dir, 'dst'), true);
    const port = await freePort();
    // return-path as Flotilla sets it: the source's downtime then ends when the destination has loaded the
    // state and said so, on both sides (without it QEMU stops counting when the last byte leaves the source).
    const capabilities = [
      { capability: 'events', state: true },
      { capability: 'return-path', state: HAND_RETURN_PATH },
    ];
    await destination.qmp.executeRaw('migrate-set-capabilities', { capabilities });
    await destination.qmp.executeRaw('migrate-incoming', { uri: `tcp:127.0.0.1:${port}` });
    await source.qmp.executeRaw('migrate-set-capabilities', { capabilities });
    await source.qmp.executeRaw('migrate-set-parameters', {
      'max-bandwidth': BANDWIDTH,
      'downtime-limit': DOWNTIME_LIMIT_MS,
    });
    await source.qmp.executeRaw('migrate', { uri: `tcp:127.0.0.1:${port}` });
    const info = await until(
      'the hand-driven migration',
      300_000,
      async () => {
        const q = (await source.qmp.executeRaw('query-migrate')) as QueryMigrate;
        if (q.status === 'failed') throw new Error(`by hand: ${q['error-desc']}`);
        return q.status === 'completed' ? q : undefined;
      },
      5,
    );
    await until(
      'the destination running',
      30_000,
      async () => {
        const s = (await need(destination, 'destination').qmp.executeRaw('query-status')) as {
          status: string;
        };
        return s.status === 'running' ? true : undefined;
      },
      5,
    );
    const exited = new Promise<void>((r) => source.proc.once('exit', () => r()));
    await source.qmp.executeRaw('quit').catch(() => undefined);
    await Promise.race([exited, sleep(10_000)]);
    const wallMs = Number(process.hrtime.bigint() - started) / 1e6;
    return {
      wallMs,
      downtimeMs: info.downtime ?? NaN,
      qemuTotalMs: info['total-time'] ?? NaN,
      rounds: info.ram?.['dirty-sync-count'] ?? NaN,
      bytes: info.ram?.transferred ?? NaN,
    };
  } finally {
    for (const q of [source, destination]) {
      if (!q) continue;
      q.qmp.close();
      if (q.proc.exitCode === null) q.proc.kill('SIGKILL');
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  console.log(`# migration benchmark — ${machineDescription()}`);
  console.log(
    `# ${MEMORY_MIB} MiB guests, bandwidth ${BANDWIDTH / MiB} MiB/s, downtime limit ${DOWNTIME_LIMIT_MS} ms, ${ROUNDS} rounds per side`,
  );
  const cloud = await startCloud();
  const [h1, h2] = cloud.hosts;
  // Short: QMP and console sockets must fit a unix socket path.
  const handDir = fs.mkdtempSync(path.join(os.tmpdir(), 'fmb-'));
  tempDirs.add(handDir);
  const lines: string[][] = [];
  /** Guests found halted after a migration (QEMU 7.2 under TCG loses some: docs/benchmarks.md). */
  const losses: string[] = [];
  let flotillaMigrations = 0;
  /** Migrations whose switch the service found done by the source agent (armed) when it looked. */
  let agentAlone = 0;
  let measured = 0;
  /** Per dirty rate, (b)'s phases: name → durations in ms. */
  const phaseRows: string[][] = [];
  let idleFlotillaWall = NaN;
  try {
    // ---- (a) and (b) ----
    for (const dirty of DIRTY) {
      let vm = await createVm(cloud, `bench-d${dirty}`, MEMORY_MIB, dirty);
      let here = (await vmOf(cloud.admin, vm.id)).hostId === h1.id ? h1 : h2;
      const other = () => (here.id === h1.id ? h2 : h1);
      const template = JSON.parse(
        fs.readFileSync(path.join(stateDirOf(cloud, here), 'qemu', vm.id, 'spec.json'), 'utf8'),
      ) as QemuLaunchSpec;
      const hand: Sample[] = [];
      const flotilla: Sample[] = [];
      /**
       * From the service seeing the source paused to its SwitchOver call, as the run recorded; inside the
       * guest's pause until 2026-11-26, not since the switch is armed (the agent has usually continued by then).
       */
      const commitPaths: number[] = [];
      const phaseMs: Record<string, number[]> = {};
      for (let round = 0; round <= ROUNDS; round++) {
        const order = round % 2 === 0 ? ['hand', 'flotilla'] : ['flotilla', 'hand'];
        for (const side of order) {
          if (side === 'hand') {
            const s = await migrateByHand(template, handDir, dirty);
            if (round > 0) hand.push(s);
          } else {
            const to = other();
            flotillaMigrations++;
            const run = await migrateThroughFlotilla(cloud, vm, to).catch((e: unknown) => e as Error);
            if (run instanceof Error || !succeeded(run.migration)) {
              const why =
                run instanceof Error
                  ? run.message
                  : `${run.migration.stateReason} ${run.migration.error?.message ?? ''}`;
              // A guest lost by QEMU under TCG reads HALTED, with the reason its driver saw: counted, and the
              // round's sample is skipped and a fresh VM goes on. Anything else ends the run.
              // The agent's report of a QEMU that exited may reach compute a moment after the refusal.
              const now = await until(
                `${vm.name} read HALTED`,
                5_000,
                async () => {
                  const v = await vmOf(cloud.admin, vm.id);
                  return v.powerState === computeV1.PowerState.POWER_STATE_HALTED ? v : undefined;
                },
                100,
              ).catch(() => undefined);
              if (!now || losses.length >= 3) throw new Error(`through Flotilla: ${why}`);
              losses.push(
                `${vm.name} (${dirty} MiB dirtied): ${now.powerStateReason || 'no reason recorded'}`,
              );
              console.log(
                `# lost guest: ${losses[losses.length - 1]}; its sample skipped, a fresh VM goes on`,
              );
              await destroy(cloud, vm.id);
              vm = await createVm(cloud, `bench-d${dirty}-${losses.length}`, MEMORY_MIB, dirty);
              here = (await vmOf(cloud.admin, vm.id)).hostId === h1.id ? h1 : h2;
              continue;
            }
            const { sample, migration } = run;
            here = to;
            if (round > 0) flotilla.push(sample);
            const path = migration.phases
              .map((p) => /commit path ([\d.]+) ms/.exec(p.detail)?.[1])
              .find(Boolean);
            if (round > 0 && path) commitPaths.push(Number(path));
            if (round > 0) measured++;
            if (round > 0 && migration.phases.some((p) => p.detail.includes('switched over as armed')))
              agentAlone++;
            if (round > 0)
              for (const p of migration.phases)
                if (p.startedAt && p.endedAt) {
                  const name = migrationV1.MigrationPhase[p.phase].replace('MIGRATION_PHASE_', '');
                  (phaseMs[name] ??= []).push(p.endedAt.getTime() - p.startedAt.getTime());
                }
          }
        }
      }
      const a = {
        wall: median(hand.map((s) => s.wallMs)),
        down: median(hand.map((s) => s.downtimeMs)),
        total: median(hand.map((s) => s.qemuTotalMs)),
      };
      const b = {
        wall: median(flotilla.map((s) => s.wallMs)),
        down: median(flotilla.map((s) => s.downtimeMs)),
        total: median(flotilla.map((s) => s.qemuTotalMs)),
      };
      if (dirty === 0) idleFlotillaWall = b.wall;
      lines.push([
        `${dirty} MiB`,
        `${f0(a.wall)} / ${f0(b.wall)}`,
        x(b.wall / a.wall),
        `${f0(a.down)} / ${f0(b.down)}`,
        `${f0(b.down - a.down)} ms`,
        `${f0(median(hand.map((s) => s.rounds)))} / ${f0(median(flotilla.map((s) => s.rounds)))}`,
        `${f0(median(hand.map((s) => s.bytes)) / MiB)} / ${f0(median(flotilla.map((s) => s.bytes)) / MiB)}`,
        b.wall <= a.wall * 1.05 && b.down <= a.down + 10 ? 'met' : 'missed',
        f0(median(commitPaths)),
      ]);
      phaseRows.push([
        `${dirty} MiB`,
        ...['PREFLIGHT', 'PREPARE', 'TRANSFER', 'SWITCHOVER', 'CLEANUP'].map((n) =>
          phaseMs[n] ? f0(median(phaseMs[n])) : '-',
        ),
      ]);
      await destroy(cloud, vm.id);
    }
    console.log('\n## (a) by hand over QMP vs (b) through Flotilla (medians)');
    for (const l of table(
      [
        'dirty',
        'wall ms a / b',
        'b/a',
        'downtime ms a / b',
        'b−a',
        'rounds a / b',
        'MiB sent a / b',
        'target',
        'service switch ms',
      ],
      lines,
    ))
      console.log(l);
    console.log('(b) by phase, medians in ms (the phases as the migration records them):');
    for (const l of table(['dirty', 'preflight', 'prepare', 'transfer', 'switchover', 'cleanup'], phaseRows))
      console.log(l);
    const reactions = cloud.armedSwitchMs;
    if (reactions.length)
      console.log(
        `the source agents' armed switch, from QEMU's pause to migrate-continue (their logs, every migration of the run): median ${f2(median(reactions))} ms, max ${f2(Math.max(...reactions))} ms over ${reactions.length}`,
      );
    console.log(
      `measured migrations the source agent had switched over alone when the service looked: ${agentAlone} of ${measured} (the others: the service saw the pause and sent SwitchOver too, whose time is the "service switch ms" column; "-" when it sent none)`,
    );
    console.log(
      `guests lost on the way (found HALTED; their samples skipped): ${losses.length} of ${flotillaMigrations} migrations through Flotilla${losses.length ? `: ${losses.join('; ')}` : ''}`,
    );

    if (PARTS.has('c')) {
      // ---- (c) a guest faster than the link ----
      console.log('\n## (c) non-convergence: demo.dirty=64 at 128 MiB/s');
      const busy = await createVm(cloud, 'bench-busy', MEMORY_MIB, 64);
      const slow = { bandwidthBytesPerSec: 128 * MiB };
      const cRows: string[][] = [];
      const cSaid: string[] = [];
      for (const [label, o] of [
        ['no options', options(slow)],
        ['auto-converge', options({ ...slow, autoConverge: true })],
        ['post-copy', options({ ...slow, postCopy: true })],
      ] as const) {
        const vmNow = await vmOf(cloud.admin, busy.id);
        const to = vmNow.hostId === h1.id ? h2 : h1;
        const run = await migrateThroughFlotilla(cloud, vmNow, to, o).catch((e: unknown) => {
          // Refused at creation (e.g. auto-converge on a TCG host): a row that says why.
          if ((e as grpc.ServiceError).code !== grpc.status.FAILED_PRECONDITION) throw e;
          const why = (e as grpc.ServiceError).details;
          cSaid.push(`${label}: refused: ${why}`);
          cRows.push([label, 'REFUSED', '-', '-', '-', why.slice(0, 110)]);
          return undefined;
        });
        if (!run) continue;
        const { sample, migration } = run;
        cSaid.push(
          `${label}: ${migration.error?.message ?? ''} | ${migration.phases.map((p) => `${String(p.phase).replace('MIGRATION_PHASE_', '')}: ${p.detail}`).join(' | ')}`,
        );
        cRows.push([
          label,
          migrationV1.MigrationState[migration.state].replace('MIGRATION_STATE_', ''),
          String(sample.rounds),
          f0(sample.wallMs),
          f0(sample.downtimeMs),
          (migration.error?.message ?? migration.phases.at(-2)?.detail ?? '').slice(0, 110),
        ]);
      }
      for (const l of table(
        ['options', 'outcome', 'rounds', 'wall ms', 'downtime ms', 'what Flotilla said'],
        cRows,
      ))
        console.log(l);
      for (const l of cSaid) console.log(`  ${l}`);
    }

    if (PARTS.has('d')) {
      // ---- (d) evacuation ----
      console.log(`\n## (d) evacuating a host with ${EVACUATE_VMS} idle 128 MiB VMs (max_parallel 2)`);
      const vms: computeV1.Vm[] = [];
      for (let i = 0; i < EVACUATE_VMS; i++) vms.push(await createVm(cloud, `bench-evac-${i}`, 128, 0));
      // Gather them on one host first.
      for (const vm of vms) {
        const now = await vmOf(cloud.admin, vm.id);
        if (now.hostId !== h1.id) await migrateThroughFlotilla(cloud, now, h1);
      }
      const started = process.hrtime.bigint();
      const { evacuation } = await cloud.evacuations.call.evacuateHost({
        requestId: randomUUID(),
        hostId: h1.id,
        maxParallel: 2,
        onBlocked: migrationV1.EvacuationBlockedPolicy.EVACUATION_BLOCKED_POLICY_FAIL,
        withStorage: false,
        enterMaintenance: false,
        migrationOptions: options(),
        name: '',
        labels: {},
      });
      const done = await until(
        'the evacuation',
        600_000,
        async () => {
          const e = need(
            (await cloud.evacuations.call.getEvacuation({ id: need(evacuation, 'evacuation').id }))
              .evacuation,
            'evacuation',
          );
          return e.state === migrationV1.EvacuationState.EVACUATION_STATE_RUNNING ||
            e.state === migrationV1.EvacuationState.EVACUATION_STATE_CANCELLING
            ? undefined
            : e;
        },
        20,
      );
      const evacMs = Number(process.hrtime.bigint() - started) / 1e6;
      for (const l of table(
        ['VMs', 'outcome', 'evacuation ms', `${EVACUATE_VMS} × one idle migration (b)`, 'ratio'],
        [
          [
            String(EVACUATE_VMS),
            migrationV1.EvacuationState[done.state].replace('EVACUATION_STATE_', ''),
            f0(evacMs),
            f0(EVACUATE_VMS * idleFlotillaWall),
            f2(evacMs / (EVACUATE_VMS * idleFlotillaWall)),
          ],
        ],
      ))
        console.log(l);
      await cloud.admin.hosts.call.enableHost({ id: h1.id });
    }
  } catch (e) {
    console.error(`migration benchmark failed: ${e instanceof Error ? e.stack : String(e)}`);
    console.error(`--- flotilla up (last lines) ---\n${cloud.output().slice(-6000)}`);
    process.exitCode = 1;
  } finally {
    await stopCloud(cloud);
  }
}

if (require.main === module)
  void main().then(
    () => process.exit(),
    (e: unknown) => {
      console.error(e);
      process.exit(1);
    },
  );
