process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';

import {
  CreateTagsCommand,
  DeleteKeyPairCommand,
  DescribeAddressesCommand,
  DescribeAvailabilityZonesCommand,
  DescribeImagesCommand,
  DescribeInstanceAttributeCommand,
  DescribeInstancesCommand,
  DescribeInstanceTypesCommand,
  DescribeKeyPairsCommand,
  DescribeRegionsCommand,
  DescribeSecurityGroupsCommand,
  DescribeTagsCommand,
  EC2Client,
  ImportKeyPairCommand,
  paginateDescribeInstances,
  RunInstancesCommand,
  RunInstancesCommandInput,
  StartInstancesCommand,
  StopInstancesCommand,
  TerminateInstancesCommand,
  waitUntilInstanceRunning,
  waitUntilInstanceStopped,
  waitUntilInstanceTerminated,
  _InstanceType,
} from '@aws-sdk/client-ec2';
import aws4 from 'aws4';
import { generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { Client } from 'pg';
import { gatewayV1 } from '@flotilla/contracts';
import {
  createLogger,
  Database,
  kernelImageRegistration,
  LocalCloud,
  openDatabase,
  operationDone,
  quoteIdent,
  Role,
  startLocalCloud,
  TestTenant,
  testDatabase,
  uniqueSchema,
  vmRequest,
} from '@flotilla/platform';
import type { Principal } from '../auth/token-auth';
import { Catalogue } from '../compat/catalogue';
import { PoolApi } from '../compat/pool-api';
import type { CredentialStore } from '../credentials/credential-store';
import { createEc2Front, ec2Entities, ec2Migrations } from './ec2-front';
import { amiIdOf, derivedInstanceIdOf } from './ids';
import { encodeToken } from './pagination';

// Real: compute, storage, gateway, sim host agents, gRPC on loopback, the database, the EC2 front over HTTP,
// and the real @aws-sdk/client-ec2 (signing, paginators, waiters). Fake: the hypervisor (sim driver) and the
// credential store (a map from generated access keys to principals: the real one is another module).

class TestCredentials implements CredentialStore {
  private readonly keys = new Map<string, { secret: string; principal: Principal }>();

  add(tenantId: string, role: Role): { accessKeyId: string; secretAccessKey: string } {
    const accessKeyId = `AKIA${randomBytes(8).toString('hex').toUpperCase()}`;
    const secretAccessKey = randomBytes(30).toString('base64');
    this.keys.set(accessKeyId, {
      secret: secretAccessKey,
      principal: { tokenId: randomUUID(), tenantId, role, crossTenant: false },
    });
    return { accessKeyId, secretAccessKey };
  }

  async ec2Secret(accessKeyId: string) {
    return this.keys.get(accessKeyId);
  }
  async checkPassword() {
    return undefined;
  }
  async identityOf() {
    return undefined;
  }
}

interface RawAnswer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

function request(
  port: number,
  o: { method?: string; path?: string; headers?: Record<string, string | number>; body?: string | Buffer },
): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port, method: o.method ?? 'POST', path: o.path ?? '/', headers: o.headers },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks).toString(),
          }),
        );
      },
    );
    // The server may answer (413) before the body is sent: the rest of the write then fails, harmlessly.
    req.on('error', reject);
    req.end(o.body);
  });
}

/** Flotilla's flavor names are instance types the SDK's union does not list. */
const tiny = 'm1.tiny' as _InstanceType;

const codeOf = (body: string) => /<Code>([^<]*)<\/Code>/.exec(body)?.[1];

describe.each(testDatabase('PostgreSQL'))('EC2 Query API front on %s', (_db, url) => {
  const region = 'RegionOne';
  let cloud: LocalCloud;
  let tenant: TestTenant;
  let db: Database;
  let pool: PoolApi;
  let catalogue: Catalogue;
  let frontCredentials: TestCredentials;
  let front: ReturnType<typeof createEc2Front>;
  let server: http.Server;
  let port: number;
  let ec2: EC2Client;
  let other: EC2Client;
  let readOnly: EC2Client;
  let keys: { accessKeyId: string; secretAccessKey: string };
  let imageId: string;
  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ec2-front-'));
  const schema = uniqueSchema('ec2front');

  const client = (credentials: { accessKeyId: string; secretAccessKey: string }) =>
    new EC2Client({ region, endpoint: `http://127.0.0.1:${port}`, credentials, maxAttempts: 1 });

  /**
   * A raw form POST signed once (aws4, as a non-SDK signer would), for what the SDK cannot send; the
   * returned function sends that same signed request each time it is called.
   */
  const signed = (body: string, o: { path?: string; to?: number } = {}) => {
    const path = o.path ?? '/';
    const to = o.to ?? port;
    const opts = {
      host: `127.0.0.1:${to}`,
      path,
      method: 'POST',
      service: 'ec2',
      region,
      body,
      headers: { 'content-type': 'application/x-www-form-urlencoded; charset=utf-8' },
    };
    aws4.sign(opts, keys);
    return () => request(to, { path, headers: opts.headers as Record<string, string>, body });
  };
  const signedPost = (body: string, path = '/') => signed(body, { path })();

  const launch = (input: Partial<RunInstancesCommandInput> = {}) =>
    ec2.send(
      new RunInstancesCommand({
        ImageId: imageId,
        InstanceType: tiny,
        MinCount: 1,
        MaxCount: 1,
        ...input,
      }),
    );

  const waiterOptions = () => ({ client: ec2, maxWaitTime: 60, minDelay: 1, maxDelay: 1 });

  beforeAll(async () => {
    cloud = await startLocalCloud({ databaseUrl: url, schemaPrefix: uniqueSchema('ec2'), simLatencyMs: 50 });
    tenant = await cloud.tenant('ec2-a', gatewayV1.Role.ROLE_VM_ADMIN);
    const tenantB = await cloud.tenant('ec2-b', gatewayV1.Role.ROLE_VM_ADMIN);
    for (const f of ['k/vmlinuz', 'k/initrd']) {
      fs.mkdirSync(path.join(cloud.imageDir, 'k'), { recursive: true });
      fs.writeFileSync(path.join(cloud.imageDir, f), 'sim');
    }
    await cloud.admin.images.call.registerImage(
      kernelImageRegistration('ec2-demo', {
        minMemoryMib: 0,
        defaultCmdline: '',
        files: { kernel: { path: 'k/vmlinuz', sha256: '' }, initrd: { path: 'k/initrd', sha256: '' } },
      }),
    );
    const logger = createLogger('ec2-test', process.env.FLOTILLA_TEST_LOG_LEVEL || 'silent');
    db = await openDatabase({
      url,
      dataDir: workDir,
      schema,
      entities: ec2Entities,
      migrations: ec2Migrations,
      logger,
    });
    pool = new PoolApi({
      computeAddress: cloud.compute.address,
      storageAddress: cloud.storageAddress,
      serviceToken: cloud.serviceToken,
      deadlineMs: 15_000,
    });
    const credentials = (frontCredentials = new TestCredentials());
    server = http.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
    catalogue = new Catalogue(pool, logger);
    front = createEc2Front({
      pool,
      catalogue,
      credentials,
      dataSource: db.dataSource,
      region,
      zone: 'dc1',
      endpointUrl: `http://127.0.0.1:${port}`,
      throttle: { ratePerSecond: 1000, burst: 1000 },
      logger,
    });
    server.on('request', front.listener);
    keys = credentials.add(tenant.id, 'vm-admin');
    ec2 = client(keys);
    other = client(credentials.add(tenantB.id, 'vm-admin'));
    readOnly = client(credentials.add(tenant.id, 'read-only'));
    const images = await ec2.send(new DescribeImagesCommand({ Owners: ['amazon'] }));
    imageId = images.Images!.find((i) => i.Name === 'ec2-demo')!.ImageId!;
  }, 120_000);

  afterAll(async () => {
    ec2?.destroy();
    other?.destroy();
    readOnly?.destroy();
    await new Promise((resolve) => (server ? server.close(resolve) : resolve(undefined)));
    front?.close();
    catalogue?.close();
    pool?.close();
    await db?.close();
    const pg = new Client({ connectionString: url });
    await pg.connect();
    await pg.query(`DROP SCHEMA IF EXISTS ${quoteIdent(schema)} CASCADE`).finally(() => pg.end());
    await cloud?.stop();
    fs.rmSync(workDir, { recursive: true, force: true });
  });

  describe('RunInstances', () => {
    it('launches a pending instance named after its Name tag, the same VM the gRPC API lists', async () => {
      const r = await launch({
        ClientToken: 'launch-1',
        TagSpecifications: [
          {
            ResourceType: 'instance',
            Tags: [
              { Key: 'Name', Value: 'web-1' },
              { Key: 'env', Value: 'test' },
            ],
          },
        ],
        UserData: Buffer.from('echo hi').toString('base64'),
      });
      const [instance] = r.Instances!;
      expect(instance).toMatchObject({
        ImageId: imageId,
        InstanceType: tiny,
        State: { Code: 0, Name: 'pending' },
        Placement: { AvailabilityZone: 'dc1' },
      });
      expect(instance.InstanceId).toMatch(/^i-[0-9a-f]{17}$/);
      expect(r.$metadata.requestId).toMatch(/^[0-9a-f-]{36}$/);
      const { vms } = await tenant.clients.vms.call.listVms({
        page: { pageSize: 100, pageToken: '', filter: 'name=web-1' },
      });
      expect(vms.map((vm) => vm.name)).toEqual(['web-1']);
      const attribute = await ec2.send(
        new DescribeInstanceAttributeCommand({ InstanceId: instance.InstanceId, Attribute: 'userData' }),
      );
      expect(Buffer.from(attribute.UserData!.Value!, 'base64').toString()).toBe('echo hi');
    });

    it('answers a repeated ClientToken with the same instance, and other parameters with IdempotentParameterMismatch', async () => {
      const first = await launch({ ClientToken: 'launch-2' });
      const again = await launch({ ClientToken: 'launch-2' });
      expect(again.Instances![0].InstanceId).toBe(first.Instances![0].InstanceId);
      await expect(launch({ ClientToken: 'launch-2', InstanceType: 'm1.small' })).rejects.toMatchObject({
        name: 'IdempotentParameterMismatch',
        $metadata: { httpStatusCode: 400 },
      });
    });

    it('answers DryRunOperation (412) to a vm-admin and UnauthorizedOperation (403) to a read-only key, creating nothing', async () => {
      const count = async () =>
        (await tenant.clients.vms.call.listVms({ page: { pageSize: 1000, pageToken: '', filter: '' } })).vms
          .length;
      const before = await count();
      await expect(launch({ DryRun: true })).rejects.toMatchObject({
        name: 'DryRunOperation',
        $metadata: { httpStatusCode: 412 },
      });
      await expect(
        readOnly.send(
          new RunInstancesCommand({
            ImageId: imageId,
            InstanceType: tiny,
            MinCount: 1,
            MaxCount: 1,
            DryRun: true,
          }),
        ),
      ).rejects.toMatchObject({ name: 'UnauthorizedOperation', $metadata: { httpStatusCode: 403 } });
      expect(await count()).toBe(before);
    });

    it('answers InvalidAMIID.NotFound, InvalidParameterValue and InvalidKeyPair.NotFound for what does not exist', async () => {
      await expect(launch({ ImageId: 'ami-0123456789abcdef0' })).rejects.toMatchObject({
        name: 'InvalidAMIID.NotFound',
      });
      await expect(launch({ InstanceType: 't9.huge' as _InstanceType })).rejects.toMatchObject({
        name: 'InvalidParameterValue',
        message: expect.stringContaining('InstanceType'),
      });
      await expect(launch({ KeyName: 'nope' })).rejects.toMatchObject({ name: 'InvalidKeyPair.NotFound' });
    });
  });

  describe('instance lifecycle', () => {
    it('takes an instance through running, stopped, running and terminated with the SDK waiters', async () => {
      const id = (await launch()).Instances![0].InstanceId!;
      const InstanceIds = [id];
      expect((await waitUntilInstanceRunning(waiterOptions(), { InstanceIds })).state).toBe('SUCCESS');

      const stopped = await ec2.send(new StopInstancesCommand({ InstanceIds }));
      expect(stopped.StoppingInstances).toEqual([
        {
          InstanceId: id,
          CurrentState: { Code: 64, Name: 'stopping' },
          PreviousState: { Code: 16, Name: 'running' },
        },
      ]);
      expect((await waitUntilInstanceStopped(waiterOptions(), { InstanceIds })).state).toBe('SUCCESS');

      const started = await ec2.send(new StartInstancesCommand({ InstanceIds }));
      expect(started.StartingInstances![0]).toMatchObject({
        CurrentState: { Name: 'pending' },
        PreviousState: { Name: 'stopped' },
      });
      expect((await waitUntilInstanceRunning(waiterOptions(), { InstanceIds })).state).toBe('SUCCESS');

      const terminated = await ec2.send(new TerminateInstancesCommand({ InstanceIds }));
      expect(terminated.TerminatingInstances![0]).toMatchObject({
        CurrentState: { Code: 32, Name: 'shutting-down' },
        PreviousState: { Code: 16, Name: 'running' },
      });
      expect((await waitUntilInstanceTerminated(waiterOptions(), { InstanceIds })).state).toBe('SUCCESS');
      const again = await ec2.send(new TerminateInstancesCommand({ InstanceIds }));
      expect(again.TerminatingInstances![0]).toMatchObject({
        CurrentState: { Code: 48, Name: 'terminated' },
        PreviousState: { Code: 48, Name: 'terminated' },
      });
    });

    it('refuses to stop a terminated instance with IncorrectInstanceState', async () => {
      const id = (await launch()).Instances![0].InstanceId!;
      await ec2.send(new TerminateInstancesCommand({ InstanceIds: [id] }));
      await waitUntilInstanceTerminated(waiterOptions(), { InstanceIds: [id] });
      await expect(ec2.send(new StopInstancesCommand({ InstanceIds: [id] }))).rejects.toMatchObject({
        name: 'IncorrectInstanceState',
      });
    });
  });

  describe('DescribeInstances', () => {
    it('filters by tag and state, with wildcards', async () => {
      const r = await ec2.send(
        new DescribeInstancesCommand({
          Filters: [
            { Name: 'tag:Name', Values: ['web-*'] },
            { Name: 'instance-state-name', Values: ['pending', 'running'] },
          ],
        }),
      );
      const instances = r.Reservations!.flatMap((res) => res.Instances!);
      expect(instances.map((i) => i.Tags?.find((t) => t.Key === 'Name')?.Value)).toEqual(['web-1']);
    });

    it('pages through every instance, VMs made with the gRPC API included, five at a time', async () => {
      const made = [];
      for (let i = 0; i < 6; i++) {
        const { vm, operation } = await tenant.clients.vms.call.createVm(vmRequest({ name: `grpc-${i}` }));
        await operationDone(tenant.clients.operations, operation!.id);
        made.push(vm!);
      }
      const pages: string[][] = [];
      for await (const page of paginateDescribeInstances({ client: ec2, pageSize: 5 }, {}))
        pages.push(page.Reservations!.flatMap((r) => r.Instances!.map((i) => i.InstanceId!)));
      const all = pages.flat();
      expect(pages.every((p) => p.length <= 5) && pages.length > 1).toBe(true);
      expect(new Set(all).size).toBe(all.length);
      for (const vm of made) expect(all).toContain(derivedInstanceIdOf(vm.id));
      const unpaged = await ec2.send(new DescribeInstancesCommand({}));
      expect(unpaged.Reservations!.flatMap((r) => r.Instances!).length).toBe(all.length);
    });

    it('walks one listing: an instance terminated between the pages of a walk shows as it was when the walk began', async () => {
      const made: string[] = [];
      for (let i = 0; i < 6; i++) {
        const { vm, operation } = await tenant.clients.vms.call.createVm(vmRequest({ name: `walk-${i}` }));
        await operationDone(tenant.clients.operations, operation!.id);
        made.push(derivedInstanceIdOf(vm!.id));
      }
      const ids = (r: { Reservations?: Array<{ Instances?: Array<{ InstanceId?: string }> }> }) =>
        r.Reservations!.flatMap((res) => res.Instances!.map((i) => i.InstanceId!));
      const first = await ec2.send(new DescribeInstancesCommand({ MaxResults: 5 }));
      const lastOfFirst = ids(first).sort().at(-1)!;
      // Six made, five on the first page: at least one of them comes later in the walk.
      const later = made.filter((id) => id > lastOfFirst).sort()[0];
      expect(later).toBeDefined();
      const vms = (
        await tenant.clients.vms.call.listVms({ page: { pageSize: 1000, pageToken: '', filter: '' } })
      ).vms;
      const vm = vms.find((v) => derivedInstanceIdOf(v.id) === later)!;
      const destroyed = await tenant.clients.vms.call.destroyVm({ id: vm.id, requestId: '' });
      await operationDone(tenant.clients.operations, destroyed.operation!.id);

      const rest: Array<{ InstanceId?: string; State?: { Name?: string } }> = [];
      let NextToken = first.NextToken;
      while (NextToken) {
        const page = await ec2.send(new DescribeInstancesCommand({ MaxResults: 5, NextToken }));
        rest.push(...page.Reservations!.flatMap((r) => r.Instances!));
        NextToken = page.NextToken;
      }
      expect(rest.find((i) => i.InstanceId === later)?.State?.Name).toBe('running');
      const now = await ec2.send(new DescribeInstancesCommand({ InstanceIds: [later] }));
      expect(now.Reservations![0].Instances![0].State?.Name).toBe('terminated');
    });

    it('continues after the last key from a fresh listing when the walk a NextToken names is not kept here', async () => {
      const all = (await ec2.send(new DescribeInstancesCommand({})))
        .Reservations!.flatMap((r) => r.Instances!.map((i) => i.InstanceId!))
        .sort();
      expect(all.length).toBeGreaterThan(6);
      // As another gateway's token, or an expired walk's, reads here.
      const NextToken = encodeToken(all[2], 'walk-kept-elsewhere');
      const page = await ec2.send(new DescribeInstancesCommand({ MaxResults: 5, NextToken }));
      expect(page.Reservations!.flatMap((r) => r.Instances!.map((i) => i.InstanceId!))).toEqual(
        all.slice(3, 8),
      );
    });

    it('finds by id a VM made with the gRPC API that no listing saw yet, and shows it terminated once destroyed there', async () => {
      const { vm, operation } = await tenant.clients.vms.call.createVm(vmRequest({ name: 'grpc-named' }));
      await operationDone(tenant.clients.operations, operation!.id);
      const id = derivedInstanceIdOf(vm!.id);
      const described = async () =>
        (await ec2.send(new DescribeInstancesCommand({ InstanceIds: [id] }))).Reservations!.flatMap(
          (r) => r.Instances!,
        );
      const [running] = await described();
      expect([running.InstanceId, running.State?.Name]).toEqual([id, 'running']);
      // The VM's creation time, to the millisecond.
      expect(running.LaunchTime).toEqual(vm!.createdAt);
      const destroyed = await tenant.clients.vms.call.destroyVm({ id: vm!.id, requestId: '' });
      await operationDone(tenant.clients.operations, destroyed.operation!.id);
      const [gone] = await described();
      expect([gone.InstanceId, gone.State?.Name]).toEqual([id, 'terminated']);
      // Without its VM, the launch time is the one the front recorded, read back to the millisecond.
      expect(gone.LaunchTime).toEqual(running.LaunchTime);
    });

    it('answers InvalidParameterValue for MaxResults out of range and InvalidParameterCombination with InstanceIds', async () => {
      await expect(ec2.send(new DescribeInstancesCommand({ MaxResults: 3 }))).rejects.toMatchObject({
        name: 'InvalidParameterValue',
        message: expect.stringContaining('MaxResults'),
      });
      await expect(
        ec2.send(new DescribeInstancesCommand({ MaxResults: 5, InstanceIds: ['i-0123456789abcdef0'] })),
      ).rejects.toMatchObject({ name: 'InvalidParameterCombination' });
    });

    it('answers InvalidInstanceID.NotFound for an unknown id and .Malformed for a malformed one', async () => {
      await expect(
        ec2.send(new DescribeInstancesCommand({ InstanceIds: ['i-0123456789abcdef0'] })),
      ).rejects.toMatchObject({
        name: 'InvalidInstanceID.NotFound',
        message: expect.stringContaining('i-0123456789abcdef0'),
      });
      await expect(ec2.send(new DescribeInstancesCommand({ InstanceIds: ['vm-1'] }))).rejects.toMatchObject({
        name: 'InvalidInstanceID.Malformed',
      });
    });

    it("shows another tenant's key NotFound for this tenant's instance", async () => {
      const id = (await launch()).Instances![0].InstanceId!;
      await expect(other.send(new DescribeInstancesCommand({ InstanceIds: [id] }))).rejects.toMatchObject({
        name: 'InvalidInstanceID.NotFound',
      });
      await expect(other.send(new TerminateInstancesCommand({ InstanceIds: [id] }))).rejects.toMatchObject({
        name: 'InvalidInstanceID.NotFound',
      });
      const theirs = await other.send(new DescribeInstancesCommand({}));
      expect(theirs.Reservations!.flatMap((r) => r.Instances!).map((i) => i.InstanceId)).not.toContain(id);
    });
  });

  describe('tags', () => {
    it('creates tags whose markup characters come back unchanged, and describes them by resource id', async () => {
      const id = (await launch()).Instances![0].InstanceId!;
      const value = `<b>&"x"</b> ']]>`;
      await ec2.send(new CreateTagsCommand({ Resources: [id], Tags: [{ Key: 'owner', Value: value }] }));
      const r = await ec2.send(new DescribeTagsCommand({ Filters: [{ Name: 'resource-id', Values: [id] }] }));
      expect(r.Tags).toEqual([{ ResourceId: id, ResourceType: 'instance', Key: 'owner', Value: value }]);
    });

    it('answers InvalidInstanceID.NotFound when tagging an instance that does not exist', async () => {
      await expect(
        ec2.send(
          new CreateTagsCommand({ Resources: ['i-0123456789abcdef0'], Tags: [{ Key: 'a', Value: 'b' }] }),
        ),
      ).rejects.toMatchObject({ name: 'InvalidInstanceID.NotFound' });
    });
  });

  describe('catalogue and placement', () => {
    it('describes the catalogue image and the flavors as instance types', async () => {
      const images = await ec2.send(new DescribeImagesCommand({ ImageIds: [imageId] }));
      expect(images.Images).toEqual([
        expect.objectContaining({ ImageId: imageId, Name: 'ec2-demo', State: 'available', Public: true }),
      ]);
      expect((await ec2.send(new DescribeImagesCommand({ Owners: ['self'] }))).Images).toEqual([]);
      const types = await ec2.send(new DescribeInstanceTypesCommand({ InstanceTypes: [tiny] }));
      expect(types.InstanceTypes).toEqual([
        expect.objectContaining({
          InstanceType: tiny,
          VCpuInfo: expect.objectContaining({ DefaultVCpus: 1 }),
          MemoryInfo: { SizeInMiB: 256 },
        }),
      ]);
      await expect(
        ec2.send(new DescribeInstanceTypesCommand({ InstanceTypes: ['t9.huge' as _InstanceType] })),
      ).rejects.toMatchObject({
        name: 'InvalidInstanceType',
      });
    });

    it('launches and describes with an image and a flavor made after its kept lists, which no change has refreshed', async () => {
      // A catalogue whose lists stay kept whatever happens: only the read on a miss can find the new ones.
      const still = { live: true, generation: 1 };
      const logger = createLogger('ec2-test', 'silent');
      const kept = new Catalogue(pool, logger, { flavors: still, images: still });
      const stale = createEc2Front({
        pool,
        catalogue: kept,
        credentials: frontCredentials,
        dataSource: db.dataSource,
        region,
        zone: 'dc1',
        endpointUrl: 'http://127.0.0.1',
        throttle: { ratePerSecond: 1000, burst: 1000 },
        logger,
      });
      const staleServer = http.createServer(stale.listener);
      await new Promise<void>((resolve) => staleServer.listen(0, '127.0.0.1', resolve));
      const staleEc2 = new EC2Client({
        region,
        endpoint: `http://127.0.0.1:${(staleServer.address() as AddressInfo).port}`,
        credentials: keys,
        maxAttempts: 1,
      });
      try {
        await staleEc2.send(new DescribeInstancesCommand({}));
        const { image } = await cloud.admin.images.call.registerImage(
          kernelImageRegistration('ec2-kept-later', {
            minMemoryMib: 0,
            defaultCmdline: '',
            files: { kernel: { path: 'k/vmlinuz', sha256: '' }, initrd: { path: 'k/initrd', sha256: '' } },
          }),
        );
        await cloud.admin.flavors.call.createFlavor({
          name: 'ec2.kept-later',
          vcpus: 1,
          memoryMib: 128,
          rootDiskGib: 0,
        });
        const amiId = amiIdOf(image!.id);
        const launched = await staleEc2.send(
          new RunInstancesCommand({
            ImageId: amiId,
            InstanceType: 'ec2.kept-later' as _InstanceType,
            MinCount: 1,
            MaxCount: 1,
          }),
        );
        const id = launched.Instances![0].InstanceId!;
        const described = await staleEc2.send(new DescribeInstancesCommand({ InstanceIds: [id] }));
        expect(described.Reservations![0].Instances![0]).toMatchObject({
          InstanceId: id,
          ImageId: amiId,
          InstanceType: 'ec2.kept-later',
        });
        const all = await staleEc2.send(new DescribeInstancesCommand({}));
        expect(all.Reservations!.flatMap((r) => r.Instances!).find((i) => i.InstanceId === id)).toMatchObject(
          { ImageId: amiId, InstanceType: 'ec2.kept-later' },
        );
        await staleEc2.send(new TerminateInstancesCommand({ InstanceIds: [id] }));
        await expect(
          staleEc2.send(
            new RunInstancesCommand({
              ImageId: 'ami-0123456789abcdef0',
              InstanceType: tiny,
              MinCount: 1,
              MaxCount: 1,
            }),
          ),
        ).rejects.toMatchObject({ name: 'InvalidAMIID.NotFound' });
      } finally {
        staleEc2.destroy();
        stale.close();
        kept.close();
        await new Promise((resolve) => staleServer.close(resolve));
      }
    });

    it('describes the one region and its availability zone, the pool', async () => {
      const regions = await ec2.send(new DescribeRegionsCommand({}));
      expect(regions.Regions).toEqual([
        { RegionName: region, Endpoint: `http://127.0.0.1:${port}`, OptInStatus: 'opt-in-not-required' },
      ]);
      const zones = await ec2.send(
        new DescribeAvailabilityZonesCommand({ Filters: [{ Name: 'state', Values: ['available'] }] }),
      );
      expect(zones.AvailabilityZones!.map((z) => [z.ZoneName, z.State, z.RegionName])).toEqual([
        ['dc1', 'available', region],
      ]);
    });

    it('answers empty address and security group sets, and InvalidGroup.NotFound for a named group', async () => {
      expect((await ec2.send(new DescribeAddressesCommand({}))).Addresses).toEqual([]);
      expect((await ec2.send(new DescribeSecurityGroupsCommand({}))).SecurityGroups).toEqual([]);
      await expect(ec2.send(new DescribeSecurityGroupsCommand({ GroupIds: ['sg-1'] }))).rejects.toMatchObject(
        {
          name: 'InvalidGroup.NotFound',
        },
      );
    });
  });

  describe('key pairs', () => {
    it('imports, lists, refuses a duplicate of, and deletes a key pair', async () => {
      const { publicKey } = generateKeyPairSync('ed25519');
      const raw = Buffer.from(publicKey.export({ format: 'jwk' }).x!, 'base64url');
      const str = (b: Buffer) => Buffer.concat([Buffer.from([0, 0, 0, b.length]), b]);
      const line = `ssh-ed25519 ${Buffer.concat([str(Buffer.from('ssh-ed25519')), str(raw)]).toString('base64')} me`;
      const imported = await ec2.send(
        new ImportKeyPairCommand({ KeyName: 'mine', PublicKeyMaterial: Buffer.from(line) }),
      );
      expect(imported.KeyFingerprint).toMatch(/^[A-Za-z0-9+/]{43}=$/);
      const listed = await ec2.send(new DescribeKeyPairsCommand({ KeyNames: ['mine'] }));
      expect(listed.KeyPairs!.map((k) => [k.KeyName, k.KeyType, k.KeyFingerprint])).toEqual([
        ['mine', 'ed25519', imported.KeyFingerprint],
      ]);
      await expect(
        ec2.send(new ImportKeyPairCommand({ KeyName: 'mine', PublicKeyMaterial: Buffer.from(line) })),
      ).rejects.toMatchObject({ name: 'InvalidKeyPair.Duplicate' });
      await ec2.send(new DeleteKeyPairCommand({ KeyName: 'mine' }));
      await expect(ec2.send(new DescribeKeyPairsCommand({ KeyNames: ['mine'] }))).rejects.toMatchObject({
        name: 'InvalidKeyPair.NotFound',
      });
    });
  });

  describe('bad requests', () => {
    it('answers InvalidAction naming an unknown action, with the request id in the body and the header', async () => {
      const r = await signedPost('Action=FrobnicateInstances&Version=2016-11-15');
      expect([r.status, codeOf(r.body)]).toEqual([400, 'InvalidAction']);
      expect(r.body).toContain('FrobnicateInstances');
      expect(r.body).toContain(`<RequestID>${r.headers['x-amzn-requestid']}</RequestID>`);
    });

    it('answers NoSuchVersion naming another version, and MissingParameter without one', async () => {
      const other = await signedPost('Action=DescribeInstances&Version=2014-10-01');
      expect([other.status, codeOf(other.body)]).toEqual([400, 'NoSuchVersion']);
      expect(other.body).toContain('2014-10-01');
      const none = await signedPost('Action=DescribeInstances', '/services/compute/');
      expect([none.status, codeOf(none.body)]).toEqual([400, 'MissingParameter']);
      expect(none.body).toContain('Version');
    });

    it('refuses an oversized body with 413 before reading it', async () => {
      const r = await request(port, {
        headers: { 'content-type': 'application/x-www-form-urlencoded', 'content-length': 2 * 1024 * 1024 },
        body: Buffer.alloc(2 * 1024 * 1024, 'a'),
      }).catch((e: Error) => ({ status: 0, headers: {}, body: e.message }));
      expect([r.status, codeOf(r.body)]).toEqual([413, 'RequestEntityTooLarge']);
    });

    it('answers MissingAuthenticationToken to an unsigned request', async () => {
      const r = await request(port, {
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: 'Action=DescribeInstances&Version=2016-11-15',
      });
      expect([r.status, codeOf(r.body)]).toEqual([403, 'MissingAuthenticationToken']);
    });

    it("answers RequestLimitExceeded (503) once a key's burst is spent", async () => {
      const throttled = createEc2Front({
        pool,
        catalogue,
        credentials: {
          ec2Secret: async () => ({
            secret: keys.secretAccessKey,
            principal: { tokenId: 't', tenantId: tenant.id, role: 'vm-admin', crossTenant: false },
          }),
          checkPassword: async () => undefined,
          identityOf: async () => undefined,
        },
        dataSource: db.dataSource,
        region,
        zone: 'dc1',
        endpointUrl: 'http://127.0.0.1',
        throttle: { ratePerSecond: 0.001, burst: 1 },
        logger: createLogger('ec2-test', 'silent'),
      });
      const limited = http.createServer(throttled.listener);
      await new Promise<void>((resolve) => limited.listen(0, '127.0.0.1', resolve));
      const limitedPort = (limited.address() as AddressInfo).port;
      const describe = () => signed('Action=DescribeRegions&Version=2016-11-15', { to: limitedPort })();
      try {
        expect((await describe()).status).toBe(200);
        const refused = await describe();
        expect([refused.status, codeOf(refused.body)]).toEqual([503, 'RequestLimitExceeded']);
      } finally {
        throttled.close();
        await new Promise((resolve) => limited.close(resolve));
      }
    });

    it('never runs a mutating request twice for one signature', async () => {
      const id = (await launch()).Instances![0].InstanceId!;
      const body = `Action=CreateTags&Version=2016-11-15&ResourceId.1=${id}&Tag.1.Key=replayed&Tag.1.Value=1`;
      const send = signed(body);
      expect((await send()).status).toBe(200);
      const replay = await send();
      expect([replay.status, codeOf(replay.body)]).toEqual([401, 'AuthFailure']);
    });

    it('answers AuthFailure to a replayed RunInstances, TerminateInstances or StopInstances, even one that failed', async () => {
      const countInstances = async () =>
        (await ec2.send(new DescribeInstancesCommand({}))).Reservations!.flatMap((r) => r.Instances!).length;
      const run = signed(
        `Action=RunInstances&Version=2016-11-15&ImageId=${imageId}&MinCount=1&MaxCount=1&InstanceType=m1.small`,
      );
      const first = await run();
      expect(first.status).toBe(200);
      const before = await countInstances();
      const runAgain = await run();
      expect([runAgain.status, codeOf(runAgain.body)]).toEqual([401, 'AuthFailure']);
      expect(await countInstances()).toBe(before);

      const id = /<instanceId>(i-[0-9a-f]+)<\/instanceId>/.exec(first.body)![1];
      const terminate = signed(`Action=TerminateInstances&Version=2016-11-15&InstanceId.1=${id}`);
      expect((await terminate()).status).toBe(200);
      const terminateAgain = await terminate();
      expect([terminateAgain.status, codeOf(terminateAgain.body)]).toEqual([401, 'AuthFailure']);
      // Stopping a terminated instance is IncorrectInstanceState; replayed, the signature's reuse is what answers.
      const stop = signed(`Action=StopInstances&Version=2016-11-15&InstanceId.1=${id}`);
      const stopped = await stop();
      expect(codeOf(stopped.body)).toBe('IncorrectInstanceState');
      const stopAgain = await stop();
      expect([stopAgain.status, codeOf(stopAgain.body)]).toEqual([401, 'AuthFailure']);
    });
  });
});
