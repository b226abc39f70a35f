/**
 * The EC2 Query API and the OpenStack API subset driven by the real clients, unmodified, as their users run
 * them: Debian's aws-cli v2 (`aws ec2 …`, its waiters and pagination) and the `openstack` CLI
 * (python-openstackclient) against `flotilla up --driver qemu`, with credentials made by
 * `flotilla credential create`. Every VM either API makes is the same VM `flotilla vm list` shows, and it
 * boots for real (the demo appliance prints its ready marker on the serial console).
 * Real: everything (PGlite, gRPC, the gateway's HTTP fronts, agents, QEMU under TCG, both clients).
 */
import { execFile, execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { computeV1 } from '@flotilla/contracts';
import { DEMO_READY_MARKER, describeWhenAvailable, realQemuMissing } from '@flotilla/hypervisor';
import { cloudClients, type CloudClients } from '@flotilla/platform';
import { startUpCloud, type CliResult, type UpCloud } from './up-cloud';

/** Debian's aws-cli v2 by its package path: another `aws` on PATH (a pip v1, a pyenv shim) behaves differently. */
function debianAws(): string | undefined {
  try {
    const file = execFileSync('dpkg', ['-L', 'awscli'], { encoding: 'utf8' })
      .split('\n')
      .find((f) => f.endsWith('/bin/aws'));
    return file && /^aws-cli\/2\./.test(execFileSync(file, ['--version'], { encoding: 'utf8' }))
      ? file
      : undefined;
  } catch {
    return undefined;
  }
}
const AWS = debianAws();
const OPENSTACK = ['/usr/bin/openstack'].find((f) => fs.existsSync(f));
const missing =
  realQemuMissing() ??
  (!AWS ? "Debian's awscli (aws-cli v2) is not installed" : undefined) ??
  (!OPENSTACK ? 'python3-openstackclient (the openstack CLI) is not installed' : undefined);

const run = (file: string, args: string[], env: NodeJS.ProcessEnv): Promise<CliResult> =>
  new Promise((resolve) =>
    execFile(file, args, { env, timeout: 900_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
    ),
  );

describeWhenAvailable(
  'real QEMU, aws-cli v2 and openstack',
  missing,
  'real EC2 and OpenStack clients',
  () => {
    jest.setTimeout(900_000);
    let cloud: UpCloud;
    let tenant: CloudClients;
    let awsEnv: NodeJS.ProcessEnv;
    let osEnv: NodeJS.ProcessEnv;
    let ec2Endpoint: string;
    const tenantName = 'interop';

    const aws = (...args: string[]) =>
      run(AWS!, ['ec2', ...args, '--endpoint-url', ec2Endpoint, '--output', 'json'], awsEnv);
    const awsOk = async (...args: string[]): Promise<any> => {
      const r = await aws(...args);
      if (r.code !== 0) throw new Error(`aws ec2 ${args.join(' ')} exited ${r.code}: ${r.stderr}${r.stdout}`);
      return r.stdout.trim() ? JSON.parse(r.stdout) : {};
    };
    const openstack = (...args: string[]) => run(OPENSTACK!, args, osEnv);
    const openstackOk = async (...args: string[]): Promise<any> => {
      const r = await openstack(...args);
      if (r.code !== 0)
        throw new Error(`openstack ${args.join(' ')} exited ${r.code}: ${r.stderr}${r.stdout}`);
      return args.includes('json') ? JSON.parse(r.stdout) : r.stdout;
    };

    const vmNamed = async (name: string): Promise<computeV1.Vm | undefined> => {
      const out = JSON.parse(await cloud.cliOk('--token', tenantToken, 'vm', 'list', '--json'));
      return (out.vms as computeV1.Vm[]).find((v) => v.name === name);
    };
    /** Waits for the guest's `boots`-th boot to finish (the console log runs on across boots). */
    const bootsForReal = (vmId: string, boots = 1) =>
      cloud.until(
        `VM ${vmId} to print ${DEMO_READY_MARKER} ${boots} time(s)`,
        async () => {
          const { data } = await tenant.vms.call.getVmConsoleLog({ id: vmId, maxBytes: 0 });
          return Buffer.from(data).toString().split(DEMO_READY_MARKER).length > boots ? true : undefined;
        },
        300_000,
      );
    let tenantToken = '';

    beforeAll(async () => {
      cloud = await startUpCloud({ driver: 'qemu', agents: 1, demoImage: true });
      ec2Endpoint = `http://127.0.0.1:${cloud.basePort + 1373}`;
      await cloud.cliOk('tenant', 'create', tenantName);
      tenantToken = (await cloud.cliOk('token', 'create', '--tenant', tenantName, '--role', 'vm-admin'))
        .trim()
        .split('\n')
        .pop()!;
      tenant = cloudClients(`127.0.0.1:${cloud.basePort}`, tenantToken);
      const ec2 = JSON.parse(
        await cloud.cliOk(
          'credential',
          'create',
          '--ec2',
          '--tenant',
          tenantName,
          '--role',
          'vm-admin',
          '--json',
        ),
      );
      const os = JSON.parse(
        await cloud.cliOk(
          'credential',
          'create',
          '--openstack',
          '--tenant',
          tenantName,
          '--role',
          'vm-admin',
          '--name',
          'alice',
          '--json',
        ),
      );
      awsEnv = {
        PATH: process.env.PATH,
        HOME: cloud.dir,
        AWS_ACCESS_KEY_ID: ec2.credential.accessKeyId,
        AWS_SECRET_ACCESS_KEY: ec2.secret,
        AWS_DEFAULT_REGION: 'RegionOne',
        AWS_EC2_METADATA_DISABLED: 'true',
        AWS_CONFIG_FILE: '/dev/null',
        AWS_SHARED_CREDENTIALS_FILE: '/dev/null',
        AWS_PAGER: '',
      };
      osEnv = {
        PATH: process.env.PATH,
        HOME: cloud.dir,
        OS_AUTH_URL: `http://127.0.0.1:${cloud.basePort + 1374}/identity/v3`,
        OS_USERNAME: 'alice',
        OS_PASSWORD: os.secret,
        OS_PROJECT_NAME: tenantName,
        OS_USER_DOMAIN_NAME: 'Default',
        OS_PROJECT_DOMAIN_NAME: 'Default',
        OS_IDENTITY_API_VERSION: '3',
        OS_REGION_NAME: 'RegionOne',
        OS_INTERFACE: 'public',
      };
    }, 900_000);

    afterAll(async () => {
      tenant?.vms.close();
      for (const c of Object.values(tenant ?? {})) c.close();
      await cloud?.stop();
    }, 120_000);

    it('aws ec2: regions, zones, images and instance types describe the cloud', async () => {
      const regions = await awsOk('describe-regions');
      expect(regions.Regions).toEqual([
        expect.objectContaining({
          RegionName: 'RegionOne',
          Endpoint: expect.stringContaining(ec2Endpoint.slice(7)),
        }),
      ]);
      const zones = await awsOk('describe-availability-zones');
      expect(zones.AvailabilityZones).toEqual([
        expect.objectContaining({ ZoneName: 'dc1', State: 'available', RegionName: 'RegionOne' }),
      ]);
      const images = await awsOk('describe-images');
      expect(images.Images).toEqual(
        expect.arrayContaining([
          expect.objectContaining({ Name: 'demo', ImageId: expect.stringMatching(/^ami-[0-9a-f]{17}$/) }),
        ]),
      );
      const types = await awsOk('describe-instance-types', '--instance-types', 'm1.tiny');
      expect(types.InstanceTypes).toEqual([
        expect.objectContaining({
          InstanceType: 'm1.tiny',
          VCpuInfo: expect.objectContaining({ DefaultVCpus: 1 }),
          MemoryInfo: { SizeInMiB: 256 },
        }),
      ]);
    });

    it('aws ec2: run-instances boots a real VM that flotilla vm list shows; tags, filters, pagination, stop/start/terminate with the waiters', async () => {
      const { Images } = await awsOk('describe-images', '--filters', 'Name=name,Values=demo');
      const imageId: string = Images[0].ImageId;
      const args = [
        'run-instances',
        '--image-id',
        imageId,
        '--instance-type',
        'm1.tiny',
        '--tag-specifications',
        'ResourceType=instance,Tags=[{Key=Name,Value=ec2-web-1},{Key=env,Value=test}]',
        '--user-data',
        'echo hi',
      ];
      const dry = await aws(...args, '--dry-run');
      expect(dry.code).toBe(254);
      expect(dry.stderr).toContain('DryRunOperation');
      expect(await vmNamed('ec2-web-1')).toBeUndefined();

      const ran = await awsOk(...args);
      const id: string = ran.Instances[0].InstanceId;
      expect(id).toMatch(/^i-[0-9a-f]{17}$/);
      expect(ran.Instances[0].State.Name).toBe('pending');
      await awsOk('wait', 'instance-running', '--instance-ids', id);

      // The same VM, seen through Flotilla's own API, booting for real.
      const vm = await vmNamed('ec2-web-1');
      expect(vm).toBeDefined();
      await bootsForReal(vm!.id);

      // Five more (halted, made with the gRPC API) so that a page of 5 is not the whole list.
      for (let i = 0; i < 5; i++)
        await tenant.vms.call.createVm({
          requestId: `pad-${i}`,
          name: `pad-${i}`,
          labels: {},
          flavorId: 'm1.tiny',
          vcpus: 0,
          memoryMib: 0,
          boot: { image: 'demo', kernel: '', initrd: '', cmdline: '' },
          antiAffinityGroup: '',
          requiredHostLabels: {},
          start: false,
          nics: [],
          rootDiskSizeBytes: 0,
          rootDiskSr: '',
        });
      const first = await awsOk('describe-instances', '--max-results', '5', '--no-paginate');
      const firstIds = first.Reservations.flatMap((r: any) => r.Instances.map((i: any) => i.InstanceId));
      expect(firstIds).toHaveLength(5);
      expect(first.NextToken).toBeTruthy();
      const second = await awsOk(
        'describe-instances',
        '--max-results',
        '5',
        '--next-token',
        first.NextToken,
        '--no-paginate',
      );
      const secondIds = second.Reservations.flatMap((r: any) => r.Instances.map((i: any) => i.InstanceId));
      expect(secondIds).toHaveLength(1);
      expect(second.NextToken ?? '').toBe('');
      const all = await awsOk('describe-instances', '--page-size', '5');
      expect(all.Reservations.flatMap((r: any) => r.Instances)).toHaveLength(6);
      expect(new Set([...firstIds, ...secondIds]).size).toBe(6);

      const filtered = await awsOk(
        'describe-instances',
        '--filters',
        'Name=tag:env,Values=test',
        'Name=instance-state-name,Values=running,pending',
      );
      expect(filtered.Reservations.flatMap((r: any) => r.Instances.map((i: any) => i.InstanceId))).toEqual([
        id,
      ]);
      await awsOk('create-tags', '--resources', id, '--tags', 'Key=team,Value=blue');
      const tagged = await awsOk('describe-instances', '--filters', 'Name=tag:team,Values=bl*');
      const instance = tagged.Reservations[0].Instances[0];
      expect(instance.InstanceId).toBe(id);
      expect(instance.Tags).toEqual(
        expect.arrayContaining([
          { Key: 'Name', Value: 'ec2-web-1' },
          { Key: 'env', Value: 'test' },
          { Key: 'team', Value: 'blue' },
        ]),
      );

      const stopped = await awsOk('stop-instances', '--instance-ids', id);
      expect(stopped.StoppingInstances[0]).toMatchObject({
        InstanceId: id,
        CurrentState: { Name: 'stopping', Code: 64 },
        PreviousState: { Name: 'running', Code: 16 },
      });
      await awsOk('wait', 'instance-stopped', '--instance-ids', id);
      const started = await awsOk('start-instances', '--instance-ids', id);
      expect(started.StartingInstances[0]).toMatchObject({
        CurrentState: { Name: 'pending' },
        PreviousState: { Name: 'stopped' },
      });
      await awsOk('wait', 'instance-running', '--instance-ids', id);
      const terminated = await awsOk('terminate-instances', '--instance-ids', id);
      expect(terminated.TerminatingInstances[0]).toMatchObject({
        CurrentState: { Name: 'shutting-down' },
        PreviousState: { Name: 'running' },
      });
      await awsOk('wait', 'instance-terminated', '--instance-ids', id);
      const gone = await awsOk('describe-instances', '--instance-ids', id);
      expect(gone.Reservations[0].Instances[0].State.Name).toBe('terminated');
      expect(await vmNamed('ec2-web-1')).toBeUndefined();
    });

    it('aws ec2: errors come back as EC2 errors the CLI understands', async () => {
      const unknown = await aws('describe-instances', '--instance-ids', 'i-0123456789abcdef0');
      expect(unknown.code).toBe(254);
      expect(unknown.stderr).toContain('InvalidInstanceID.NotFound');
      const badSignature = await run(AWS!, ['ec2', 'describe-instances', '--endpoint-url', ec2Endpoint], {
        ...awsEnv,
        AWS_SECRET_ACCESS_KEY: `${awsEnv.AWS_SECRET_ACCESS_KEY!.slice(0, -1)}x`,
      });
      expect(badSignature.code).toBe(254);
      expect(badSignature.stderr).toContain('SignatureDoesNotMatch');
      const unknownKey = await run(AWS!, ['ec2', 'describe-instances', '--endpoint-url', ec2Endpoint], {
        ...awsEnv,
        AWS_ACCESS_KEY_ID: 'AKIAAAAAAAAAAAAAAAAA',
      });
      expect(unknownKey.code).toBe(254);
      expect(unknownKey.stderr).toContain('AuthFailure');
    });

    it('openstack: token, flavors, images, networks; a server made, shown, stopped, started, rebooted and deleted', async () => {
      const token = await openstackOk('token', 'issue', '-f', 'json');
      expect(token.id).toBeTruthy();
      const { tenant: tenantRecord } = await cloud.admin.tenants.call.getTenant({ id: tenantName });
      expect(token.project_id).toBe(tenantRecord!.id);
      expect((await openstackOk('flavor', 'list', '-f', 'json')).map((f: any) => f.Name)).toContain(
        'm1.tiny',
      );
      expect((await openstackOk('image', 'list', '-f', 'json')).map((i: any) => i.Name)).toContain('demo');
      expect((await openstackOk('network', 'list', '-f', 'json')).map((n: any) => n.Name)).toContain(
        'default',
      );

      const created = await openstackOk(
        'server',
        'create',
        '--image',
        'demo',
        '--flavor',
        'm1.tiny',
        '--network',
        'default',
        '--wait',
        'os-web-1',
        '-f',
        'json',
      );
      expect(created.status).toBe('ACTIVE');
      const vm = await vmNamed('os-web-1');
      expect(vm?.id).toBe(created.id);
      await bootsForReal(created.id);

      const listed = await openstackOk('server', 'list', '-f', 'json');
      expect(listed).toEqual(
        expect.arrayContaining([expect.objectContaining({ ID: created.id, Status: 'ACTIVE' })]),
      );
      const shown = await openstackOk('server', 'show', 'os-web-1', '-f', 'json');
      expect(shown).toMatchObject({ id: created.id, name: 'os-web-1', status: 'ACTIVE' });

      const statusOf = async () =>
        (await openstackOk('server', 'show', created.id, '-f', 'json')).status as string;
      await openstackOk('server', 'stop', 'os-web-1');
      await cloud.until(
        'SHUTOFF',
        async () => ((await statusOf()) === 'SHUTOFF' ? true : undefined),
        300_000,
      );
      expect((await vmNamed('os-web-1'))!.powerState).toBe(computeV1.PowerState.POWER_STATE_HALTED);
      await openstackOk('server', 'start', 'os-web-1');
      await cloud.until('ACTIVE', async () => ((await statusOf()) === 'ACTIVE' ? true : undefined), 300_000);
      // A soft reboot presses the power button: a guest still booting would not see it, and the reboot would
      // wait out the clean shutdown's timeout before forcing it (as Nova's does).
      await bootsForReal(created.id, 2);
      await openstackOk('server', 'reboot', '--wait', 'os-web-1');
      expect(await statusOf()).toBe('ACTIVE');

      await openstackOk('server', 'delete', '--wait', 'os-web-1');
      expect(await vmNamed('os-web-1')).toBeUndefined();
    });
  },
);
