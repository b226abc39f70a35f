/**
 * EC2 front benchmark (issue 7 point 8): the EC2 Query API against Flotilla's gRPC API, in one run, on one
 * local cloud (compute, storage, gateway and one host agent as child processes from dist/, sim driver with
 * FLOTILLA_SIM_LATENCY_MS=0, so the control plane is what is measured).
 *
 *  (1) Listing 1,000 instances: DescribeInstances through the EC2 front with the real @aws-sdk/client-ec2
 *      (signed with an access key made by the gateway's CredentialService), MaxResults 1000 (one page), beside
 *      VmService/ListVms through the gateway, all pages, with a bearer token of the same tenant. Also the
 *      SDK's paginator at 100 per page (and the same pages read but not parsed) beside ListVms at its default
 *      page size (100): ten pages each. A walk's pages after the first are cut from the listing of its first
 *      (PageWalks in the front); each ListVms page is a query of its own. The
 *      1,000 VMs are halted VMs made through gRPC (start=false); the EC2 front records its instance-id rows
 *      on its first listing of them, done once (unmeasured) before timing.
 *  (2) Launch and terminate round trips, one instance at a time: RunInstances then TerminateInstances
 *      (times to each response) beside CreateVm(start=true), WaitOperation until the create is done, DestroyVm
 *      (and WaitOperation until the destroy is done), same flavor, same image. RunInstances answers only once
 *      its VM is placed (it waits for the create operation), so the like-for-like gRPC figure includes the
 *      wait for the create operation; the responses-only gRPC sum (CreateVm + DestroyVm) is printed too.
 *      Round trips run in a tenant of their own (empty), and a few in the 1,000-instance tenant.
 *
 * Every measurement alternates EC2 and gRPC (A/B/A/B, the order rotated each repetition), so the shared
 * machine's noise weighs on both alike. The listing also has two more sides in which neither client decodes:
 * the same DescribeInstances as one aws4-signed POST whose XML is read but not parsed, and the same ListVms
 * with its reply read as bytes. Those two are the judged listing row: the target is about what the HTTP/XML
 * front adds, and with decoding the ratio measures the clients (the SDK's client CPU per listing of 1,000
 * instances is six to seven times grpc-js's); the decoded rows are printed beside it.
 * Figures: median and p95 of N repetitions, the services' CPU per repetition (/proc) and this process's (the
 * client: SDK or grpc-js), and the ratio EC2/gRPC of the medians. Target: ≤ 1.3×. Reported,
 * not asserted.
 *
 * Database, first found: BENCH_DATABASE_URL, TEST_DATABASE_URL, the machine's PostgreSQL started like CI,
 * the embedded PGlite (EC2_BENCH_PGLITE=1 forces it); schemas ec2b_* are dropped before and after.
 * Knobs: EC2_BENCH_INSTANCES (1000), EC2_BENCH_DESCRIBES (20 per side), EC2_BENCH_PAGED (6 per side),
 * EC2_BENCH_ROUND_TRIPS (40 per side), EC2_BENCH_BIG_ROUND_TRIPS (10 per side, in the 1,000-instance tenant;
 * 0: none), EC2_BENCH_PGLITE=1, EC2_BENCH_NODE_ARGS (node flags for every child, e.g.
 * "--cpu-prof --cpu-prof-dir=/tmp/prof"; EC2_BENCH_GATEWAY_NODE_ARGS for the gateway only), EC2_BENCH_KEEP=0.
 *
 * Run: the build compiles it to dist/bench/ec2/ec2-front.bench.js; `node <that file>` runs main(), and a
 * harness may call runEc2FrontBench() instead.
 */
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';

import {
  DescribeInstancesCommand,
  DescribeImagesCommand,
  EC2Client,
  paginateDescribeInstances,
  RunInstancesCommand,
  TerminateInstancesCommand,
  _InstanceType,
} from '@aws-sdk/client-ec2';
import { BinaryReader } from '@bufbuild/protobuf/wire';
import * as grpc from '@grpc/grpc-js';
import aws4 from 'aws4';
import { randomBytes, randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { commonV1, computeV1, gatewayV1 } from '@flotilla/contracts';
import {
  cloudClients,
  type CloudClients,
  freePort,
  GrpcClient,
  kernelImageRegistration,
  serviceDefinition,
  vmRequest,
} from '@flotilla/platform';
import {
  backgroundLoad,
  benchDatabase,
  type Child,
  cpuSinceUs,
  dropSchemas,
  envInt,
  f2,
  killAllSync,
  logTail,
  machineDescription,
  median,
  nodeArgsFromEnv,
  pidOf,
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

const RATIO_TARGET = 1.3;
const REGION = 'RegionOne';
/** Flotilla's flavor names are instance types the SDK's union does not list. */
const FLAVOR = 'm1.tiny';
const IMAGE = 'bench-kernel';
const SCHEMAS = { compute: 'ec2b_compute', storage: 'ec2b_storage', gateway: 'ec2b_gateway' };
/** The whole benchmark stops (children killed) if it runs longer than this. */
const WATCHDOG_MS = 600_000;

export interface Ec2FrontBenchOptions {
  instances?: number;
  describes?: number;
  paged?: number;
  roundTrips?: number;
  bigRoundTrips?: number;
}

/** N timed repetitions of one side, with the CPU the services used for them. */
export interface Sample {
  readonly ms: number[];
  /** CPU µs per repetition of each service. */
  readonly cpuUs: Record<string, number[]>;
}

export interface Pair {
  readonly name: string;
  readonly ec2: Summary;
  readonly grpc: Summary;
  /** ec2 median / grpc median. */
  readonly ratio: number;
  /** Whether this row is judged against the target (the like-for-like ones). */
  readonly judged: boolean;
  readonly ec2What: string;
  readonly grpcWhat: string;
}

export interface Summary {
  readonly n: number;
  readonly p50: number;
  readonly p95: number;
  readonly cpuMs: Record<string, number>;
}

export interface Ec2FrontBenchResult {
  readonly machine: string;
  readonly backgroundLoad: number;
  readonly database: string;
  readonly instances: number;
  /** One page of the 1,000 instances on the wire: the EC2 XML document, the ListVms protobuf reply. */
  readonly wireBytes: { xml: number; protobuf: number };
  readonly pairs: Pair[];
  /** Per-step medians of the round trips (ms), to see where the time goes. */
  readonly steps: Array<{ name: string; ms: number }>;
}

function p95(values: number[]): number {
  if (!values.length) return NaN;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil(0.95 * s.length) - 1)];
}

function summary(s: Sample): Summary {
  return {
    n: s.ms.length,
    p50: median(s.ms),
    p95: p95(s.ms),
    // Mean, not median: /proc counts CPU in clock ticks (10 ms), coarser than one repetition.
    cpuMs: Object.fromEntries(
      Object.entries(s.cpuUs).map(([k, v]) => [k, v.reduce((a, b) => a + b, 0) / v.length / 1000]),
    ),
  };
}

function pair(
  name: string,
  ec2: Sample,
  grpc: Sample,
  o: { judged: boolean; ec2What: string; grpcWhat: string },
): Pair {
  const e = summary(ec2);
  const g = summary(grpc);
  return { name, ec2: e, grpc: g, ratio: e.p50 / g.p50, ...o };
}

// ---------------------------------------------------------------------------------------------------------
// The local cloud: child processes from dist/.

interface Cloud {
  children: Child[];
  admin: CloudClients;
  credentials: GrpcClient<gatewayV1.CredentialServiceClient>;
  gatewayAddress: string;
  ec2Endpoint: string;
  database: string;
  cpu: () => Record<string, number>;
  dataDir: string;
  dbUrl: string;
  fresh: boolean;
}

async function startCloud(dataDir: string): Promise<Cloud> {
  const dist = path.resolve(__dirname, '..', '..');
  requireBuilt(dist, ['compute', 'storage', 'gateway', 'host-agent']);
  const nodeArgs = nodeArgsFromEnv('EC2_BENCH_NODE_ARGS');
  const db = await benchDatabase(dataDir, { pgliteEnv: 'EC2_BENCH_PGLITE', nodeArgs });
  if (db.fresh) await dropSchemas(db.url, Object.values(SCHEMAS));
  const [gatewayPort, computePort, storagePort, adminPort, agentPort, ec2Port, openstackPort] =
    await Promise.all(Array.from({ length: 7 }, () => freePort()));
  const tokenFile = path.join(dataDir, 'admin-token');
  const imageDir = path.join(dataDir, 'images');
  // The sim driver checks the kernel image's files exist.
  fs.mkdirSync(path.join(imageDir, 'k'), { recursive: true });
  for (const f of ['k/vmlinuz', 'k/initrd']) fs.writeFileSync(path.join(imageDir, f), 'sim');
  // Only this benchmark's settings: a FLOTILLA_* of the caller would change what is measured.
  const base: NodeJS.ProcessEnv = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith('FLOTILLA_') && k !== 'DATABASE_URL'),
  );
  Object.assign(base, {
    DATABASE_URL: db.url,
    FLOTILLA_SERVICE_TOKEN: randomBytes(24).toString('base64url'),
    FLOTILLA_DATA_DIR: dataDir,
    FLOTILLA_LOG_LEVEL: 'warn',
  });
  const compute = `127.0.0.1:${computePort}`;
  const storage = `127.0.0.1:${storagePort}`;
  const gatewayAddress = `127.0.0.1:${gatewayPort}`;
  const log = (name: string) => path.join(dataDir, `${name}.log`);
  const start = (name: string, app: string, env: NodeJS.ProcessEnv, extra: string[] = []) =>
    startService(name, dist, app, {
      env: { ...base, ...env },
      log: log(app),
      nodeArgs: [...nodeArgs, ...extra],
    });
  const c = start('compute', 'compute', {
    FLOTILLA_COMPUTE_ADDRESS: compute,
    FLOTILLA_STORAGE_URL: storage,
    FLOTILLA_DB_SCHEMA: SCHEMAS.compute,
  });
  const s = start('storage', 'storage', {
    FLOTILLA_STORAGE_ADDRESS: storage,
    FLOTILLA_COMPUTE_URL: compute,
    FLOTILLA_DB_SCHEMA: SCHEMAS.storage,
  });
  const g = start(
    'gateway',
    'gateway',
    {
      FLOTILLA_GATEWAY_ADDRESS: gatewayAddress,
      FLOTILLA_ADMIN_HTTP_ADDRESS: `127.0.0.1:${adminPort}`,
      FLOTILLA_EC2_ADDRESS: `127.0.0.1:${ec2Port}`,
      FLOTILLA_OPENSTACK_ADDRESS: `127.0.0.1:${openstackPort}`,
      FLOTILLA_COMPUTE_URL: compute,
      FLOTILLA_STORAGE_URL: storage,
      FLOTILLA_BOOTSTRAP_TOKEN_FILE: tokenFile,
      FLOTILLA_DB_SCHEMA: SCHEMAS.gateway,
      // The per-key throttle (default 100/s) is still checked on every request; sequential round trips
      // must not be refused by it.
      FLOTILLA_EC2_RATE: '100000',
    },
    nodeArgsFromEnv('EC2_BENCH_GATEWAY_NODE_ARGS'),
  );
  const a = start('host agent', 'host-agent', {
    FLOTILLA_AGENT_ADDRESS: `127.0.0.1:${agentPort}`,
    FLOTILLA_AGENT_NAME: 'ec2b-host-1',
    FLOTILLA_AGENT_STATE_DIR: path.join(dataDir, 'agent'),
    FLOTILLA_COMPUTE_URL: compute,
    FLOTILLA_IMAGE_DIR: imageDir,
    FLOTILLA_DRIVER: 'sim',
    FLOTILLA_SIM_LATENCY_MS: '0',
    // Room for every VM the round trips start.
    FLOTILLA_SIM_CPUS: '4096',
    FLOTILLA_SIM_MEMORY_MIB: String(16 * 1024 * 1024),
  });
  const children = [c, s, g, a];
  const token = await adminTokenFrom(tokenFile, children);
  const admin = cloudClients(gatewayAddress, token);
  const credentials = new GrpcClient<gatewayV1.CredentialServiceClient>({
    address: gatewayAddress,
    service: 'flotilla.gateway.v1.CredentialService',
    staticMetadata: { authorization: `Bearer ${token}` },
    defaultDeadlineMs: 15_000,
  });
  await until(
    'host ec2b-host-1 ENABLED',
    90_000,
    async () => {
      const { hosts } = await admin.hosts.call.listHosts(
        { page: { pageSize: 10, pageToken: '', filter: '' } },
        { deadlineMs: 3000 },
      );
      return hosts.some((h) => h.name === 'ec2b-host-1' && h.state === computeV1.HostState.HOST_STATE_ENABLED)
        ? true
        : undefined;
    },
    children,
  );
  return {
    children,
    admin,
    credentials,
    gatewayAddress,
    ec2Endpoint: `http://127.0.0.1:${ec2Port}`,
    database: db.description,
    cpu: () => ({ gateway: pidOf(g), compute: pidOf(c), storage: pidOf(s) }),
    dataDir,
    dbUrl: db.url,
    fresh: db.fresh,
  };
}

/** A tenant as both APIs' users hold it: a bearer token (gRPC) and an EC2 access key (SDK), both vm-admin. */
interface AccessKey {
  accessKeyId: string;
  secretAccessKey: string;
}

interface Tenant {
  name: string;
  grpc: CloudClients;
  /** ListVms whose replies are read but not decoded (see rawListVms). */
  rawGrpc: RawListVms;
  ec2: EC2Client;
  keys: AccessKey;
}

async function makeTenant(cloud: Cloud, name: string): Promise<Tenant> {
  const { tenant } = await cloud.admin.tenants.call.createTenant({
    requestId: '',
    name,
    description: 'EC2 front benchmark',
    labels: {},
  });
  if (!tenant) throw new Error(`CreateTenant ${name} answered without a tenant`);
  const role = gatewayV1.Role.ROLE_VM_ADMIN;
  const token = await cloud.admin.tokens.call.createToken({
    requestId: '',
    name: `${name}-token`,
    tenantId: tenant.id,
    role,
    ttlSeconds: 0,
  });
  const key = await cloud.credentials.call.createCredential({
    requestId: '',
    name: `${name}-ec2`,
    tenantId: tenant.id,
    role,
    kind: gatewayV1.CredentialKind.CREDENTIAL_KIND_EC2,
    ttlSeconds: 0,
  });
  if (!key.credential) throw new Error('CreateCredential answered without a credential');
  const keys = { accessKeyId: key.credential.accessKeyId, secretAccessKey: key.secret };
  return {
    name,
    grpc: cloudClients(cloud.gatewayAddress, token.secret),
    rawGrpc: rawListVms(cloud.gatewayAddress, token.secret),
    ec2: new EC2Client({ region: REGION, endpoint: cloud.ec2Endpoint, credentials: keys, maxAttempts: 1 }),
    keys,
  };
}

function closeTenant(t: Tenant): void {
  t.ec2.destroy();
  t.rawGrpc.close();
  for (const c of Object.values(t.grpc) as Array<GrpcClient<unknown>>) c.close();
}

async function createHalted(t: Tenant, count: number): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const i = next++;
      const { operation } = await t.grpc.vms.call.createVm(
        vmRequest({
          requestId: `ec2b-${randomUUID()}`,
          name: `list-${i}`,
          flavorId: FLAVOR,
          start: false,
          boot: { image: IMAGE, kernel: '', initrd: '', cmdline: '' },
        }),
      );
      if (operation) await done(t, operation.id);
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));
}

async function done(t: Tenant, id: string): Promise<commonV1.Operation> {
  for (;;) {
    const { operation } = await t.grpc.operations.call.waitOperation({ id, timeoutMs: 10_000 });
    if (!operation) throw new Error(`operation ${id} vanished`);
    const s = commonV1.OperationState;
    if (operation.state === s.OPERATION_STATE_SUCCEEDED) return operation;
    if (operation.state === s.OPERATION_STATE_FAILED || operation.state === s.OPERATION_STATE_CANCELLED)
      throw new Error(
        `operation ${id} (${operation.kind}) ${operation.state}: ${operation.error?.message ?? ''}`,
      );
  }
}

// ---------------------------------------------------------------------------------------------------------
// Measuring: alternating sides, each repetition timed, the services' CPU read around it.

/** Times one repetition; `parts` lets a side record sub-steps (ms) by name. */
type Rep = (parts: Record<string, number>) => Promise<void>;

async function alternate<K extends string>(
  cloud: Cloud,
  n: number,
  sides: Record<K, Rep>,
  steps?: Record<string, number[]>,
): Promise<Record<K, Sample>> {
  const keys = Object.keys(sides) as K[];
  const out = Object.fromEntries(keys.map((k) => [k, { ms: [], cpuUs: {} }])) as unknown as Record<
    K,
    { ms: number[]; cpuUs: Record<string, number[]> }
  >;
  const pids = cloud.cpu();
  const names = Object.keys(pids);
  for (let i = 0; i < n; i++) {
    // Each repetition starts with the next side: every side goes first, second, … equally often.
    const order = keys.map((_, j) => keys[(i + j) % keys.length]);
    for (const side of order) {
      const before = names.map((k) => sourceCpuUs(pids[k]));
      const clientBefore = process.cpuUsage();
      const parts: Record<string, number> = {};
      const t0 = performance.now();
      await sides[side](parts);
      out[side].ms.push(performance.now() - t0);
      const client = process.cpuUsage(clientBefore);
      names.forEach((k, j) => (out[side].cpuUs[k] ??= []).push(cpuSinceUs(pids[k], before[j])));
      (out[side].cpuUs.client ??= []).push(client.user + client.system);
      if (steps) for (const [k, v] of Object.entries(parts)) (steps[`${side} ${k}`] ??= []).push(v);
      for (const c of cloud.children)
        if (c.exited) throw new Error(`${c.name} exited during the measurements${logTail(c)}`);
    }
  }
  return out;
}

const instanceIdTag = Buffer.from('<instanceId>');
const nextTokenTag = Buffer.from('<nextToken>');

/**
 * DescribeInstances as SigV4-signed POSTs (aws4) whose XML is read whole but not parsed: what the front
 * costs without the SDK's XML parsing. Every page of `maxResults`, following nextToken to the end; returns the
 * instances and the bodies' bytes. The bodies stay bytes: the instances are counted and the nextToken found by
 * searching them, as rawListVms walks its replies without decoding them (decoding 1.2 MB of UTF-8 into a
 * string and searching that cost this client ~5 ms per listing that the gRPC side did not pay).
 */
function rawDescribe(
  cloud: Cloud,
  keys: AccessKey,
  maxResults = 1000,
): () => Promise<{ count: number; bytes: number }> {
  const url = new URL(cloud.ec2Endpoint);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const page = (nextToken: string | undefined): Promise<Buffer> => {
    const body =
      `Action=DescribeInstances&Version=2016-11-15&MaxResults=${maxResults}` +
      (nextToken ? `&NextToken=${encodeURIComponent(nextToken)}` : '');
    const opts = {
      host: url.host,
      path: '/',
      method: 'POST',
      service: 'ec2',
      region: REGION,
      body,
      headers: { 'content-type': 'application/x-www-form-urlencoded; charset=utf-8' },
    };
    aws4.sign(opts, keys);
    return new Promise((resolve, reject) => {
      const req = http.request(
        {
          host: url.hostname,
          port: url.port,
          path: '/',
          method: 'POST',
          headers: opts.headers as Record<string, string>,
          agent,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const xml = Buffer.concat(chunks);
            if (res.statusCode !== 200)
              return reject(
                new Error(`DescribeInstances (raw): ${res.statusCode} ${xml.toString('utf8', 0, 300)}`),
              );
            resolve(xml);
          });
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end(body);
    });
  };
  return async () => {
    let count = 0;
    let bytes = 0;
    let nextToken: string | undefined;
    do {
      const xml = await page(nextToken);
      bytes += xml.length;
      for (let at = xml.indexOf(instanceIdTag); at >= 0; at = xml.indexOf(instanceIdTag, at + 1)) count++;
      const at = xml.indexOf(nextTokenTag);
      nextToken =
        at < 0 ? undefined : xml.toString('utf8', at + nextTokenTag.length, xml.indexOf('</nextToken>', at));
    } while (nextToken);
    return { count, bytes };
  };
}

interface RawListVms {
  /** Every page of `pageSize`; returns the VMs listed and the replies' bytes. */
  list(pageSize: number): Promise<{ count: number; bytes: number }>;
  close(): void;
}

/**
 * ListVms through the gateway with each reply read whole but not decoded: the gRPC counterpart of rawDescribe,
 * so that neither side of that comparison pays its client's decoding (measured: grpc-js spends ~16 ms of CPU
 * decoding 1,000 VMs, the SDK ~120 ms parsing the same instances' XML). The VMs are counted by
 * walking the reply's top-level fields (1: vms, 2: next_page_token) without decoding any VM.
 */
function rawListVms(address: string, token: string): RawListVms {
  const method = serviceDefinition('flotilla.compute.v1.VmService').ListVms;
  const Client = grpc.makeGenericClientConstructor(
    { ListVms: { ...method, responseDeserialize: (bytes: Buffer) => bytes } },
    'VmService',
  );
  const client = new Client(address, grpc.credentials.createInsecure(), {
    'grpc.max_receive_message_length': 64 * 1024 * 1024,
  });
  const metadata = new grpc.Metadata();
  metadata.set('authorization', `Bearer ${token}`);
  type ListVms = (
    request: unknown,
    metadata: grpc.Metadata,
    options: grpc.CallOptions,
    callback: (e: grpc.ServiceError | null, reply?: Buffer) => void,
  ) => void;
  const listVms = (client as unknown as { ListVms: ListVms }).ListVms.bind(client);
  const page = (pageSize: number, pageToken: string) =>
    new Promise<Buffer>((resolve, reject) =>
      listVms(
        { page: { pageSize, pageToken, filter: '' } },
        metadata,
        { deadline: Date.now() + 30_000 },
        (e, reply) => (e || !reply ? reject(e ?? new Error('ListVms answered nothing')) : resolve(reply)),
      ),
    );
  return {
    async list(pageSize) {
      let count = 0;
      let bytes = 0;
      let pageToken = '';
      do {
        const reply = await page(pageSize, pageToken);
        bytes += reply.length;
        pageToken = '';
        for (const reader = new BinaryReader(reply); reader.pos < reader.len;) {
          const [field, wireType] = reader.tag();
          if (field === 2) {
            pageToken = reader.string();
            continue;
          }
          reader.skip(wireType);
          if (field === 1) count++;
        }
      } while (pageToken);
      return { count, bytes };
    },
    close: () => client.close(),
  };
}

const timed = async <T>(parts: Record<string, number>, name: string, f: () => Promise<T>): Promise<T> => {
  const t0 = performance.now();
  const r = await f();
  parts[name] = performance.now() - t0;
  return r;
};

async function listAll(t: Tenant, pageSize: number): Promise<number> {
  let count = 0;
  let pageToken = '';
  do {
    const r = await t.grpc.vms.call.listVms({ page: { pageSize, pageToken, filter: '' } });
    count += r.vms.length;
    pageToken = r.nextPageToken;
  } while (pageToken);
  return count;
}

async function describeAll(t: Tenant): Promise<number> {
  const r = await t.ec2.send(new DescribeInstancesCommand({ MaxResults: 1000 }));
  if (r.NextToken) throw new Error('DescribeInstances MaxResults 1000 answered more than one page');
  return (r.Reservations ?? []).reduce((sum, res) => sum + (res.Instances?.length ?? 0), 0);
}

async function describePaged(t: Tenant, pageSize: number): Promise<number> {
  let count = 0;
  for await (const page of paginateDescribeInstances({ client: t.ec2, pageSize }, {}))
    count += (page.Reservations ?? []).reduce((sum, res) => sum + (res.Instances?.length ?? 0), 0);
  return count;
}

function expectCount(what: string, got: number, want: number): void {
  if (got !== want) throw new Error(`${what} listed ${got} instances, expected ${want}`);
}

/** One RunInstances + TerminateInstances (times to each response). */
function ec2RoundTrip(t: Tenant, amiId: string): Rep {
  return async (parts) => {
    const run = await timed(parts, 'RunInstances', () =>
      t.ec2.send(
        new RunInstancesCommand({
          ImageId: amiId,
          InstanceType: FLAVOR as _InstanceType,
          MinCount: 1,
          MaxCount: 1,
        }),
      ),
    );
    const id = run.Instances?.[0]?.InstanceId;
    if (!id) throw new Error('RunInstances answered without an instance');
    const term = await timed(parts, 'TerminateInstances', () =>
      t.ec2.send(new TerminateInstancesCommand({ InstanceIds: [id] })),
    );
    if (term.TerminatingInstances?.[0]?.CurrentState?.Name !== 'shutting-down')
      throw new Error(`TerminateInstances answered ${JSON.stringify(term.TerminatingInstances)}`);
  };
}

/**
 * One CreateVm(start=true) + DestroyVm as a gRPC consumer makes them: DestroyVm after the create operation
 * is done (compute refuses a destroy while it runs, and RunInstances waits for it too). Sub-steps timed.
 */
function grpcRoundTrip(t: Tenant, i: () => number): Rep {
  return async (parts) => {
    const { vm, operation } = await timed(parts, 'CreateVm', () =>
      t.grpc.vms.call.createVm(
        vmRequest({
          requestId: `ec2b-${randomUUID()}`,
          name: `rt-${i()}`,
          flavorId: FLAVOR,
          start: true,
          boot: { image: IMAGE, kernel: '', initrd: '', cmdline: '' },
        }),
      ),
    );
    if (!vm || !operation) throw new Error('CreateVm answered without a VM or operation');
    await timed(parts, 'wait create', () => done(t, operation.id));
    const destroyed = await timed(parts, 'DestroyVm', () =>
      t.grpc.vms.call.destroyVm({ id: vm.id, requestId: '' }),
    );
    if (!destroyed.operation) throw new Error('DestroyVm answered without an operation');
    const id = destroyed.operation.id;
    await timed(parts, 'wait destroy', () => done(t, id));
  };
}

/** Per repetition, the sum of the named sub-steps of one side ("ec2 RunInstances", …). */
function stepSums(steps: Record<string, number[]>, side: string, names: string[]): number[] {
  const runs = names.map((k) => steps[`${side} ${k}`] ?? []);
  return runs[0].map((_, i) => runs.reduce((sum, r) => sum + (r[i] ?? 0), 0));
}

// ---------------------------------------------------------------------------------------------------------

export async function runEc2FrontBench(options: Ec2FrontBenchOptions = {}): Promise<Ec2FrontBenchResult> {
  const instances = options.instances ?? envInt('EC2_BENCH_INSTANCES', 1000);
  const describes = options.describes ?? envInt('EC2_BENCH_DESCRIBES', 20);
  const paged = options.paged ?? envInt('EC2_BENCH_PAGED', 6);
  const roundTrips = options.roundTrips ?? envInt('EC2_BENCH_ROUND_TRIPS', 40);
  const bigRoundTrips =
    options.bigRoundTrips ??
    (process.env.EC2_BENCH_BIG_ROUND_TRIPS === '0' ? 0 : envInt('EC2_BENCH_BIG_ROUND_TRIPS', 10));
  const watchdog = setTimeout(() => {
    process.stderr.write(`ec2-front bench: still running after ${WATCHDOG_MS / 1000} s: stopping\n`);
    killAllSync();
    process.exit(1);
  }, WATCHDOG_MS);
  watchdog.unref();
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-ec2-bench-'));
  tempDirs.add(dataDir);
  const tenants: Tenant[] = [];
  let cloud: Cloud | undefined;
  let failed = true;
  try {
    const background = await backgroundLoad(1000);
    cloud = await startCloud(dataDir);
    const c = cloud;
    await c.admin.images.call.registerImage(
      kernelImageRegistration(IMAGE, {
        minMemoryMib: 0,
        defaultCmdline: '',
        files: { kernel: { path: 'k/vmlinuz', sha256: '' }, initrd: { path: 'k/initrd', sha256: '' } },
      }),
    );
    const big = await makeTenant(c, 'ec2b-list');
    const small = await makeTenant(c, 'ec2b-rt');
    tenants.push(big, small);
    const amiId = (await small.ec2.send(new DescribeImagesCommand({}))).Images?.find(
      (i) => i.Name === IMAGE,
    )?.ImageId;
    if (!amiId) throw new Error(`DescribeImages does not list ${IMAGE}`);

    process.stderr.write(`ec2-front bench: creating ${instances} halted VMs through gRPC…\n`);
    await createHalted(big, instances);
    // Unmeasured: the EC2 front records its instance-id rows on its first listing; JIT warm-up both sides.
    for (let i = 0; i < 3; i++) {
      expectCount('DescribeInstances', await describeAll(big), instances);
      expectCount('ListVms', await listAll(big, 1000), instances);
    }
    expectCount('the paginator', await describePaged(big, 100), instances);
    const rtSteps: Record<string, number[]> = {};
    let rtIndex = 0;
    const rt = { ec2: ec2RoundTrip(small, amiId), grpc: grpcRoundTrip(small, () => rtIndex++) };
    await alternate(c, 3, rt);

    process.stderr.write('ec2-front bench: measuring…\n');
    const raw = rawDescribe(c, big.keys);
    const list = await alternate(c, describes, {
      ec2: async () => expectCount('DescribeInstances', await describeAll(big), instances),
      grpc: async () => expectCount('ListVms', await listAll(big, 1000), instances),
      raw: async () => expectCount('DescribeInstances (raw)', (await raw()).count, instances),
      rawGrpc: async () => expectCount('ListVms (raw)', (await big.rawGrpc.list(1000)).count, instances),
    });
    // Sizes on the wire, once, unmeasured.
    const xmlBytes = (await raw()).bytes;
    const listVms = serviceDefinition('flotilla.compute.v1.VmService').ListVms;
    const protoBytes = listVms.responseSerialize(
      await big.grpc.vms.call.listVms({ page: { pageSize: 1000, pageToken: '', filter: '' } }),
    ).length;
    const rawPaged = rawDescribe(c, big.keys, 100);
    const pages = await alternate(c, paged, {
      ec2: async () => expectCount('the paginator', await describePaged(big, 100), instances),
      grpc: async () => expectCount('ListVms', await listAll(big, 100), instances),
      raw: async () => expectCount('DescribeInstances pages (raw)', (await rawPaged()).count, instances),
      rawGrpc: async () => expectCount('ListVms pages (raw)', (await big.rawGrpc.list(100)).count, instances),
    });
    const trips = await alternate(c, roundTrips, rt, rtSteps);
    // Judged: the front's own cost, with neither client decoding its reply. With decoding, the ratio measures
    // the clients more than the front (see the header).
    const pairs: Pair[] = [
      pair(`list ${instances} instances, one page, neither client decoding`, list.raw, list.rawGrpc, {
        judged: true,
        ec2What: 'DescribeInstances MaxResults=1000 as one aws4-signed POST, the XML read but not parsed',
        grpcWhat: 'ListVms page_size=1000, the reply read but not decoded',
      }),
      pair(`list ${instances} instances, one page, decoded by each client`, list.ec2, list.grpc, {
        judged: false,
        ec2What: 'DescribeInstances MaxResults=1000 through @aws-sdk/client-ec2 (its XML parser)',
        grpcWhat: 'ListVms page_size=1000 through grpc-js (its decoder)',
      }),
      pair(`list ${instances} instances, one page, no SDK parsing`, list.raw, list.grpc, {
        judged: false,
        ec2What: 'the same DescribeInstances as one aws4-signed POST, the XML read but not parsed',
        grpcWhat: 'ListVms page_size=1000 as above (grpc-js decodes the reply)',
      }),
      pair(`list ${instances} instances, pages of 100`, pages.ec2, pages.grpc, {
        judged: false,
        ec2What: 'paginateDescribeInstances pageSize=100',
        grpcWhat: 'ListVms page_size=100 (default), all pages',
      }),
      pair(`list ${instances} instances, pages of 100, neither client decoding`, pages.raw, pages.rawGrpc, {
        judged: false,
        ec2What:
          'DescribeInstances MaxResults=100 as aws4-signed POSTs following nextToken, the XML read but not parsed',
        grpcWhat: 'ListVms page_size=100, the replies read but not decoded',
      }),
    ];
    const ec2Calls = ['RunInstances', 'TerminateInstances'];
    const like = stepSums(rtSteps, 'grpc', ['CreateVm', 'wait create', 'DestroyVm']);
    const responses = stepSums(rtSteps, 'grpc', ['CreateVm', 'DestroyVm']);
    const ec2Responses = stepSums(rtSteps, 'ec2', ec2Calls);
    const noCpu = {};
    pairs.push(
      pair(
        'launch+terminate, like for like',
        { ms: ec2Responses, cpuUs: noCpu },
        { ms: like, cpuUs: noCpu },
        {
          judged: true,
          ec2What: 'RunInstances + TerminateInstances (to responses)',
          grpcWhat: 'CreateVm + wait create op + DestroyVm (to responses)',
        },
      ),
      pair(
        'launch+terminate, responses only',
        { ms: ec2Responses, cpuUs: noCpu },
        { ms: responses, cpuUs: noCpu },
        {
          judged: false,
          ec2What: 'RunInstances + TerminateInstances (RunInstances waits for placement)',
          grpcWhat: 'CreateVm + DestroyVm responses (no wait counted)',
        },
      ),
      pair('launch+terminate, whole repetition', trips.ec2, trips.grpc, {
        judged: false,
        ec2What: 'as above (EC2 has no operation to wait for)',
        grpcWhat: 'CreateVm + wait + DestroyVm + wait destroy op done',
      }),
    );
    if (bigRoundTrips) {
      const bigSteps: Record<string, number[]> = {};
      const bigRt = { ec2: ec2RoundTrip(big, amiId), grpc: grpcRoundTrip(big, () => rtIndex++) };
      const bigTrips = await alternate(c, bigRoundTrips, bigRt, bigSteps);
      pairs.push(
        pair(
          `launch+terminate in the ${instances}-instance tenant, like for like`,
          { ms: stepSums(bigSteps, 'ec2', ec2Calls), cpuUs: bigTrips.ec2.cpuUs },
          {
            ms: stepSums(bigSteps, 'grpc', ['CreateVm', 'wait create', 'DestroyVm']),
            cpuUs: bigTrips.grpc.cpuUs,
          },
          {
            judged: false,
            ec2What: 'RunInstances + TerminateInstances',
            grpcWhat: 'CreateVm + wait create op + DestroyVm',
          },
        ),
      );
      for (const [k, v] of Object.entries(bigSteps)) rtSteps[`${k} (${instances}-instance tenant)`] = v;
    }
    failed = false;
    return {
      machine: machineDescription(),
      backgroundLoad: background,
      database: c.database,
      instances,
      wireBytes: { xml: xmlBytes, protobuf: protoBytes },
      pairs,
      steps: Object.entries(rtSteps).map(([name, ms]) => ({ name, ms: median(ms) })),
    };
  } finally {
    clearTimeout(watchdog);
    for (const t of tenants) closeTenant(t);
    if (cloud) {
      for (const cl of Object.values(cloud.admin) as Array<GrpcClient<unknown>>) cl.close();
      cloud.credentials.close();
    }
    await stopAll();
    if (cloud?.fresh) await dropSchemas(cloud.dbUrl, Object.values(SCHEMAS)).catch(() => undefined);
    tempDirs.delete(dataDir);
    if (failed && process.env.EC2_BENCH_KEEP !== '0')
      process.stderr.write(`ec2-front bench: logs kept in ${dataDir}\n`);
    else fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------------------
// Output.

export function formatEc2FrontBench(r: Ec2FrontBenchResult): string {
  const cpu = (s: Summary, k: string) => (s.cpuMs[k] === undefined ? '-' : f2(s.cpuMs[k]));
  const out = [
    `ec2-front: the EC2 Query API (@aws-sdk/client-ec2) beside Flotilla's gRPC API (grpc-js client, bearer token), same tenant, same cloud; ${r.machine}`,
    `cloud: compute, storage, gateway, 1 host agent (sim driver, FLOTILLA_SIM_LATENCY_MS=0: the control plane is measured) on ${r.database}`,
    `machine busy before the run (other work on this shared VM): ${(r.backgroundLoad * 100).toFixed(0)}% of all CPUs`,
    `repetitions alternate the sides (EC2, gRPC[, EC2 without the SDK]; each repetition starts with the next side); ms are end to end in the client (SDK or grpc-js, parsing included); CPU: mean per repetition (services: /proc clock ticks; client: this process, the SDK or grpc-js)`,
    ...table(
      [
        'measurement: side',
        'n',
        'p50 ms',
        'p95 ms',
        'gateway CPU ms',
        'compute CPU ms',
        'client CPU ms',
        'EC2/gRPC (p50)',
        `target ≤ ${RATIO_TARGET}x`,
      ],
      r.pairs.flatMap((p) => [
        [
          `${p.name}: EC2`,
          String(p.ec2.n),
          f2(p.ec2.p50),
          f2(p.ec2.p95),
          cpu(p.ec2, 'gateway'),
          cpu(p.ec2, 'compute'),
          cpu(p.ec2, 'client'),
          x(p.ratio),
          p.judged ? (p.ratio <= RATIO_TARGET ? 'met' : 'MISSED') : '(not judged)',
        ],
        [
          `${' '.repeat(p.name.length)}  gRPC`,
          String(p.grpc.n),
          f2(p.grpc.p50),
          f2(p.grpc.p95),
          cpu(p.grpc, 'gateway'),
          cpu(p.grpc, 'compute'),
          cpu(p.grpc, 'client'),
          '',
          '',
        ],
      ]),
    ),
    `one page of ${r.instances} instances on the wire: EC2 XML ${(r.wireBytes.xml / 1024).toFixed(0)} KiB, ListVms protobuf ${(r.wireBytes.protobuf / 1024).toFixed(0)} KiB`,
    'what each side does:',
    ...r.pairs.map((p) => `  ${p.name}: EC2 = ${p.ec2What}; gRPC = ${p.grpcWhat}`),
    '',
    'round-trip steps, median ms:',
    ...table(
      ['step', 'p50 ms'],
      r.steps.map((s) => [s.name, f2(s.ms)]),
    ),
  ];
  return out.join('\n');
}

export async function main(): Promise<void> {
  killChildrenOnSignal();
  console.log(formatEc2FrontBench(await runEc2FrontBench()));
}

if (require.main === module) {
  main().catch((error: unknown) => {
    console.error(error);
    process.exitCode = 1;
  });
}
