/**
 * Boot benchmark (issue 4): what Flotilla adds to booting a real VM, and what the host agent costs per
 * running VM, against baselines measured in the same run.
 *
 *  (a) baseline: the QEMU command the qemu driver runs, started by hand (spawn qemu-system-x86_64 with the
 *      argv buildQemuArgv makes from the spec.json the driver recorded for a VM of this run: same machine,
 *      CPU model, memory, kernel, initrd, NIC, serial log, sandbox; only the VM's own paths, uuid, name in
 *      the guest's cmdline and forwarded host port differ). Timed from spawn to `DEMO-READY name=<name>` in
 *      its serial log.
 *  (b) through Flotilla: StartVm at the gateway (→ compute → placement → host agent → qemu driver → QEMU) for
 *      a VM created beforehand with start=false, timed from the RPC to `DEMO-READY name=<name>` in that VM's
 *      serial log (<agent state dir>/qemu/<vmId>/serial.log), polled the same way as (a) (every 10 ms).
 *      Flotilla's own part: RPC → QEMU's pidfile written (its mtime) against spawn → pidfile in (a).
 *      Target: (b) ≤ 1.1× (a).
 *  (c) host agent cost per idle VM: the agent's RSS (/proc/<pid>/status VmRSS, sampled every second) and CPU
 *      (utime+stime) over a window with 0 VMs, then with N idle running demo VMs (128 MiB each, after all
 *      printed DEMO-READY), then with 0 VMs again; per VM = (with − the last window) / N: the agent in the
 *      same state (the first window shows its drift after the boot rounds: V8 shrinks the heap they grew
 *      some time later, sometimes inside that window). Before each window the
 *      services are idle and the agent's RSS steady (within 1 MiB over 10 s, at most 60 s). Heartbeats every 2 s (compute's
 *      FLOTILLA_HEARTBEAT_INTERVAL_MS), /metrics scraped every 15 s in both windows. Target: < 20 MiB and
 *      < 1 % of a core per idle VM. The QEMU processes' own CPU and RSS per idle guest are printed for context.
 *
 * (a) and (b) alternate (the order swapped every round) after one unmeasured boot of each (page cache, JIT);
 * no two VMs boot at the same time. Services are dist/apps/{compute,storage,gateway,host-agent}/src/main.js
 * as child processes on free ports (database as in the RPC benchmark, in schemas boot_*); the agent uses the
 * qemu driver, the accelerator it probes (TCG where KVM does not work) and the demo image of
 * ~/.cache/flotilla/catalogue (built from Debian packages when missing).
 *
 * Every wait has a deadline and the whole run a watchdog; every child and every QEMU this benchmark started
 * is killed at the end, on error and on Ctrl-C. On failure the logs are kept and their directory printed.
 * Knobs: BOOT_BENCH_ROUNDS (5 per side), BOOT_BENCH_IDLE_VMS (4), BOOT_BENCH_IDLE_WINDOW_MS (30000),
 * BOOT_BENCH_SCRAPE_MS (15000; 0: no /metrics scrapes), BOOT_BENCH_PGLITE=1, BOOT_BENCH_KEEP=0.
 * A benchmark reports, it does not assert: a missed target does not fail the run, a crash does.
 */
import { ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { commonV1, computeV1 } from '@flotilla/contracts';
import {
  buildQemuArgv,
  DEMO_READY_MARKER,
  demoImageForTests,
  isProcessAlive,
  QemuLaunchSpec,
  vmUuid,
} from '@flotilla/hypervisor';
import {
  cloudClients,
  CloudClients,
  freePort,
  kernelImageRegistration,
  operationDone,
  vmRequest,
} from '@flotilla/platform';
import {
  backgroundLoad,
  benchDatabase,
  Child,
  clockTicksPerSec,
  cpuSinceUs,
  dropSchemas,
  envInt,
  exitHooks,
  f0,
  f2,
  logTail,
  machineBusyUs,
  machineDescription,
  median,
  pidOf,
  processCpuUs,
  processRssKiB,
  sleep,
  sourceCpuUs,
  startService,
  stopAll,
  table,
  tempDirs,
  until,
  x,
  killChildrenOnSignal,
  adminTokenFrom,
  requireBuilt,
} from '../harness';

const BOOT_RATIO_TARGET = 1.1;
const AGENT_MIB_PER_VM_TARGET = 20;
const AGENT_CORE_SHARE_PER_VM_TARGET = 0.01;
const HEARTBEAT_INTERVAL_MS = 2000;
const VM_MEMORY_MIB = 128;
/** Deadline of one boot to DEMO-READY (a TCG boot takes ~2 s here; a loaded machine much longer). */
const BOOT_DEADLINE_MS = 90_000;
const POLL_MS = 10;
const SCHEMAS = { compute: 'boot_compute', storage: 'boot_storage', gateway: 'boot_gateway' };

export interface BootSample {
  /** Spawn (a) or StartVm RPC (b) → DEMO-READY in the serial log, ms. */
  readyMs: number;
  /** → QEMU's pidfile written (its mtime against the wall clock at the start), ms. */
  pidfileMs: number;
  /** (b) only: StartVm answered (the operation accepted), ms. */
  rpcMs?: number;
  /** Busy CPU of the whole machine during the boot that was not this benchmark's processes, in CPUs. */
  othersCpus: number;
  /** CPU of the QEMU (its whole life up to ready) and of Flotilla's services during the boot, ms. */
  qemuCpuMs: number;
  servicesCpuMs: number;
}

export interface IdleWindow {
  vms: number;
  seconds: number;
  agentCpuMsPerSec: number;
  agentRssMiB: { mean: number; min: number; max: number };
  qemuCpuMsPerSec: number;
  qemuRssMiB: number;
  computeCpuMsPerSec: number;
  othersCpus: number;
}

export interface BootBenchResult {
  machine: string;
  backgroundLoad: number;
  accelerator: string;
  kernel: string;
  baseline: BootSample[];
  flotilla: BootSample[];
  bootRatio: number;
  bootTargetMet: boolean;
  /** 0 VMs before, N VMs, 0 VMs after (the VMs destroyed; the reference): the drift shows between the two. */
  idle: { without: IdleWindow; with: IdleWindow; after: IdleWindow; scrapeMs: number };
  agentMiBPerVm: number;
  agentCoreSharePerVm: number;
  idleTargetMet: boolean;
  logsKept?: string;
}

// ---------------------------------------------------------------------------------------------------------
// QEMU processes this benchmark started itself (the baseline): killed on every way out.

const baselineQemus = new Set<ChildProcess>();
exitHooks.add(() => {
  for (const q of baselineQemus) if (q.exitCode === null && q.signalCode === null) q.kill('SIGKILL');
});

/** SIGKILLs every QEMU whose pidfile is under `dir` and whose command line names it (never another's). */
function killQemusUnder(dir: string): number {
  let killed = 0;
  const visit = (d: string, depth: number) => {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const full = path.join(d, e.name);
      if (e.isDirectory() && depth < 4) visit(full, depth + 1);
      else if (e.name === 'qemu.pid') {
        const pid = Number(fs.readFileSync(full, 'utf8').trim());
        try {
          if (pid > 1 && fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(full)) {
            process.kill(pid, 'SIGKILL');
            killed++;
          }
        } catch {
          // gone already
        }
      }
    }
  };
  visit(dir, 0);
  return killed;
}

// ---------------------------------------------------------------------------------------------------------
// One boot, watched from outside: the pidfile and the serial log, polled every 10 ms on both sides.

interface Watched {
  readyMs: number;
  pidfileMs: number;
  pid: number;
}

async function watchBoot(opts: {
  serialLog: string;
  pidFile: string;
  marker: string;
  /** process.hrtime.bigint() and Date.now() taken together at the start. */
  startHr: bigint;
  startWall: number;
  alive: () => void;
}): Promise<Watched> {
  const deadline = Date.now() + BOOT_DEADLINE_MS;
  let pidfileMs = NaN;
  let pid = 0;
  let offset = 0;
  let text = '';
  for (;;) {
    if (!pid) {
      try {
        const st = fs.statSync(opts.pidFile);
        const content = fs.readFileSync(opts.pidFile, 'utf8').trim();
        if (content) {
          pid = Number(content);
          pidfileMs = st.mtimeMs - opts.startWall;
        }
      } catch {
        // not yet
      }
    }
    try {
      const fd = fs.openSync(opts.serialLog, 'r');
      try {
        const size = fs.fstatSync(fd).size;
        if (size > offset) {
          const buf = Buffer.alloc(size - offset);
          fs.readSync(fd, buf, 0, buf.length, offset);
          offset = size;
          text += buf.toString('latin1');
        }
      } finally {
        fs.closeSync(fd);
      }
    } catch {
      // not created yet
    }
    if (text.includes(opts.marker)) {
      const readyMs = Number(process.hrtime.bigint() - opts.startHr) / 1e6;
      return { readyMs, pidfileMs, pid };
    }
    opts.alive();
    if (Date.now() > deadline)
      throw new Error(
        `no "${opts.marker}" in ${opts.serialLog} within ${BOOT_DEADLINE_MS / 1000} s; last output: ${text.slice(-300)}`,
      );
    await sleep(POLL_MS);
  }
}

// ---------------------------------------------------------------------------------------------------------

interface Services {
  compute: Child;
  storage: Child;
  gateway: Child;
  agent: Child;
  all: Child[];
  clients: CloudClients;
  agentStateDir: string;
  agentAdmin: string;
  /** PostgreSQL backends of the benchmark's database (when it runs on this machine), looked up per boot. */
  dbPids?: () => Promise<number[]>;
}

function fail(what: string, services: Child[]): () => void {
  return () => {
    for (const c of services) if (c.exited) throw new Error(`${c.name} exited during ${what}${logTail(c)}`);
  };
}

async function startServices(dataDir: string, catalogueDir: string, dbUrl: string): Promise<Services> {
  const dist = path.resolve(__dirname, '..', '..');
  requireBuilt(dist, ['compute', 'storage', 'gateway', 'host-agent']);
  const [
    gatewayPort,
    computePort,
    storagePort,
    adminPort,
    agentPort,
    agentAdminPort,
    ec2Port,
    openstackPort,
  ] = await Promise.all(Array.from({ length: 8 }, () => freePort()));
  const tokenFile = path.join(dataDir, 'admin-token');
  // Unix socket paths are limited to 108 bytes: the agent's state directory is short (/tmp/flb-XXXXXX/a).
  const agentStateDir = path.join(dataDir, 'a');
  // Only this benchmark's settings: a FLOTILLA_* of the caller would change what is measured.
  const base: NodeJS.ProcessEnv = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith('FLOTILLA_') && k !== 'DATABASE_URL'),
  );
  Object.assign(base, {
    DATABASE_URL: dbUrl,
    FLOTILLA_SERVICE_TOKEN: randomUUID(),
    FLOTILLA_DATA_DIR: dataDir,
  });
  const compute = `127.0.0.1:${computePort}`;
  const storage = `127.0.0.1:${storagePort}`;
  const log = (name: string) => path.join(dataDir, `${name}.log`);
  const c = startService('compute', dist, 'compute', {
    log: log('compute'),
    env: {
      ...base,
      FLOTILLA_COMPUTE_ADDRESS: compute,
      FLOTILLA_STORAGE_URL: storage,
      FLOTILLA_DB_SCHEMA: SCHEMAS.compute,
      FLOTILLA_HEARTBEAT_INTERVAL_MS: String(HEARTBEAT_INTERVAL_MS),
    },
  });
  const s = startService('storage', dist, 'storage', {
    log: log('storage'),
    env: { ...base, FLOTILLA_STORAGE_ADDRESS: storage, FLOTILLA_DB_SCHEMA: SCHEMAS.storage },
  });
  const g = startService('gateway', dist, 'gateway', {
    log: log('gateway'),
    env: {
      ...base,
      FLOTILLA_GATEWAY_ADDRESS: `127.0.0.1:${gatewayPort}`,
      FLOTILLA_ADMIN_HTTP_ADDRESS: `127.0.0.1:${adminPort}`,
      FLOTILLA_EC2_ADDRESS: `127.0.0.1:${ec2Port}`,
      FLOTILLA_OPENSTACK_ADDRESS: `127.0.0.1:${openstackPort}`,
      FLOTILLA_COMPUTE_URL: compute,
      FLOTILLA_STORAGE_URL: storage,
      FLOTILLA_BOOTSTRAP_TOKEN_FILE: tokenFile,
      FLOTILLA_DB_SCHEMA: SCHEMAS.gateway,
    },
  });
  const agentAdmin = `127.0.0.1:${agentAdminPort}`;
  const a = startService('host agent', dist, 'host-agent', {
    log: log('host-agent'),
    env: {
      ...base,
      FLOTILLA_AGENT_ADDRESS: `127.0.0.1:${agentPort}`,
      FLOTILLA_AGENT_NAME: 'boot-host-1',
      FLOTILLA_AGENT_STATE_DIR: agentStateDir,
      FLOTILLA_AGENT_ADMIN_ADDRESS: agentAdmin,
      FLOTILLA_COMPUTE_URL: compute,
      FLOTILLA_IMAGE_DIR: catalogueDir,
      FLOTILLA_DRIVER: 'qemu',
    },
  });
  const all = [c, s, g, a];
  const token = await adminTokenFrom(tokenFile, all);
  const clients = cloudClients(`127.0.0.1:${gatewayPort}`, token);
  const page = { page: { pageSize: 10, pageToken: '', filter: '' } };
  // The agent probes the accelerator first (a KVM boot of the demo kernel, up to 8 s) before it registers.
  await until(
    'host boot-host-1 ENABLED',
    120_000,
    async () => {
      const { hosts } = await clients.hosts.call.listHosts(page, { deadlineMs: 3000 });
      return hosts.some((h) => h.name === 'boot-host-1' && h.state === computeV1.HostState.HOST_STATE_ENABLED)
        ? true
        : undefined;
    },
    all,
  );
  return {
    compute: c,
    storage: s,
    gateway: g,
    agent: a,
    all,
    clients,
    agentStateDir,
    agentAdmin,
  };
}

async function registerDemo(clients: CloudClients): Promise<string> {
  const demo = await demoImageForTests();
  await clients.images.call.registerImage(
    kernelImageRegistration('demo', demo, 'demo guest (boot benchmark)'),
  );
  return `${demo.kernel.package} ${demo.kernel.version}`;
}

async function createVm(svc: Services, name: string, start: boolean): Promise<string> {
  const { vm, operation } = await svc.clients.vms.call.createVm(
    vmRequest({
      name,
      flavorId: '',
      vcpus: 1,
      memoryMib: VM_MEMORY_MIB,
      start,
      boot: { image: 'demo', kernel: '', initrd: '', cmdline: `demo.name=${name}` },
      nics: [{ mac: '', forwards: [{ guestPort: 80, hostAddress: '' }] }],
    }),
  );
  if (!vm || !operation) throw new Error(`create ${name}: no VM or operation in the answer`);
  if (!start) await succeeded(svc, operation, `create ${name}`);
  return vm.id;
}

async function succeeded(svc: Services, operation: { id: string } | undefined, what: string): Promise<void> {
  if (!operation) throw new Error(`${what}: no operation in the answer`);
  const op = await operationDone(svc.clients.operations, operation.id, 120_000);
  if (op.state !== commonV1.OperationState.OPERATION_STATE_SUCCEEDED)
    throw new Error(`${what}: operation ${op.state}: ${op.error?.message ?? ''}`);
}

async function destroyVm(svc: Services, id: string): Promise<void> {
  const dir = path.join(svc.agentStateDir, 'qemu', id);
  const pidFile = path.join(dir, 'qemu.pid');
  const pid = fs.existsSync(pidFile) ? Number(fs.readFileSync(pidFile, 'utf8').trim()) : 0;
  const { operation } = await svc.clients.vms.call.destroyVm({ id, requestId: '' });
  await succeeded(svc, operation, `destroy ${id}`);
  if (pid)
    await until(`QEMU pid ${pid} to exit`, 15_000, async () => (isProcessAlive(pid) ? undefined : true), []);
}

/** Waits (≤ 5 s) until Flotilla's processes have used ≤ 5 % of a core for 500 ms. */
async function settle(svc: Services): Promise<void> {
  const pids = svc.all.map(pidOf);
  const deadline = Date.now() + 5000;
  let before = sourceCpuUs(pids);
  while (Date.now() < deadline) {
    await sleep(500);
    if (cpuSinceUs(pids, before) <= 25_000) return;
    before = sourceCpuUs(pids);
  }
}

/** Machine CPU that was not ours during [busyBefore, now], in CPUs. */
function othersCpus(busyBeforeUs: number, oursUs: number, seconds: number): number {
  return Math.max(0, machineBusyUs() - busyBeforeUs - oursUs) / 1e6 / seconds;
}

// ---------------------------------------------------------------------------------------------------------
// (b) through Flotilla, (a) by hand.

async function bootFlotilla(svc: Services, name: string): Promise<BootSample & { id: string }> {
  const id = await createVm(svc, name, false);
  await settle(svc);
  const dir = path.join(svc.agentStateDir, 'qemu', id);
  const pids = [...svc.all.map(pidOf), ...((await svc.dbPids?.()) ?? [])];
  const servicesBefore = sourceCpuUs(pids);
  const busyBefore = machineBusyUs();
  const startHr = process.hrtime.bigint();
  const startWall = Date.now();
  let rpcMs: number | undefined;
  const started = svc.clients.vms.call.startVm({ id, requestId: '', hostId: '' }).then((r) => {
    rpcMs = Number(process.hrtime.bigint() - startHr) / 1e6;
    return r;
  });
  let rpcError: unknown;
  started.catch((e: unknown) => (rpcError = e));
  const w = await watchBoot({
    serialLog: path.join(dir, 'serial.log'),
    pidFile: path.join(dir, 'qemu.pid'),
    marker: `${DEMO_READY_MARKER} name=${name}`,
    startHr,
    startWall,
    alive: () => {
      if (rpcError) throw rpcError;
      fail(`the boot of ${name}`, svc.all)();
    },
  });
  const seconds = w.readyMs / 1000;
  const qemuCpuUs = processCpuUs(w.pid);
  const servicesUs = cpuSinceUs(pids, servicesBefore);
  const others = othersCpus(busyBefore, qemuCpuUs + servicesUs, seconds);
  const { operation } = await started;
  await succeeded(svc, operation, `start ${name}`);
  return {
    id,
    readyMs: w.readyMs,
    pidfileMs: w.pidfileMs,
    rpcMs,
    othersCpus: others,
    qemuCpuMs: qemuCpuUs / 1000,
    servicesCpuMs: servicesUs / 1000,
  };
}

/** The launch spec of a VM the driver started (spec.json), for the baseline to rebuild its argv. */
function recordedLaunch(svc: Services, vmId: string): QemuLaunchSpec {
  const file = path.join(svc.agentStateDir, 'qemu', vmId, 'spec.json');
  return JSON.parse(fs.readFileSync(file, 'utf8')) as QemuLaunchSpec;
}

async function bootByHand(
  template: QemuLaunchSpec,
  baseDir: string,
  name: string,
  svc: Services,
): Promise<BootSample> {
  const vmId = randomUUID();
  const dir = path.join(baseDir, vmId);
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
    uuid: vmUuid(vmId),
    vm: {
      ...template.vm,
      vmId,
      name,
      boot:
        template.vm.boot.kind === 'kernel'
          ? {
              ...template.vm.boot,
              cmdline: template.vm.boot.cmdline.replace(/demo\.name=\S+/, `demo.name=${name}`),
            }
          : template.vm.boot,
      nics: template.vm.nics.map((n) => ({
        ...n,
        forwards: n.forwards.map((f) => ({ ...f, hostPort })),
      })),
    },
  };
  const argv = buildQemuArgv(launch, paths);
  await settle(svc);
  const pids = [...svc.all.map(pidOf), ...((await svc.dbPids?.()) ?? [])];
  const servicesBefore = sourceCpuUs(pids);
  const busyBefore = machineBusyUs();
  // As the driver spawns it (qemu-process.ts): detached, stdout/stderr to a file, cwd the VM directory.
  const log = fs.openSync(path.join(dir, 'qemu.log'), 'a', 0o600);
  const startHr = process.hrtime.bigint();
  const startWall = Date.now();
  const qemu = spawn('qemu-system-x86_64', argv, { detached: true, stdio: ['ignore', log, log], cwd: dir });
  fs.closeSync(log);
  baselineQemus.add(qemu);
  let spawnError: Error | undefined;
  qemu.once('error', (e) => (spawnError = e));
  try {
    const w = await watchBoot({
      serialLog: paths.serialLog,
      pidFile: paths.pidFile,
      marker: `${DEMO_READY_MARKER} name=${name}`,
      startHr,
      startWall,
      alive: () => {
        if (spawnError) throw spawnError;
        if (qemu.exitCode !== null || qemu.signalCode !== null)
          throw new Error(
            `baseline QEMU exited (${qemu.exitCode ?? qemu.signalCode}): ${fs.readFileSync(path.join(dir, 'qemu.log'), 'utf8').slice(-600)}`,
          );
        fail(`the baseline boot ${name}`, svc.all)();
      },
    });
    const seconds = w.readyMs / 1000;
    const qemuCpuUs = processCpuUs(w.pid);
    const servicesUs = cpuSinceUs(pids, servicesBefore);
    return {
      readyMs: w.readyMs,
      pidfileMs: w.pidfileMs,
      othersCpus: othersCpus(busyBefore, qemuCpuUs + servicesUs, seconds),
      qemuCpuMs: qemuCpuUs / 1000,
      servicesCpuMs: servicesUs / 1000,
    };
  } finally {
    const exited = new Promise<void>((r) =>
      qemu.exitCode !== null || qemu.signalCode !== null ? r() : qemu.once('exit', () => r()),
    );
    qemu.kill('SIGKILL');
    await Promise.race([exited, sleep(10_000)]);
    baselineQemus.delete(qemu);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------------------
// (c) the agent's cost per idle VM.

function scrape(address: string): Promise<void> {
  return new Promise((resolve) => {
    const req = http.get(`http://${address}/metrics`, { timeout: 5000 }, (res) => {
      res.resume();
      res.on('end', () => resolve());
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve());
  });
}

async function idleWindow(svc: Services, vms: number, ms: number, scrapeMs: number): Promise<IdleWindow> {
  const agentPid = pidOf(svc.agent);
  const computePid = pidOf(svc.compute);
  const qemuPids = fs
    .readdirSync(path.join(svc.agentStateDir, 'qemu'))
    .map((d) => path.join(svc.agentStateDir, 'qemu', d, 'qemu.pid'))
    .filter((f) => fs.existsSync(f))
    .map((f) => Number(fs.readFileSync(f, 'utf8').trim()))
    .filter(isProcessAlive);
  if (qemuPids.length !== vms) throw new Error(`expected ${vms} running QEMUs, found ${qemuPids.length}`);
  const ours = [...svc.all.map(pidOf), ...qemuPids];
  const oursBefore = sourceCpuUs(ours);
  const agentBefore = processCpuUs(agentPid);
  const computeBefore = processCpuUs(computePid);
  const qemuBefore = sourceCpuUs(qemuPids);
  const busyBefore = machineBusyUs();
  const rss: number[] = [];
  const qemuRss: number[] = [];
  const started = Date.now();
  let nextScrape = scrapeMs > 0 ? started : Infinity;
  while (Date.now() - started < ms) {
    if (Date.now() >= nextScrape) {
      await scrape(svc.agentAdmin);
      nextScrape += scrapeMs;
    }
    rss.push(processRssKiB(agentPid) / 1024);
    if (qemuPids.length)
      qemuRss.push(qemuPids.reduce((sum, p) => sum + processRssKiB(p), 0) / 1024 / qemuPids.length);
    fail('the idle window', svc.all)();
    await sleep(Math.min(1000, ms - (Date.now() - started)));
  }
  const seconds = (Date.now() - started) / 1000;
  const oursUs = cpuSinceUs(ours, oursBefore);
  return {
    vms,
    seconds,
    agentCpuMsPerSec: (processCpuUs(agentPid) - agentBefore) / 1000 / seconds,
    agentRssMiB: {
      mean: rss.reduce((a, b) => a + b, 0) / rss.length,
      min: Math.min(...rss),
      max: Math.max(...rss),
    },
    qemuCpuMsPerSec: qemuPids.length
      ? cpuSinceUs(qemuPids, qemuBefore) / 1000 / seconds / qemuPids.length
      : NaN,
    qemuRssMiB: qemuRss.length ? qemuRss.reduce((a, b) => a + b, 0) / qemuRss.length : NaN,
    computeCpuMsPerSec: (processCpuUs(computePid) - computeBefore) / 1000 / seconds,
    othersCpus: othersCpus(busyBefore, oursUs, seconds),
  };
}

/**
 * Before a window: Flotilla's processes idle and the agent's RSS steady (within 1 MiB over 10 s; V8 shrinks
 * its heap some seconds after a busy phase), at most 60 s.
 */
async function steady(svc: Services): Promise<void> {
  await settle(svc);
  const agentPid = pidOf(svc.agent);
  const samples: number[] = [];
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    samples.push(processRssKiB(agentPid) / 1024);
    const last = samples.slice(-10);
    if (last.length === 10 && Math.max(...last) - Math.min(...last) < 1) return;
    fail('waiting for the agent to settle', svc.all)();
    await sleep(1000);
  }
}

async function bootIdle(svc: Services, n: number): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const name = `idle-${i}`;
    const id = await createVm(svc, name, true);
    ids.push(id);
    const dir = path.join(svc.agentStateDir, 'qemu', id);
    await watchBoot({
      serialLog: path.join(dir, 'serial.log'),
      pidFile: path.join(dir, 'qemu.pid'),
      marker: `${DEMO_READY_MARKER} name=${name}`,
      startHr: process.hrtime.bigint(),
      startWall: Date.now(),
      alive: fail(`the boot of ${name}`, svc.all),
    });
  }
  return ids;
}

// ---------------------------------------------------------------------------------------------------------

export interface BootBenchOptions {
  rounds?: number;
  idleVms?: number;
  idleWindowMs?: number;
  scrapeMs?: number;
  log?: (line: string) => void;
}

export async function runBootBench(options: BootBenchOptions = {}): Promise<BootBenchResult> {
  const rounds = options.rounds ?? envInt('BOOT_BENCH_ROUNDS', 5);
  const idleVms = options.idleVms ?? envInt('BOOT_BENCH_IDLE_VMS', 4);
  const windowMs = options.idleWindowMs ?? envInt('BOOT_BENCH_IDLE_WINDOW_MS', 30_000);
  const scrapeEnv = Number(process.env.BOOT_BENCH_SCRAPE_MS);
  const scrapeMs = options.scrapeMs ?? (Number.isFinite(scrapeEnv) && scrapeEnv >= 0 ? scrapeEnv : 15_000);
  const log = options.log ?? ((line: string) => process.stderr.write(`boot bench: ${line}\n`));
  // Start-up (≤ 3.5 min), 2·(rounds+1) boots, N idle boots, three windows, teardown: each bounded, all capped.
  const watchdogMs = 540_000 + (2 * (rounds + 1) + idleVms) * (BOOT_DEADLINE_MS + 30_000) + 3 * windowMs;
  const background = await backgroundLoad(1000);
  const demo = await demoImageForTests();
  // Short: the agent's unix sockets live below it (108-byte limit).
  const dataDir = fs.mkdtempSync(path.join('/tmp', 'flb-'));
  tempDirs.add(dataDir);
  const watchdog = setTimeout(() => {
    tempDirs.delete(dataDir);
    process.stderr.write(
      `boot bench: still running after ${watchdogMs / 1000} s: stopping; logs kept in ${dataDir}\n`,
    );
    process.exit(1); // the exit hooks kill every child and QEMU
  }, watchdogMs);
  watchdog.unref();
  // Flotilla's QEMUs are detached (they outlive the agent by design): swept by pidfile on every way out.
  const sweep = () => killQemusUnder(dataDir);
  exitHooks.add(sweep);
  let failed = true;
  let svc: Services | undefined;
  let dbUrl: string | undefined;
  const vmIds = new Set<string>();
  try {
    const db = await benchDatabase(dataDir, { pgliteEnv: 'BOOT_BENCH_PGLITE' });
    dbUrl = db.url;
    await dropSchemas(db.url, Object.values(SCHEMAS));
    log(`database: ${db.description}; starting services (the agent probes the accelerator first)`);
    svc = await startServices(dataDir, demo.catalogueDir, db.url);
    const dbCpu = db.cpu;
    if (dbCpu)
      svc.dbPids = async () => {
        const src = await dbCpu();
        return typeof src === 'number' ? [src] : src;
      };
    const s = svc;
    const kernel = await registerDemo(s.clients);
    const host = (await s.clients.hosts.call.listHosts({ page: { pageSize: 10, pageToken: '', filter: '' } }))
      .hosts[0];
    const baseDir = path.join(dataDir, 'b');

    // Warm-up: one boot each way, unmeasured; the first one's spec.json is the baseline's template.
    log('warm-up boots');
    const warm = await bootFlotilla(s, 'boot-warm-f');
    vmIds.add(warm.id);
    const template = recordedLaunch(s, warm.id);
    await destroyVm(s, warm.id);
    vmIds.delete(warm.id);
    await bootByHand(template, baseDir, 'boot-warm-b', s);

    const baseline: BootSample[] = [];
    const flotilla: BootSample[] = [];
    for (let r = 0; r < rounds; r++) {
      const order = r % 2 ? (['flotilla', 'baseline'] as const) : (['baseline', 'flotilla'] as const);
      for (const side of order) {
        if (side === 'baseline') {
          baseline.push(await bootByHand(template, baseDir, `boot-b-${r}`, s));
        } else {
          const sample = await bootFlotilla(s, `boot-f-${r}`);
          vmIds.add(sample.id);
          flotilla.push(sample);
          await destroyVm(s, sample.id);
          vmIds.delete(sample.id);
        }
      }
      log(
        `round ${r + 1}/${rounds}: by hand ${f0(baseline[r].readyMs)} ms, through Flotilla ${f0(flotilla[r].readyMs)} ms`,
      );
    }

    log(`idle cost: ${windowMs / 1000} s with 0 VMs`);
    await steady(s);
    const without = await idleWindow(s, 0, windowMs, scrapeMs);
    log(`booting ${idleVms} idle VMs`);
    for (const id of await bootIdle(s, idleVms)) vmIds.add(id);
    await steady(s);
    log(`idle cost: ${windowMs / 1000} s with ${idleVms} VMs`);
    const withVms = await idleWindow(s, idleVms, windowMs, scrapeMs);
    for (const id of [...vmIds]) {
      await destroyVm(s, id);
      vmIds.delete(id);
    }
    log(`idle cost: ${windowMs / 1000} s with 0 VMs again`);
    await steady(s);
    const after = await idleWindow(s, 0, windowMs, scrapeMs);

    const bootRatio = median(flotilla.map((b) => b.readyMs)) / median(baseline.map((b) => b.readyMs));
    // Against the 0-VM window after the VMs: the agent in the same state (its heap after running VMs). The
    // window before is printed for the drift: V8 shrinks the heap the boot rounds grew some time after them,
    // sometimes inside that window (a 125 → 91 MiB drop and its GC's CPU would read as a negative cost).
    const zeroRss = after.agentRssMiB.mean;
    const zeroCpu = after.agentCpuMsPerSec;
    const agentMiBPerVm = (withVms.agentRssMiB.mean - zeroRss) / idleVms;
    const agentCoreSharePerVm = (withVms.agentCpuMsPerSec - zeroCpu) / 1000 / idleVms;
    failed = false;
    return {
      machine: machineDescription(),
      backgroundLoad: background,
      accelerator: host?.accelerator ?? '?',
      kernel,
      baseline,
      flotilla,
      bootRatio,
      bootTargetMet: bootRatio <= BOOT_RATIO_TARGET,
      idle: { without, with: withVms, after, scrapeMs },
      agentMiBPerVm,
      agentCoreSharePerVm,
      idleTargetMet:
        agentMiBPerVm < AGENT_MIB_PER_VM_TARGET && agentCoreSharePerVm < AGENT_CORE_SHARE_PER_VM_TARGET,
    };
  } finally {
    clearTimeout(watchdog);
    if (svc) {
      for (const id of vmIds) await destroyVm(svc, id).catch(() => undefined);
      for (const c of Object.values(svc.clients) as Array<{ close(): void }>) c.close();
    }
    await stopAll();
    const left = sweep();
    if (left) log(`killed ${left} QEMU process(es) the services left behind`);
    exitHooks.delete(sweep);
    if (dbUrl && !failed) await dropSchemas(dbUrl, Object.values(SCHEMAS)).catch(() => undefined);
    tempDirs.delete(dataDir);
    if (failed && process.env.BOOT_BENCH_KEEP !== '0')
      process.stderr.write(`boot bench: logs kept in ${dataDir} (services' logs, VM directories)\n`);
    else fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------------------
// Output.

const stats = (v: number[]) => ({
  median: median(v),
  min: Math.min(...v),
  max: Math.max(...v),
  mean: v.reduce((a, b) => a + b, 0) / v.length,
});

export function formatBootBench(r: BootBenchResult): string {
  const a = r.baseline;
  const b = r.flotilla;
  const ready = { a: stats(a.map((s) => s.readyMs)), b: stats(b.map((s) => s.readyMs)) };
  const pid = { a: stats(a.map((s) => s.pidfileMs)), b: stats(b.map((s) => s.pidfileMs)) };
  const guest = {
    a: stats(a.map((s) => s.readyMs - s.pidfileMs)),
    b: stats(b.map((s) => s.readyMs - s.pidfileMs)),
  };
  const row = (name: string, side: BootSample[], st: typeof ready.a, base: typeof ready.a) => [
    name,
    String(side.length),
    f0(st.median),
    x(st.median / base.median),
    f0(st.mean),
    `${f0(st.min)}-${f0(st.max)}`,
    f0(stats(side.map((s) => s.pidfileMs)).median),
    f0(stats(side.map((s) => s.readyMs - s.pidfileMs)).median),
    f0(stats(side.map((s) => s.qemuCpuMs)).median),
    f0(stats(side.map((s) => s.servicesCpuMs)).median),
    f2(stats(side.map((s) => s.othersCpus)).mean),
  ];
  const { without: w0, with: wN, after: w1 } = r.idle;
  const n = wN.vms;
  const idleRow = (name: string, w: IdleWindow) => [
    name,
    f0(w.seconds),
    f2(w.agentRssMiB.mean),
    `${f2(w.agentRssMiB.min)}-${f2(w.agentRssMiB.max)}`,
    f2(w.agentCpuMsPerSec),
    f2(w.computeCpuMsPerSec),
    w.vms ? f2(w.qemuCpuMsPerSec) : '-',
    w.vms ? f0(w.qemuRssMiB) : '-',
    f2(w.othersCpus),
  ];
  const mib = r.agentMiBPerVm;
  const share = r.agentCoreSharePerVm;
  const flotillaOwn = pid.b.median - pid.a.median;
  return [
    `boot: demo guest (${r.kernel}, busybox initramfs), 1 vCPU, ${VM_MEMORY_MIB} MiB, accelerator ${r.accelerator}; ${r.machine}; CLK_TCK ${clockTicksPerSec()}`,
    `machine busy before the run (other work on this shared VM): ${(r.backgroundLoad * 100).toFixed(0)}% of all CPUs`,
    ...table(
      [
        'boot to DEMO-READY',
        'runs',
        'median ms',
        'vs (a)',
        'mean ms',
        'min-max ms',
        '→ pidfile ms',
        'pidfile → ready ms',
        'QEMU CPU ms',
        'services CPU ms',
        'others CPUs',
      ],
      [
        row('(a) baseline: QEMU by hand (spawn)', a, ready.a, ready.a),
        row('(b) Flotilla: StartVm at the gateway', b, ready.b, ready.a),
      ],
    ),
    `(b)'s StartVm answered after ${f0(stats(b.map((s) => s.rpcMs ?? NaN)).median)} ms (median); Flotilla's own part (RPC → QEMU's pidfile, minus spawn → pidfile by hand): ${f0(flotillaOwn)} ms; the guest's part (pidfile → ready): ${f0(guest.b.median)} ms vs ${f0(guest.a.median)} ms by hand (${x(guest.b.median / guest.a.median)})`,
    `("others CPUs": busy CPU of the machine during a boot that was neither that QEMU nor Flotilla's services, mean over the runs; "services CPU": compute+storage+gateway+agent and the database's backends during the boot)`,
    `boot target (b) ≤ ${BOOT_RATIO_TARGET}x (a): ${r.bootTargetMet ? 'met' : 'NOT met'} (${x(r.bootRatio)}: ${f0(ready.b.median)} vs ${f0(ready.a.median)} ms, medians)`,
    '',
    `host agent with 0 and ${n} idle demo VMs (heartbeat every ${HEARTBEAT_INTERVAL_MS / 1000} s, /metrics scraped ${r.idle.scrapeMs ? `every ${r.idle.scrapeMs / 1000} s` : 'never'})`,
    ...table(
      [
        'window',
        's',
        'agent RSS MiB',
        'min-max',
        'agent CPU ms/s',
        'compute CPU ms/s',
        'QEMU CPU ms/s per VM',
        'QEMU RSS MiB per VM',
        'others CPUs',
      ],
      [idleRow('0 VMs', w0), idleRow(`${n} VMs`, wN), idleRow('0 VMs again', w1)],
    ),
    `(RSS: mean of one sample a second; per VM = (N VMs − 0 VMs again) / ${n}; the first 0-VM window shows the agent's drift after the boot rounds)`,
    `agent per idle VM: ${f2(mib)} MiB RSS (${x(mib / AGENT_MIB_PER_VM_TARGET)} of the ${AGENT_MIB_PER_VM_TARGET} MiB target), ${(share * 100).toFixed(3)}% of a core (${x(share / AGENT_CORE_SHARE_PER_VM_TARGET)} of the ${AGENT_CORE_SHARE_PER_VM_TARGET * 100}% target)`,
    `idle target < ${AGENT_MIB_PER_VM_TARGET} MiB and < ${AGENT_CORE_SHARE_PER_VM_TARGET * 100}% of a core per VM: ${r.idleTargetMet ? 'met' : 'NOT met'}`,
    `for context, not the agent's cost: each idle guest's QEMU (TCG, TICK every second) uses ${f2(wN.qemuCpuMsPerSec / 10)}% of a core and ${f0(wN.qemuRssMiB)} MiB`,
  ].join('\n');
}

export async function main(): Promise<void> {
  killChildrenOnSignal();
  const qemu = (process.env.PATH ?? '')
    .split(path.delimiter)
    .some((d) => d && fs.existsSync(path.join(d, 'qemu-system-x86_64')));
  if (!qemu) {
    console.log(
      'boot: skipped: qemu-system-x86_64 is not on PATH (apt-get install qemu-system-x86 qemu-utils)',
    );
    return;
  }
  console.log(formatBootBench(await runBootBench()));
}

if (require.main === module) {
  main().catch((error: unknown) => {
    console.error(error);
    process.exitCode = 1;
  });
}
