import * as path from 'node:path';
import { catalogueDir, srRoots, withServiceNodeOptions } from '@flotilla/platform';
import type { ChildSpec } from './supervisor';

/**
 * What `up` runs: every service of the local private cloud as its own process, with its ports and
 * environment. Pure: the same options always give the same plan.
 */

export type Driver = 'auto' | 'sim' | 'qemu';

export interface UpPlanOptions {
  /** The build output (dist/) holding apps/<service>/src/main.js. */
  distDir: string;
  /** Absolute. */
  dataDir: string;
  /** The gateway's gRPC port; every other port keeps its distance from it (7400 → 7401, 7410, 7480, 7490, 8773). */
  basePort: number;
  agents: number;
  driver: Driver;
  /** Overrides the embedded database's port (FLOTILLA_DB_PORT). */
  dbPort?: number;
  /** The executable that runs the services (process.execPath). */
  node: string;
}

export const defaultBasePort = 7400;
export const maxAgents = 70;
const host = '127.0.0.1';

export interface Ports {
  gateway: number;
  compute: number;
  storage: number;
  network: number;
  migration: number;
  /** The migration service's admin HTTP (/metrics). */
  migrationAdmin: number;
  adminHttp: number;
  /** The gateway's EC2 Query API and OpenStack API subset (HTTP). */
  ec2: number;
  openstack: number;
  db: number;
  agents: number[];
  /** Each agent's admin HTTP (/metrics), from 7500. */
  agentAdmin: number[];
}

export function portsFor(options: Pick<UpPlanOptions, 'basePort' | 'agents' | 'dbPort'>): Ports {
  const at = (defaultPort: number) => defaultPort - defaultBasePort + options.basePort;
  return {
    gateway: at(7400),
    compute: at(7401),
    storage: at(7402),
    network: at(7403),
    migration: at(7404),
    migrationAdmin: at(7484),
    adminHttp: at(7480),
    ec2: at(8773),
    openstack: at(8774),
    db: options.dbPort ?? at(7490),
    // Agents sit between 7410 and the admin port: at most maxAgents of them.
    agents: Array.from({ length: options.agents }, (_, i) => at(7410 + i)),
    agentAdmin: Array.from({ length: options.agents }, (_, i) => at(7500 + i)),
  };
}

export const agentName = (index: number): string => `host-${index + 1}`;

/** Every port `up` will listen on, with what listens there (for the "already in use" message). */
export function portsToCheck(ports: Ports, embeddedDb: boolean): Array<{ port: number; what: string }> {
  return [
    ...(embeddedDb ? [{ port: ports.db, what: 'embedded database' }] : []),
    { port: ports.compute, what: 'compute' },
    { port: ports.storage, what: 'storage' },
    { port: ports.network, what: 'network' },
    { port: ports.migration, what: 'migration' },
    { port: ports.migrationAdmin, what: 'migration admin HTTP' },
    { port: ports.gateway, what: 'gateway gRPC' },
    { port: ports.adminHttp, what: 'gateway admin HTTP' },
    { port: ports.ec2, what: 'gateway EC2 API' },
    { port: ports.openstack, what: 'gateway OpenStack API' },
    ...ports.agents.map((port, i) => ({ port, what: `host agent ${agentName(i)}` })),
    ...ports.agentAdmin.map((port, i) => ({ port, what: `host agent ${agentName(i)} admin HTTP` })),
  ];
}

export const address = (port: number): string => `${host}:${port}`;

/** The CLI's own settings (and its token) are no business of the services. */
const cliOnly = ['FLOTILLA_TOKEN', 'FLOTILLA_ENDPOINT', 'FLOTILLA_PROFILE', 'FLOTILLA_CONFIG'];

/** The environment every service gets: the caller's (minus the CLI's own keys) plus the cloud's wiring. */
export function sharedEnv(
  options: UpPlanOptions,
  ports: Ports,
  secrets: { serviceToken: string; databaseUrl: string },
  parent: NodeJS.ProcessEnv,
): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...parent };
  for (const key of cliOnly) delete env[key];
  return {
    ...env,
    DATABASE_URL: secrets.databaseUrl,
    FLOTILLA_SERVICE_TOKEN: secrets.serviceToken,
    FLOTILLA_DATA_DIR: options.dataDir,
    FLOTILLA_COMPUTE_ADDRESS: address(ports.compute),
    FLOTILLA_STORAGE_ADDRESS: address(ports.storage),
    FLOTILLA_NETWORK_ADDRESS: address(ports.network),
    FLOTILLA_MIGRATION_ADDRESS: address(ports.migration),
    FLOTILLA_GATEWAY_ADDRESS: address(ports.gateway),
    FLOTILLA_ADMIN_HTTP_ADDRESS: address(ports.adminHttp),
    FLOTILLA_EC2_ADDRESS: address(ports.ec2),
    FLOTILLA_OPENSTACK_ADDRESS: address(ports.openstack),
    FLOTILLA_COMPUTE_URL: address(ports.compute),
    FLOTILLA_STORAGE_URL: address(ports.storage),
    FLOTILLA_NETWORK_URL: address(ports.network),
    FLOTILLA_MIGRATION_URL: address(ports.migration),
    FLOTILLA_BOOTSTRAP_TOKEN_FILE: adminTokenFile(options.dataDir),
    // One catalogue directory for every agent (and `flotilla image build-demo`, through the profile).
    FLOTILLA_IMAGE_DIR: imageDirOf(options.dataDir, parent),
  };
}

/** The hosts' image catalogue directory: FLOTILLA_IMAGE_DIR, else <data dir>/images (as every agent reads it). */
export const imageDirOf = (dataDir: string, parent: NodeJS.ProcessEnv): string =>
  catalogueDir({ FLOTILLA_IMAGE_DIR: parent.FLOTILLA_IMAGE_DIR, FLOTILLA_DATA_DIR: dataDir });

/** Where `up` puts its default SR: "local" under the agents' first SR root (FLOTILLA_SR_ROOTS, else <data dir>/sr). */
export const defaultSrPath = (dataDir: string, parent: NodeJS.ProcessEnv): string =>
  path.join(srRoots({ FLOTILLA_SR_ROOTS: parent.FLOTILLA_SR_ROOTS, FLOTILLA_DATA_DIR: dataDir })[0], 'local');

export const adminTokenFile = (dataDir: string): string => path.join(dataDir, 'admin-token');
export const serviceTokenFile = (dataDir: string): string => path.join(dataDir, 'service-token');

export const script = (distDir: string, app: string, file = 'main.js'): string =>
  path.join(distDir, 'apps', app, 'src', file);

/** Stop order: agents and gateway first, then the pool services, the database last. */
export const stopPhase = { edge: 0, pool: 1, database: 2 } as const;

/** The embedded PostgreSQL (PGlite); it prints {"msg":"ready","url":…} when it accepts connections. */
export function databaseSpec(options: UpPlanOptions, ports: Ports, parent: NodeJS.ProcessEnv): ChildSpec {
  const env: NodeJS.ProcessEnv = {
    ...parent,
    FLOTILLA_DATA_DIR: options.dataDir,
    FLOTILLA_DB_PORT: String(ports.db),
  };
  for (const key of cliOnly) delete env[key];
  return {
    name: 'db',
    command: options.node,
    args: [script(options.distDir, 'cli', path.join('up', 'embedded-db.main.js'))],
    env,
    stopPhase: stopPhase.database,
  };
}

export interface ServicePlan {
  /** compute, storage, network, migration: started first, each checked by its port. */
  pool: Array<ChildSpec & { port: number }>;
  gateway: ChildSpec & { port: number };
  agents: Array<ChildSpec & { port: number }>;
}

/**
 * The migration service's own settings: its admin HTTP (/metrics). Its pool default bandwidth
 * (FLOTILLA_MIGRATION_BANDWIDTH, 4 GiB/s) and per-host limits come from the caller's environment, if set.
 */
const migrationEnv = (ports: Ports): NodeJS.ProcessEnv => ({
  FLOTILLA_MIGRATION_ADMIN_ADDRESS: address(ports.migrationAdmin),
});

export function servicePlan(options: UpPlanOptions, ports: Ports, env: NodeJS.ProcessEnv): ServicePlan {
  const spec = (app: string, name: string, port: number, phase: number, extra: NodeJS.ProcessEnv = {}) => ({
    name,
    command: options.node,
    args: [script(options.distDir, app)],
    env: withServiceNodeOptions(app, { ...env, ...extra }),
    stopPhase: phase,
    port,
  });
  return {
    pool: (['compute', 'storage', 'network', 'migration'] as const).map((app) =>
      spec(app, app, ports[app], stopPhase.pool, app === 'migration' ? migrationEnv(ports) : {}),
    ),
    gateway: spec('gateway', 'gateway', ports.gateway, stopPhase.edge),
    agents: ports.agents.map((port, i) =>
      spec('host-agent', agentName(i), port, stopPhase.edge, {
        FLOTILLA_AGENT_ADDRESS: address(port),
        FLOTILLA_AGENT_ADMIN_ADDRESS: address(ports.agentAdmin[i]),
        FLOTILLA_AGENT_NAME: agentName(i),
        FLOTILLA_AGENT_STATE_DIR: path.join(options.dataDir, 'agents', agentName(i)),
        FLOTILLA_DRIVER: options.driver,
      }),
    ),
  };
}
