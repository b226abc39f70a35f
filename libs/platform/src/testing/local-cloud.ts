import { ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Client } from 'pg';
import { commonV1, computeV1, gatewayV1, storageV1 } from '@flotilla/contracts';
import { ConfigSpec, parseConfig } from '../config';
import { GrpcClient } from '../grpc/client';
import { checkHealth } from '../grpc/health';
import { createLogger, Logger } from '../logging';
import { quoteIdent } from '../persistence/data-source';
import { freePort } from './ports';
import { waitFor } from './probes';

/**
 * A whole private cloud for tests: compute, storage, gateway and N sim host agents on free loopback ports, against
 * one database URL, each service in its own schema named after `schemaPrefix`. Everything talks real gRPC;
 * the only fake is the hypervisor (the sim driver). Compute runs in this process, or as a child process
 * (`node dist/apps/compute/src/main.js`, built by tools/build.mjs) when a test must SIGKILL it.
 *
 * The apps are loaded by path when a cloud starts, as `flotilla up` starts dist/apps: a library never
 * imports an app statically. Each app's own config schema validates the environment built here.
 */

export interface AgentOptions {
  name?: string;
  cpus?: number;
  memoryMib?: number;
  /** Labels for placement, e.g. { zone: 'a' }. */
  labels?: Record<string, string>;
  /** Reuse the state directory of an earlier agent (its sim VMs "kept running"). */
  stateDir?: string;
  env?: Record<string, string>;
}

export interface LocalCloudOptions {
  databaseUrl: string;
  /** Lowercase; schemas are `<prefix>_compute`, `<prefix>_storage` and `<prefix>_gateway`. Use uniqueSchema(). */
  schemaPrefix: string;
  /** Agents to start with the cloud: a count, or one options object each. Default 1. */
  agents?: number | AgentOptions[];
  /** Latency of each sim power operation (FLOTILLA_SIM_LATENCY_MS). Default 0. */
  simLatencyMs?: number;
  /** Real time per modelled time of sim live migrations (FLOTILLA_SIM_MIGRATION_TIME_SCALE). Default 1. */
  simMigrationTimeScale?: number;
  /** Extra compute configuration, e.g. { FLOTILLA_HOST_DOWN_AFTER_MS: '1500' }. */
  computeEnv?: Record<string, string>;
  gatewayEnv?: Record<string, string>;
  storageEnv?: Record<string, string>;
  migrationEnv?: Record<string, string>;
  /** Run compute as a child process that kill() can SIGKILL. */
  computeAsProcess?: boolean;
}

/** Typed clients of the gateway's public API, all carrying one bearer token. */
export interface CloudClients {
  vms: GrpcClient<computeV1.VmServiceClient>;
  hosts: GrpcClient<computeV1.HostServiceClient>;
  flavors: GrpcClient<computeV1.FlavorServiceClient>;
  operations: GrpcClient<commonV1.OperationServiceClient>;
  events: GrpcClient<computeV1.EventServiceClient>;
  images: GrpcClient<storageV1.ImageServiceClient>;
  storageEvents: GrpcClient<storageV1.StorageEventServiceClient>;
  tenants: GrpcClient<gatewayV1.TenantServiceClient>;
  tokens: GrpcClient<gatewayV1.TokenServiceClient>;
}

export interface TestTenant {
  id: string;
  name: string;
  token: string;
  clients: CloudClients;
}

export interface AgentHandle {
  name: string;
  address: string;
  stateDir: string;
  /** Stops heartbeats and serving; the sim VMs stay recorded in stateDir. */
  stop(): Promise<void>;
}

export interface ComputeHandle {
  address: string;
  /** PID of the child process (computeAsProcess only). */
  pid?: number;
  /** SIGKILL the child process and wait for it to be gone (in this process: a clean stop). */
  kill(): Promise<void>;
  /** Starts compute again on the same address and schema, and waits until it serves. */
  restart(): Promise<void>;
  /** What the child process wrote lately (stderr and stdout), for failure messages. */
  output(): string;
}

export interface LocalCloud {
  gatewayAddress: string;
  /** The gateway's EC2 Query API and OpenStack API (HTTP, host:port). */
  ec2Address: string;
  openstackAddress: string;
  compute: ComputeHandle;
  storageAddress: string;
  migrationAddress: string;
  schemas: { compute: string; storage: string; gateway: string; migration: string };
  /** The hosts' image catalogue directory (FLOTILLA_IMAGE_DIR of every agent). */
  imageDir: string;
  adminToken: string;
  /** The shared secret services present to each other (FLOTILLA_SERVICE_TOKEN). */
  serviceToken: string;
  /** Clients with the pool-admin token. */
  admin: CloudClients;
  agents: AgentHandle[];
  /** Clients with another bearer token (or none: undefined). */
  clients(token?: string): CloudClients;
  /** Creates a tenant and a token with `role` (e.g. 'ROLE_VM_ADMIN'), and clients that use it. */
  tenant(name: string, role?: gatewayV1.Role): Promise<TestTenant>;
  startAgent(options?: AgentOptions): Promise<AgentHandle>;
  /** Waits until every running agent's host is ENABLED. */
  hostsReady(count?: number): Promise<computeV1.Host[]>;
  stop(): Promise<void>;
}

interface Stoppable {
  stop(): Promise<void>;
}
/** startCompute, startGateway, startAgent: validated config in, a running service out. */
type StartFn = (config: never, logger: Logger, options?: Record<string, unknown>) => Promise<Stoppable>;

const repoRoot = path.resolve(__dirname, '../../../..');
const distRoot = path.basename(repoRoot) === 'dist' ? repoRoot : path.join(repoRoot, 'dist');

function loadApp(app: string, file: string, specName: string, startName: string) {
  const dir = path.join(repoRoot, 'apps', app, 'src');
  const spec = require(path.join(dir, 'config'))[specName] as ConfigSpec;
  const start = require(path.join(dir, file))[startName] as StartFn;
  if (!spec || typeof start !== 'function')
    throw new Error(`apps/${app}: ${specName} or ${startName} not found`);
  /** Validates `env` with the app's own config schema, as its main does, and starts it. */
  return (env: Record<string, string>, logger: Logger, options?: Record<string, unknown>) =>
    start(parseConfig(spec, env) as never, logger, options);
}

/** Something an app's main passes besides its config (the migration service's extensions: host evacuation). */
function loadExport(app: string, file: string, name: string): unknown {
  const value = require(path.join(repoRoot, 'apps', app, 'src', file))[name] as unknown;
  if (value === undefined) throw new Error(`apps/${app}/src/${file}: ${name} not found`);
  return value;
}

const logLevel = process.env.FLOTILLA_TEST_LOG_LEVEL || 'silent';

/** A CreateVm request: m1.tiny, started, no labels or placement hints, unless `fields` say otherwise. */
export function vmRequest(
  fields: Partial<computeV1.CreateVmRequest> & { name: string },
): computeV1.CreateVmRequest {
  return {
    requestId: '',
    labels: {},
    flavorId: fields.vcpus || fields.memoryMib ? '' : 'm1.tiny',
    vcpus: 0,
    memoryMib: 0,
    boot: undefined,
    antiAffinityGroup: '',
    requiredHostLabels: {},
    rootDiskSizeBytes: 0,
    rootDiskSr: '',
    start: true,
    nics: [],
    ...fields,
  };
}

export function cloudClients(address: string, token?: string): CloudClients {
  const staticMetadata: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};
  const make = <C>(service: string) =>
    new GrpcClient<C>({ address, service, staticMetadata, defaultDeadlineMs: 15_000 });
  return {
    vms: make('flotilla.compute.v1.VmService'),
    hosts: make('flotilla.compute.v1.HostService'),
    flavors: make('flotilla.compute.v1.FlavorService'),
    operations: make('flotilla.common.v1.OperationService'),
    events: make('flotilla.compute.v1.EventService'),
    images: make('flotilla.storage.v1.ImageService'),
    storageEvents: make('flotilla.storage.v1.StorageEventService'),
    tenants: make('flotilla.gateway.v1.TenantService'),
    tokens: make('flotilla.gateway.v1.TokenService'),
  };
}

function closeClients(c: CloudClients): void {
  for (const client of Object.values(c) as Array<GrpcClient<unknown>>) client.close();
}

export async function startLocalCloud(options: LocalCloudOptions): Promise<LocalCloud> {
  const schemas = {
    compute: `${options.schemaPrefix}_compute`,
    storage: `${options.schemaPrefix}_storage`,
    gateway: `${options.schemaPrefix}_gateway`,
    migration: `${options.schemaPrefix}_migration`,
  };
  quoteIdent(schemas.compute);
  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), `flotilla-${options.schemaPrefix}-`));
  const serviceToken = randomBytes(24).toString('base64url');
  const computeAddress = `127.0.0.1:${await freePort()}`;
  const storageAddress = `127.0.0.1:${await freePort()}`;
  const migrationAddress = `127.0.0.1:${await freePort()}`;
  const imageDir = path.join(workDir, 'images');
  const common = {
    FLOTILLA_SERVICE_TOKEN: serviceToken,
    DATABASE_URL: options.databaseUrl,
    FLOTILLA_DATA_DIR: workDir,
  };
  // Run in reverse: agents, gateway, compute, then the schemas and the work directory go.
  const toStop: Array<() => Promise<void>> = [
    async () => fs.rmSync(workDir, { recursive: true, force: true }),
    () =>
      dropSchemas(options.databaseUrl, [
        schemas.compute,
        schemas.storage,
        schemas.gateway,
        schemas.migration,
      ]),
  ];
  const openClients: CloudClients[] = [];
  const agents: AgentHandle[] = [];

  const stopAll = async () => {
    for (const c of openClients.splice(0)) closeClients(c);
    for (const stop of toStop.splice(0).reverse()) await stop().catch(() => undefined);
  };

  try {
    const compute = await startComputeService({
      env: {
        ...common,
        FLOTILLA_COMPUTE_ADDRESS: computeAddress,
        // Where compute resolves the images VMs boot (storage starts right after it).
        FLOTILLA_STORAGE_URL: storageAddress,
        FLOTILLA_DB_SCHEMA: schemas.compute,
        FLOTILLA_HEARTBEAT_INTERVAL_MS: '500',
        ...options.computeEnv,
      },
      schema: schemas.compute,
      asProcess: options.computeAsProcess ?? false,
    });
    toStop.push(() => compute.stopForGood());

    const startStorage = loadApp('storage', 'storage.app', 'storageConfigSpec', 'startStorage');
    const storageApp = await startStorage(
      {
        ...common,
        FLOTILLA_STORAGE_ADDRESS: storageAddress,
        FLOTILLA_COMPUTE_URL: computeAddress,
        FLOTILLA_DB_SCHEMA: schemas.storage,
        ...options.storageEnv,
      },
      createLogger('storage', logLevel),
      { schema: schemas.storage },
    );
    toStop.push(() => storageApp.stop());

    // The gateway relays migrations and asks the migration service for operations: a pool runs it, with
    // the extensions its main starts (EvacuationService), as `flotilla up` does.
    const startMigration = loadApp('migration', 'migration.app', 'migrationConfigSpec', 'startMigration');
    const migrationApp = await startMigration(
      {
        ...common,
        FLOTILLA_MIGRATION_ADDRESS: migrationAddress,
        FLOTILLA_MIGRATION_ADMIN_ADDRESS: `127.0.0.1:${await freePort()}`,
        FLOTILLA_COMPUTE_URL: computeAddress,
        FLOTILLA_STORAGE_URL: storageAddress,
        FLOTILLA_DB_SCHEMA: schemas.migration,
        ...options.migrationEnv,
      },
      createLogger('migration', logLevel),
      { schema: schemas.migration, extensions: loadExport('migration', 'extensions', 'extensions') },
    );
    toStop.push(() => migrationApp.stop());

    const gatewayAddress = `127.0.0.1:${await freePort()}`;
    const ec2Address = `127.0.0.1:${await freePort()}`;
    const openstackAddress = `127.0.0.1:${await freePort()}`;
    const tokenFile = path.join(workDir, 'admin-token');
    const startGateway = loadApp('gateway', 'gateway.app', 'gatewayConfigSpec', 'startGateway');
    const gatewayEnv = {
      ...common,
      FLOTILLA_GATEWAY_ADDRESS: gatewayAddress,
      FLOTILLA_ADMIN_HTTP_ADDRESS: `127.0.0.1:${await freePort()}`,
      FLOTILLA_EC2_ADDRESS: ec2Address,
      FLOTILLA_OPENSTACK_ADDRESS: openstackAddress,
      FLOTILLA_COMPUTE_URL: computeAddress,
      FLOTILLA_STORAGE_URL: storageAddress,
      FLOTILLA_MIGRATION_URL: migrationAddress,
      FLOTILLA_BOOTSTRAP_TOKEN_FILE: tokenFile,
      FLOTILLA_DB_SCHEMA: schemas.gateway,
      ...options.gatewayEnv,
    };
    const gatewayApp = await quietly(() =>
      startGateway(gatewayEnv, createLogger('gateway', logLevel), { schema: schemas.gateway }),
    );
    toStop.push(() => gatewayApp.stop());
    const adminToken = fs.readFileSync(tokenFile, 'utf8').trim();

    const clients = (token?: string) => {
      const c = cloudClients(gatewayAddress, token);
      openClients.push(c);
      return c;
    };
    const admin = clients(adminToken);

    const startAgentApp = loadApp('host-agent', 'agent.app', 'agentConfigSpec', 'startAgent');
    let agentCount = 0;
    const startAgent = async (o: AgentOptions = {}): Promise<AgentHandle> => {
      const name = o.name ?? `host-${++agentCount}`;
      const stateDir = o.stateDir ?? path.join(workDir, 'agents', name);
      const address = `127.0.0.1:${await freePort()}`;
      const env = {
        FLOTILLA_SERVICE_TOKEN: serviceToken,
        FLOTILLA_DATA_DIR: workDir,
        FLOTILLA_AGENT_ADDRESS: address,
        FLOTILLA_AGENT_NAME: name,
        FLOTILLA_AGENT_STATE_DIR: stateDir,
        FLOTILLA_COMPUTE_URL: computeAddress,
        FLOTILLA_IMAGE_DIR: imageDir,
        FLOTILLA_DRIVER: 'sim',
        FLOTILLA_SIM_CPUS: String(o.cpus ?? 8),
        FLOTILLA_SIM_MEMORY_MIB: String(o.memoryMib ?? 16384),
        FLOTILLA_SIM_LATENCY_MS: String(options.simLatencyMs ?? 0),
        FLOTILLA_SIM_MIGRATION_TIME_SCALE: String(options.simMigrationTimeScale ?? 1),
        FLOTILLA_HOST_LABELS: Object.entries(o.labels ?? {})
          .map(([k, v]) => `${k}=${v}`)
          .join(','),
        ...o.env,
      };
      const app = await startAgentApp(env, createLogger(`host-agent/${name}`, logLevel));
      let stopped = false;
      const handle: AgentHandle = {
        name,
        address,
        stateDir,
        async stop() {
          if (stopped) return;
          stopped = true;
          agents.splice(agents.indexOf(handle), 1);
          await app.stop();
        },
      };
      agents.push(handle);
      toStop.push(() => handle.stop());
      return handle;
    };

    const hostsReady = (count = agents.length) =>
      waitFor(`${count} ENABLED hosts`, async () => {
        const { hosts } = await admin.hosts.call.listHosts({
          page: { pageSize: 1000, pageToken: '', filter: 'state=ENABLED' },
        });
        const names = new Set(agents.map((a) => a.name));
        const up = hosts.filter((h) => names.has(h.name));
        return up.length >= count && hosts;
      });

    const agentOptions =
      typeof options.agents === 'number' || options.agents === undefined
        ? Array.from({ length: options.agents ?? 1 }, () => ({}))
        : options.agents;
    for (const o of agentOptions) await startAgent(o);
    await hostsReady();

    return {
      gatewayAddress,
      ec2Address,
      openstackAddress,
      compute: compute.handle,
      storageAddress,
      migrationAddress,
      schemas,
      imageDir,
      adminToken,
      serviceToken,
      admin,
      agents,
      clients,
      async tenant(name, role = gatewayV1.Role.ROLE_VM_ADMIN) {
        const { tenant } = await admin.tenants.call.createTenant({
          requestId: '',
          name,
          description: '',
          labels: {},
        });
        const created = await admin.tokens.call.createToken({
          requestId: '',
          name: `${name}-token`,
          tenantId: tenant!.id,
          role,
          ttlSeconds: 0,
        });
        return { id: tenant!.id, name, token: created.secret, clients: clients(created.secret) };
      },
      startAgent,
      hostsReady,
      stop: stopAll,
    };
  } catch (e) {
    await stopAll();
    throw e;
  }
}

interface RunningCompute {
  handle: ComputeHandle;
  stopForGood(): Promise<void>;
}

async function startComputeService(o: {
  env: Record<string, string>;
  schema: string;
  asProcess: boolean;
}): Promise<RunningCompute> {
  const address = o.env.FLOTILLA_COMPUTE_ADDRESS;
  if (!o.asProcess) {
    const startCompute = loadApp('compute', 'compute.app', 'computeConfigSpec', 'startCompute');
    const start = () => startCompute(o.env, createLogger('compute', logLevel), { schema: o.schema });
    let app: Stoppable | undefined = await start();
    const stop = async () => {
      const a = app;
      app = undefined;
      await a?.stop();
    };
    return {
      handle: {
        address,
        kill: stop,
        restart: async () => {
          await stop();
          app = await start();
        },
        output: () => '',
      },
      stopForGood: stop,
    };
  }

  const main = path.join(distRoot, 'apps/compute/src/main.js');
  if (!fs.existsSync(main)) throw new Error(`${main} is missing: run node tools/build.mjs first`);
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  let tail = '';
  const spawnCompute = async () => {
    const c = spawn(process.execPath, [main], {
      env: { PATH: process.env.PATH ?? '', FLOTILLA_LOG_LEVEL: 'warn', ...o.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child = c;
    const keep = (chunk: Buffer) => (tail = `${tail}${chunk.toString()}`.slice(-4000));
    c.stdout!.on('data', keep);
    c.stderr!.on('data', keep);
    exited = new Promise((resolve) => c.once('exit', () => resolve()));
    await waitFor(
      `compute child process serving on ${address}`,
      async () => {
        if (c.exitCode !== null || c.signalCode !== null) throw new Error(`compute exited: ${tail}`);
        return (await checkHealth(address, { deadlineMs: 500 })) === 'SERVING';
      },
      { timeoutMs: 30_000, intervalMs: 100 },
    );
  };
  const kill = async () => {
    if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
    child = undefined;
  };
  await spawnCompute();
  return {
    handle: {
      address,
      get pid() {
        return child?.pid;
      },
      kill,
      restart: async () => {
        await kill();
        await spawnCompute();
      },
      output: () => tail,
    },
    stopForGood: async () => {
      if (child && child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child?.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(timer);
      }
    },
  };
}

async function dropSchemas(url: string, schemas: string[]): Promise<void> {
  const client = new Client({ connectionString: url, connectionTimeoutMillis: 10_000 });
  await client.connect();
  try {
    for (const s of schemas) await client.query(`DROP SCHEMA IF EXISTS ${quoteIdent(s)} CASCADE`);
  } finally {
    await client.end();
  }
}

/** The gateway prints the admin secret on stdout at first start; tests read it from the token file. */
async function quietly<T>(work: () => Promise<T>): Promise<T> {
  const write = process.stdout.write;
  process.stdout.write = ((chunk: unknown, ...rest: unknown[]) =>
    /Flotilla admin token|^\s*flt_/m.test(String(chunk))
      ? true
      : (write as (...a: unknown[]) => boolean).call(
          process.stdout,
          chunk,
          ...rest,
        )) as typeof process.stdout.write;
  try {
    return await work();
  } finally {
    process.stdout.write = write;
  }
}
