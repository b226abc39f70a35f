import { setMaxListeners } from 'node:events';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CliError, ExitCode } from '../errors';
import { configPath, saveProfile } from '../profile';
import { sleep } from '../sleep';
import { PrefixedWriter } from './log-prefix';
import { assertPortsFree, waitForPort } from './net';
import { NodeSpawner } from './node-spawner';
import { reportDefaultSr, reportHosts, waitForGateway } from './readiness';
import { loadOrCreateServiceToken, readAdminToken } from './secrets';
import {
  address,
  adminTokenFile,
  agentName,
  databaseSpec,
  defaultSrPath,
  imageDirOf,
  portsFor,
  portsToCheck,
  servicePlan,
  sharedEnv,
  type Driver,
  type Ports,
  type UpPlanOptions,
} from './services';
import { realClock, Supervisor, type ChildSpec } from './supervisor';

export interface UpOptions {
  dataDir: string;
  agents: number;
  basePort: number;
  driver: Driver;
}

/** How long `up` waits after SIGTERM before it kills what is left. */
const stopGraceMs = 10_000;
/** How often `up` says it is still waiting for a service. */
const patienceMs = 15_000;

/**
 * Runs the local private cloud in the foreground until Ctrl-C or SIGTERM: the embedded database, the pool
 * services, the gateway and the host agents, each its own supervised process. Returns the exit code.
 */
export async function runUp(options: UpOptions, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const plan: UpPlanOptions = {
    distDir: locateDist(),
    dataDir: path.resolve(options.dataDir),
    basePort: options.basePort,
    agents: options.agents,
    driver: options.driver,
    dbPort: env.FLOTILLA_DB_PORT ? parsePort(env.FLOTILLA_DB_PORT) : undefined,
    node: process.execPath,
  };
  const externalDb = env.DATABASE_URL || undefined;
  const ports = portsFor(plan);
  await assertPortsFree(portsToCheck(ports, !externalDb));

  fs.mkdirSync(plan.dataDir, { recursive: true, mode: 0o700 });
  const serviceToken = loadOrCreateServiceToken(plan.dataDir);
  const tokenFile = adminTokenFile(plan.dataDir);
  const firstStart = !fs.existsSync(tokenFile);

  const names = [
    'up',
    'db',
    'compute',
    'storage',
    'network',
    'migration',
    'gateway',
    ...ports.agents.map((_, i) => agentName(i)),
  ];
  const writer = new PrefixedWriter(names, Boolean(process.stdout.isTTY));
  const say = (message: string) => writer.write('up', 'stdout', message);
  let dbUrl: ((url: string) => void) | undefined;
  const supervisor = new Supervisor({
    spawner: new NodeSpawner(),
    clock: realClock,
    log: say,
    onLine: (name, stream, text) => {
      writer.write(name, stream, text);
      if (name === 'db' && stream === 'stdout' && dbUrl) {
        const url = readyUrl(text);
        if (url) dbUrl(url);
      }
    },
  });

  // Children live in their own process groups; if `up` dies unexpectedly it takes them along.
  const killAll = () => supervisor.killAll('SIGKILL');
  process.on('exit', killAll);
  const stopping = new AbortController();
  // Every wait (one per service, plus their patience timers) listens on it at once.
  setMaxListeners(100, stopping.signal);
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    signals += 1;
    if (signals === 1) {
      say(`${signal}: stopping every service (again to kill them at once)`);
      stopping.abort();
    } else {
      say('killing every service');
      killAll();
      process.exit(130);
    }
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  try {
    const databaseUrl = externalDb ?? (await startDatabase());
    if (databaseUrl === undefined) return 0;
    const services = servicePlan(plan, ports, sharedEnv(plan, ports, { serviceToken, databaseUrl }, env));
    const started = services.pool.filter(startIfBuilt);
    await waitAll(started, 'to listen');
    if (stopping.signal.aborted) return 0;
    const gateway = startIfBuilt(services.gateway);
    services.agents.forEach(startIfBuilt);
    if (gateway) {
      const ok = await patiently('the gateway to serve', () =>
        waitForGateway(address(ports.gateway), stopping.signal),
      );
      if (!ok) return 0;
      // With a health check the gateway may serve a moment before its first-start token file is written.
      for (let i = 0; i < 20 && !readAdminToken(tokenFile) && !stopping.signal.aborted; i++)
        await sleep(250, stopping.signal);
      if (!stopping.signal.aborted)
        banner(plan, ports, {
          env,
          externalDb: Boolean(externalDb),
          firstStart,
          say,
          imageDir: imageDirOf(plan.dataDir, env),
        });
      // Which driver and accelerator each host got, and why (the agents decide: qemu when installed,
      // KVM only when a probe guest boots under it).
      const token = readAdminToken(tokenFile);
      if (token && ports.agents.length && !stopping.signal.aborted) {
        say('hosts as registered:');
        void reportHosts(
          address(ports.gateway),
          token,
          ports.agents.map((_, i) => agentName(i)),
          say,
          stopping.signal,
        )
          .catch((e: unknown) =>
            say(`  host report unavailable: ${e instanceof Error ? e.message : String(e)}`),
          )
          // A shared SR is seen by the hosts registered when it is created: after the report, then.
          .then(() =>
            reportDefaultSr({
              endpoint: address(ports.gateway),
              token,
              path: defaultSrPath(plan.dataDir, env),
              say,
              signal: stopping.signal,
            }),
          );
      }
    }
    if (!stopping.signal.aborted)
      await new Promise<void>((resolve) =>
        stopping.signal.addEventListener('abort', () => resolve(), { once: true }),
      );
    return 0;
  } finally {
    // Also ends every wait still pending when leaving on an error.
    stopping.abort();
    await supervisor.stop(stopGraceMs);
    say('stopped');
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
    process.removeListener('exit', killAll);
  }

  /** Starts the embedded database and resolves with its URL once it prints its ready line. */
  async function startDatabase(): Promise<string | undefined> {
    const ready = new Promise<string>((resolve) => (dbUrl = resolve));
    supervisor.start(databaseSpec(plan, ports, env));
    const url = await patiently('the embedded database', () =>
      Promise.race([
        ready,
        new Promise<undefined>((r) => stopping.signal.addEventListener('abort', () => r(undefined))),
      ]),
    );
    return url;
  }

  function startIfBuilt<T extends ChildSpec>(spec: T): T | undefined {
    if (!fs.existsSync(spec.args[0])) {
      say(
        `${spec.name} is not built (${spec.args[0]} is missing): skipping it; build with \`node tools/build.mjs\``,
      );
      return undefined;
    }
    supervisor.start(spec);
    return spec;
  }

  async function waitAll(
    specs: Array<{ name: string; port: number } | undefined>,
    what: string,
  ): Promise<void> {
    await Promise.all(
      specs.map((s) =>
        s ? patiently(`${s.name} ${what}`, () => waitForPort(s.port, stopping.signal)) : undefined,
      ),
    );
  }

  /** Awaits a wait, saying every 15 s what `up` is still waiting for. */
  async function patiently<T>(what: string, wait: () => Promise<T>): Promise<T> {
    let waited = 0;
    let done = false;
    void (async () => {
      while (!done && !stopping.signal.aborted) {
        await sleep(patienceMs, stopping.signal);
        waited += patienceMs;
        if (!done && !stopping.signal.aborted) say(`still waiting for ${what} (${waited / 1000} s)`);
      }
    })();
    try {
      return await wait();
    } finally {
      done = true;
    }
  }
}

/** The URL in the embedded database's {"msg":"ready","url":…} line. */
export function readyUrl(line: string): string | undefined {
  if (!line.startsWith('{')) return undefined;
  try {
    const parsed = JSON.parse(line) as { msg?: unknown; url?: unknown };
    return parsed.msg === 'ready' && typeof parsed.url === 'string' ? parsed.url : undefined;
  } catch {
    return undefined;
  }
}

function banner(
  plan: UpPlanOptions,
  ports: Ports,
  o: {
    env: NodeJS.ProcessEnv;
    externalDb: boolean;
    firstStart: boolean;
    say: (m: string) => void;
    imageDir: string;
  },
): void {
  const tokenFile = adminTokenFile(plan.dataDir);
  const token = readAdminToken(tokenFile);
  const profileFile = configPath();
  const endpoint = address(ports.gateway);
  let profileLine: string;
  if (token) {
    try {
      saveProfile(
        profileFile,
        'local',
        {
          endpoint,
          token,
          imageDir: o.imageDir,
          ec2Url: `http://${address(ports.ec2)}`,
          openstackUrl: `http://${address(ports.openstack)}`,
        },
        { makeCurrent: true },
      );
      profileLine = `local (now current) in ${profileFile}`;
    } catch (e) {
      // A broken config file must not take the running cloud down with it.
      profileLine = `not written: ${e instanceof Error ? e.message : String(e)}`;
    }
  } else {
    profileLine = `not written: the gateway wrote no admin token to ${tokenFile}`;
  }
  const tokenLine = !token
    ? 'none found'
    : o.firstStart
      ? `${token}  (shown this once; it is also in profile local)`
      : 'in profile local';
  const agents = ports.agents.map((p, i) => `${agentName(i)} ${address(p)}`).join(', ');
  const lines = [
    'Flotilla is up: a private cloud on this machine.',
    `  gateway      ${endpoint} (gRPC), http://${address(ports.adminHttp)} (admin HTTP)`,
    `  EC2 API      http://${address(ports.ec2)}  (aws --endpoint-url; keys: npx flotilla credential create --ec2)`,
    `  OpenStack    http://${address(ports.openstack)}/identity/v3  (OS_AUTH_URL; npx flotilla credential create --openstack)`,
    `  pool         compute ${address(ports.compute)}, storage ${address(ports.storage)}, network ${address(ports.network)}, migration ${address(ports.migration)} (metrics http://${address(ports.migrationAdmin)}/metrics)`,
    `  hosts        ${agents || 'none (--agents 0)'}; driver ${plan.driver}`,
    `  database     ${o.externalDb ? 'DATABASE_URL' : `embedded PGlite on ${address(ports.db)}, data in ${path.join(plan.dataDir, 'db')}`}`,
    `  data         ${plan.dataDir}`,
    `  images       ${o.imageDir} (the hosts' catalogue; npx flotilla image build-demo adds the demo guest)`,
    `  storage      default SR "local" at ${defaultSrPath(plan.dataDir, o.env)} (shared by every host; created once they register)`,
    `  profile      ${profileLine}`,
    `  admin token  ${tokenLine}`,
    '  next         npx flotilla host list; npx flotilla flavor list; npx flotilla vm create demo-1 --flavor <flavor>',
    '  Ctrl-C stops the services and agents. Running VMs keep running, and the next start re-attaches them',
    '  (stop them first with npx flotilla vm stop to free their memory).',
  ];
  for (const line of lines) o.say(line);
}

function parsePort(raw: string): number {
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 65535)
    throw new CliError(`FLOTILLA_DB_PORT=${raw} must be a port number, 1..65535`, ExitCode.Usage);
  return n;
}

/** dist/ holding the built services: the directory this file was built into, or ./dist next to the sources. */
export function locateDist(from: string = __dirname): string {
  for (let dir = from; dir !== path.dirname(dir); dir = path.dirname(dir)) {
    if (path.basename(dir) === 'dist' && fs.existsSync(path.join(dir, 'apps', 'cli', 'src', 'main.js')))
      return dir;
    if (fs.existsSync(path.join(dir, 'dist', 'apps', 'cli', 'src', 'main.js'))) return path.join(dir, 'dist');
  }
  throw new CliError(
    'cannot find the built services (dist/): run `node tools/build.mjs` first',
    ExitCode.Usage,
  );
}
