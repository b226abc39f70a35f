/**
 * docker-compose.yml: valid Compose, and the structure its users rely on — a service for every app, each
 * service's environment accepted by that app's own configuration spec, listeners on 0.0.0.0, URLs that name
 * real services and ports, PostgreSQL with a health check, privileged host agents with /dev/kvm.
 *
 * Compose validity: the compose-spec JSON schema (shipped by the dclint dev dependency) and, where it is
 * installed (.ci/run installs it), Debian's `docker-compose config -q`.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { parse } from 'yaml';
import { parseConfig, serviceNodeOptions, type ConfigSpec } from '@flotilla/platform';

const root = path.join(__dirname, '..');
const composeFile = path.join(root, 'docker-compose.yml');

interface Service {
  image?: string;
  build?: { context: string; target?: string };
  command?: string[] | string;
  environment?: Record<string, string | number | boolean | null>;
  ports?: Array<string | number | { target: number; published?: string | number }>;
  volumes?: Array<string | { type?: string; source?: string; target: string }>;
  devices?: string[];
  privileged?: boolean;
  restart?: string;
  hostname?: string;
  depends_on?: string[] | Record<string, { condition?: string }>;
  healthcheck?: { test?: string[] | string; disable?: boolean };
}
interface ComposeFile {
  services: Record<string, Service>;
  volumes?: Record<string, unknown>;
}

const source = fs.readFileSync(composeFile, 'utf8');
/** As written (anchors and merge keys resolved, `${VAR:-default}` left as is). */
const raw = parse(source, { merge: true }) as ComposeFile;
/** Unresolved `${VAR}` references (no default): the file must run with no .env. */
const undefaulted: string[] = [];
/** With every `${VAR:-default}` at its default: what `docker compose up` sees with no .env. */
const compose = interpolate(raw, 'docker-compose.yml') as ComposeFile;

function interpolate(value: unknown, where: string): unknown {
  if (typeof value === 'string')
    return value.replace(
      /\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)/g,
      (match, _name: string | undefined, op: string | undefined, fallback: string | undefined) => {
        if (match === '$$') return '$';
        if (!op || op.endsWith('?')) {
          undefaulted.push(`${where}: ${match}`);
          return '';
        }
        return fallback ?? '';
      },
    );
  if (Array.isArray(value)) return value.map((v, i) => interpolate(v, `${where}[${i}]`));
  if (value && typeof value === 'object')
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, interpolate(v, `${where}.${k}`)]));
  return value;
}

const apps = fs
  .readdirSync(path.join(root, 'apps'), { withFileTypes: true })
  .filter((d) => d.isDirectory() && fs.existsSync(path.join(root, 'apps', d.name, 'src', 'main.ts')))
  .map((d) => d.name)
  .filter((name) => name !== 'cli');

/** The services that run a Flotilla app (built from this repository's Dockerfile). */
const flotilla = Object.entries(compose.services).filter(([, s]) => s.build);
const appOf = (s: Service): string =>
  Array.isArray(s.command) ? s.command[0] : String(s.command ?? '').split(' ')[0];
const env = (s: Service): Record<string, string> =>
  Object.fromEntries(Object.entries(s.environment ?? {}).map(([k, v]) => [k, v == null ? '' : String(v)]));
const hostPort = (address: string): [string, number] => {
  const i = address.lastIndexOf(':');
  return [address.slice(0, i).replace(/^\[|\]$/g, ''), Number(address.slice(i + 1))];
};
/** Ports a service listens on: the values of its FLOTILLA_*_ADDRESS keys. */
const listenPorts = (s: Service): number[] =>
  Object.entries(env(s))
    .filter(([k]) => /^FLOTILLA_\w+_ADDRESS$/.test(k))
    .map(([, v]) => hostPort(v)[1]);
const dependsOn = (s: Service): Record<string, { condition?: string }> =>
  Array.isArray(s.depends_on)
    ? Object.fromEntries(s.depends_on.map((name) => [name, {}]))
    : (s.depends_on ?? {});

/** The configuration spec of an app: the `*ConfigSpec` its config.ts exports. */
function specFor(app: string): ConfigSpec {
  const exported = Object.entries(
    require(path.join(root, 'apps', app, 'src', 'config.ts')) as Record<string, unknown>,
  ).filter(([name]) => name.endsWith('ConfigSpec'));
  if (exported.length !== 1)
    throw new Error(
      `apps/${app}/src/config.ts must export exactly one *ConfigSpec (found ${exported.length})`,
    );
  return exported[0][1] as ConfigSpec;
}

function composeBinary(): string[] | undefined {
  for (const candidate of [['docker-compose'], ['docker', 'compose']]) {
    const r = spawnSync(candidate[0], [...candidate.slice(1), 'version'], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    if (r.status === 0) return candidate;
  }
  return undefined;
}

/** The compose-spec JSON schema and a validator for it, from an installed package that ships both. */
function composeSchema(): ((doc: unknown) => string[]) | undefined {
  let pkgJson: string;
  try {
    pkgJson = require.resolve('dclint/package.json', { paths: [root] });
  } catch {
    return undefined;
  }
  // Its "$schema" names draft-07 by an address ajv does not know: validate as draft-07 without it.
  const { $schema: _draft, ...schema } = JSON.parse(
    fs.readFileSync(path.join(path.dirname(pkgJson), 'schemas', 'compose.schema.json'), 'utf8'),
  );
  const Ajv = createRequire(pkgJson)('ajv');
  const ajv = new (Ajv.default ?? Ajv)({ allErrors: true, strict: false });
  const validate = ajv.compile(schema);
  return (doc) =>
    validate(doc)
      ? []
      : (validate.errors ?? []).map(
          (e: { instancePath?: string; dataPath?: string; message?: string }) =>
            `${e.instancePath ?? e.dataPath ?? ''} ${e.message ?? ''}`,
        );
}

describe('docker-compose.yml', () => {
  const binary = composeBinary();
  const schema = composeSchema();

  it('is valid Compose: the compose-spec JSON schema, and `docker-compose config -q` where it is installed', () => {
    expect(schema).toBeDefined();
    expect(schema!(compose)).toEqual([]);
    // .ci/run installs Debian's docker-compose, so CI always runs the second validator too.
    if (process.env.CI) expect(binary).toBeDefined();
    if (binary) {
      const r = spawnSync(binary[0], [...binary.slice(1), '-f', composeFile, 'config', '-q'], {
        cwd: root,
        encoding: 'utf8',
        timeout: 60_000,
      });
      expect({ status: r.status, errors: r.status === 0 ? '' : `${r.stderr}${r.stdout}`.trim() }).toEqual({
        status: 0,
        errors: '',
      });
    }
  });

  it('runs with no .env: every ${VAR} has a default', () => {
    expect(undefaulted).toEqual([]);
  });

  it('has a service for every app but the CLI', () => {
    expect(apps.length).toBeGreaterThan(0);
    const run = new Set(flotilla.map(([, s]) => appOf(s)));
    expect(apps.filter((app) => !run.has(app))).toEqual([]);
    for (const [name, s] of flotilla) expect([name, apps.includes(appOf(s))]).toEqual([name, true]);
  });

  it('gives every service only keys its app reads, and a configuration that app accepts', () => {
    for (const [name, s] of flotilla) {
      const spec = specFor(appOf(s));
      // NODE_OPTIONS is Node's own (next test).
      const unknown = Object.keys(env(s)).filter((key) => !(key in spec) && key !== 'NODE_OPTIONS');
      expect({ service: name, unknown }).toEqual({ service: name, unknown: [] });
      expect(() => parseConfig(spec, env(s))).not.toThrow();
      // Without DATABASE_URL a service would start an embedded database inside its container.
      if ('DATABASE_URL' in spec)
        expect([name, env(s).DATABASE_URL]).toEqual([name, expect.stringMatching(/^postgres/)]);
    }
  });

  it('runs every app with the Node options `flotilla up` gives it, and no others', () => {
    for (const [name, s] of flotilla)
      expect({ service: name, NODE_OPTIONS: env(s).NODE_OPTIONS }).toEqual({
        service: name,
        NODE_OPTIONS: serviceNodeOptions[appOf(s)],
      });
  });

  it('has services listen on every interface, and host agents on the name compute calls them by', () => {
    for (const [name, s] of flotilla) {
      const addresses = Object.entries(env(s)).filter(([k]) => /^FLOTILLA_\w+_ADDRESS$/.test(k));
      expect([name, addresses.length > 0]).toEqual([name, true]);
      for (const [key, value] of addresses) {
        // The agent registers FLOTILLA_AGENT_ADDRESS with compute, which calls it back there.
        const host = key === 'FLOTILLA_AGENT_ADDRESS' ? name : '0.0.0.0';
        expect(`${name} ${key}=${value}`).toBe(`${name} ${key}=${host}:${hostPort(value)[1]}`);
      }
    }
  });

  it('points every URL at a service that runs that area, on the port it listens on', () => {
    for (const [name, s] of flotilla) {
      for (const [key, value] of Object.entries(env(s))) {
        // Service addresses (host:port); *_PUBLIC_URL are what clients outside reach, not compose names.
        const area = /^FLOTILLA_(\w+)_URL$/.exec(key)?.[1];
        if (!area || area.endsWith('_PUBLIC')) continue;
        const [host, port] = hostPort(value);
        const target = compose.services[host];
        expect(`${name} ${key}: ${host} runs ${target ? appOf(target) : 'nothing'}`).toBe(
          `${name} ${key}: ${host} runs ${area.toLowerCase()}`,
        );
        expect([name, key, target ? listenPorts(target) : []]).toEqual([
          name,
          key,
          expect.arrayContaining([port]),
        ]);
      }
    }
  });

  it('connects every database user to the postgres service, once it is healthy', () => {
    const postgres = compose.services.postgres;
    const pg = env(postgres);
    const users = flotilla.filter(([, s]) => env(s).DATABASE_URL);
    expect(users.length).toBeGreaterThan(0);
    for (const [name, s] of users) {
      const url = new URL(env(s).DATABASE_URL);
      expect([name, url.hostname, url.port || '5432']).toEqual([name, 'postgres', '5432']);
      expect([
        name,
        decodeURIComponent(url.username),
        decodeURIComponent(url.password),
        url.pathname,
      ]).toEqual([name, pg.POSTGRES_USER, pg.POSTGRES_PASSWORD, `/${pg.POSTGRES_DB}`]);
      expect([name, dependsOn(s).postgres?.condition]).toEqual([name, 'service_healthy']);
    }
  });

  it('runs PostgreSQL 15 with a pg_isready health check and its data on a volume', () => {
    const postgres = compose.services.postgres;
    expect(postgres.image).toMatch(/^postgres:15(\b|$)/);
    expect(JSON.stringify(postgres.healthcheck?.test)).toContain('pg_isready');
    const data = (postgres.volumes ?? []).map((v) =>
      typeof v === 'string' ? v.split(':') : [v.source, v.target],
    );
    expect(data).toContainEqual([expect.any(String), '/var/lib/postgresql/data']);
    expect(Object.keys(compose.volumes ?? {})).toContain(
      data.find(([, t]) => t === '/var/lib/postgresql/data')![0],
    );
  });

  it('publishes the gateway gRPC API (7400) and admin HTTP (7480)', () => {
    const gateways = flotilla.filter(([, s]) => appOf(s) === 'gateway');
    expect(gateways).toHaveLength(1);
    const targets = (gateways[0][1].ports ?? []).map((p) =>
      typeof p === 'object' ? Number(p.target) : Number(String(p).split('/')[0].split(':').pop()),
    );
    expect(targets).toEqual(expect.arrayContaining([7400, 7480]));
  });

  it('runs at least two privileged host agents with /dev/kvm, each with its own state volume', () => {
    const agents = flotilla.filter(([, s]) => appOf(s) === 'host-agent');
    expect(agents.length).toBeGreaterThanOrEqual(2);
    const names = new Set<string>();
    const volumes = new Set<string>();
    for (const [name, s] of agents) {
      const e = env(s);
      expect([name, s.privileged, s.devices]).toEqual([
        name,
        true,
        expect.arrayContaining([expect.stringMatching(/^\/dev\/kvm/)]),
      ]);
      expect([name, s.build?.target]).toEqual([name, 'agent']);
      names.add(e.FLOTILLA_AGENT_NAME);
      const state = (s.volumes ?? [])
        .map((v) => (typeof v === 'string' ? v.split(':') : [v.source ?? '', v.target]))
        .find(([, target]) => target === e.FLOTILLA_AGENT_STATE_DIR);
      expect([name, state?.[0] && Object.keys(compose.volumes ?? {}).includes(state[0])]).toEqual([
        name,
        true,
      ]);
      volumes.add(state![0]);
      expect([name, dependsOn(s).compute?.condition]).toEqual([name, expect.stringMatching(/^service_/)]);
    }
    expect(names.size).toBe(agents.length);
    expect(volumes.size).toBe(agents.length);
  });

  it('restarts every service unless stopped, and waits on dependencies by condition', () => {
    for (const [name, s] of Object.entries(compose.services)) {
      expect([name, s.restart]).toEqual([name, 'unless-stopped']);
      for (const [dep, { condition }] of Object.entries(dependsOn(s))) {
        expect([name, dep, dep in compose.services]).toEqual([name, dep, true]);
        expect([name, dep, condition]).toEqual([
          name,
          dep,
          expect.stringMatching(/^service_(healthy|started)$/),
        ]);
        if (condition === 'service_healthy')
          expect([name, dep, Boolean(compose.services[dep].healthcheck?.test)]).toEqual([name, dep, true]);
      }
    }
  });

  it('health-checks each service on its own gRPC listener with the helper the image carries', () => {
    expect(fs.existsSync(path.join(root, 'tools', 'ci', 'grpc-health.ts'))).toBe(true);
    for (const [name, s] of flotilla) {
      const test = s.healthcheck?.test;
      expect([name, Array.isArray(test) && test.slice(0, 3)]).toEqual([
        name,
        ['CMD', 'node', 'dist/tools/ci/grpc-health.js'],
      ]);
      const [host, port] = hostPort((test as string[])[3]);
      expect([name, port]).toEqual([name, listenPorts(s).find((p) => p === port)]);
      expect([name, host]).toEqual([name, env(s).FLOTILLA_AGENT_ADDRESS ? name : '127.0.0.1']);
    }
  });

  it('builds only targets the Dockerfile has', () => {
    const dockerfile = fs.readFileSync(path.join(root, 'Dockerfile'), 'utf8');
    const stages = [...dockerfile.matchAll(/^FROM\s+\S+\s+AS\s+(\S+)/gim)].map((m) => m[1].toLowerCase());
    for (const [name, s] of flotilla) {
      expect([name, s.build?.context]).toEqual([name, '.']);
      expect([name, stages.includes(s.build?.target ?? '')]).toEqual([name, true]);
    }
  });
});
