import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { gatewayV1 } from '@flotilla/contracts';
import { LocalCloud, startLocalCloud, TestTenant, testDatabases, uniqueSchema } from '@flotilla/platform';
import { cliFor, parseCli, runCli } from '../cli.testing';
import { describeError, ExitCode } from '../errors';

// Real: the `flotilla` command tree (run in this process), the gateway's CredentialService, TenantService
// and TokenService, gRPC on loopback, the database. Nothing else is involved (no host agent).

describe('flotilla credential create: flags checked before connecting', () => {
  const refused = async (...args: string[]) => {
    const { error } = await parseCli(['credential', 'create', ...args]);
    return describeError(error);
  };

  it('asks which kind of credential when neither --ec2 nor --openstack is given', async () => {
    expect(await refused('--tenant', 'acme', '--role', 'vm-admin')).toEqual({
      exitCode: ExitCode.Usage,
      message:
        'say which credential: --ec2 (an access key pair for the EC2 API) or --openstack (a user and password for Keystone)',
    });
  });

  it('refuses --ec2 with --openstack', async () => {
    const r = await refused('--ec2', '--openstack', '--tenant', 'acme', '--role', 'vm-admin');
    expect(r.exitCode).toBe(ExitCode.Usage);
    expect(r.message).toContain("option '--ec2' cannot be used with option '--openstack'");
  });

  it('refuses an unknown role, listing the roles', async () => {
    expect(await refused('--ec2', '--tenant', 'acme', '--role', 'admin')).toEqual({
      exitCode: ExitCode.Usage,
      message:
        'unknown role "admin": use one of pool-admin, pool-operator, vm-power-admin, vm-admin, vm-operator, read-only',
    });
  });

  it('requires the tenant', async () => {
    const r = await refused('--ec2', '--role', 'vm-admin');
    expect(r.exitCode).toBe(ExitCode.Usage);
    expect(r.message).toContain("required option '--tenant <tenant>' not specified");
  });
});

describe.each(testDatabases().slice(0, 1))(
  'the credential commands against a local cloud on %s',
  (_db, url) => {
    let cloud: LocalCloud;
    let work: string;
    let acme: TestTenant;
    const savedConfig = process.env.FLOTILLA_CONFIG;

    /** `flotilla <args>` with the admin token. */
    const { flotilla, json } = cliFor(() => ({ endpoint: cloud.gatewayAddress, token: cloud.adminToken }));
    /** stdout's `export NAME=value` lines as an object. */
    const exported = (stdout: string) =>
      Object.fromEntries([...stdout.matchAll(/^export ([A-Z_]+)=(\S*)$/gm)].map((m) => [m[1], m[2]]));

    beforeAll(async () => {
      work = fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-cli-credential-'));
      process.env.FLOTILLA_CONFIG = path.join(work, 'config.json');
      cloud = await startLocalCloud({ databaseUrl: url, schemaPrefix: uniqueSchema('clicred'), agents: 0 });
      acme = await cloud.tenant('acme', gatewayV1.Role.ROLE_VM_ADMIN);
    }, 120_000);
    afterAll(async () => {
      await cloud?.stop();
      fs.rmSync(work, { recursive: true, force: true });
      if (savedConfig === undefined) delete process.env.FLOTILLA_CONFIG;
      else process.env.FLOTILLA_CONFIG = savedConfig;
    });

    it('creates an EC2 access key, printing the pair once as lines to paste into a shell, and the endpoint', async () => {
      const r = await flotilla('credential', 'create', '--ec2', '--tenant', 'acme', '--role', 'vm-admin');
      expect(r.code).toBe(0);
      const env = exported(r.stdout);
      expect(Object.keys(env)).toEqual(['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY']);
      expect(env.AWS_ACCESS_KEY_ID).toMatch(/^AKIA[A-Z2-7]{16}$/);
      expect(env.AWS_SECRET_ACCESS_KEY).toMatch(/^[A-Za-z0-9+/]{40}$/);
      expect(r.stderr).toMatch(
        new RegExp(
          `^EC2 access key ${env.AWS_ACCESS_KEY_ID} \\(credential \\S+\\) created for tenant acme with role vm-admin$`,
          'm',
        ),
      );
      expect(r.stderr).toContain('the secret below is shown only this once: store it now');
      expect(r.stderr).toContain(
        'aws ec2 describe-instances --endpoint-url http://127.0.0.1:8773 --region RegionOne',
      );

      const list = await flotilla('credential', 'list');
      expect(list.stdout).toMatch(
        /^ID\s+KIND\s+NAME\s+ACCESS KEY\s+TENANT\s+ROLE\s+CREATED\s+EXPIRES\s+LAST USED\s+REVOKED$/m,
      );
      expect(list.stdout).toMatch(
        new RegExp(
          `\\s+ec2\\s+${env.AWS_ACCESS_KEY_ID}\\s+${env.AWS_ACCESS_KEY_ID}\\s+${acme.id}\\s+vm-admin\\s+.*never$`,
          'm',
        ),
      );
      expect(list.stdout).not.toContain(env.AWS_SECRET_ACCESS_KEY);
    });

    it('creates an OpenStack user, printing the OS_* lines with the tenant as project even when given by id', async () => {
      const r = await flotilla(
        'credential',
        'create',
        '--openstack',
        '--tenant',
        acme.id,
        '--role',
        'vm-operator',
        '--name',
        'alice@example.org',
        '--ttl-seconds',
        '3600',
      );
      expect(r.code).toBe(0);
      const env = exported(r.stdout);
      expect(env).toEqual({
        OS_USERNAME: 'alice@example.org',
        OS_PASSWORD: expect.stringMatching(/^[A-Za-z0-9_-]{32}$/),
        OS_PROJECT_NAME: 'acme',
        OS_USER_DOMAIN_NAME: 'Default',
        OS_PROJECT_DOMAIN_NAME: 'Default',
      });
      expect(r.stderr).toMatch(
        /^OpenStack user alice@example\.org \(credential \S+\) created for tenant \S+ with role vm-operator, expiring \d{4}-/m,
      );
      expect(r.stderr).toContain('OS_AUTH_URL=http://127.0.0.1:8774/identity/v3');
    });

    it('prints the response with --json, and lists without secrets, filtered by kind', async () => {
      const made = await json<gatewayV1.CreateCredentialResponse>(
        'credential',
        'create',
        '--openstack',
        '--tenant',
        'acme',
        '--role',
        'read-only',
      );
      expect(made.credential).toMatchObject({
        kind: 'CREDENTIAL_KIND_OPENSTACK',
        role: 'ROLE_READ_ONLY',
        revoked: false,
      });
      expect(made.secret).toHaveLength(32);
      const listed = await json<gatewayV1.ListCredentialsResponse>(
        'credential',
        'list',
        '--filter',
        'kind=openstack',
      );
      expect(listed.credentials.map((c) => c.id)).toContain(made.credential!.id);
      expect(listed.credentials.every((c) => c.kind === 'CREDENTIAL_KIND_OPENSTACK')).toBe(true);
      expect(JSON.stringify(listed)).not.toContain(made.secret);
    });

    it('revokes by access key id, and shows it revoked', async () => {
      const { credential } = await json<gatewayV1.CreateCredentialResponse>(
        'credential',
        'create',
        '--ec2',
        '--tenant',
        'acme',
        '--role',
        'vm-admin',
      );
      const r = await flotilla('credential', 'revoke', credential!.accessKeyId);
      expect(r).toMatchObject({
        code: 0,
        stdout: `credential ${credential!.id} (ec2 ${credential!.name}) revoked\n`,
      });
      const list = await flotilla('credential', 'list', '--filter', 'kind=ec2');
      expect(list.stdout).toMatch(new RegExp(`^${credential!.id}\\s.*\\syes$`, 'm'));
    });

    it.each([
      [
        'a name taken',
        ['--openstack', '--tenant', 'acme', '--role', 'vm-admin', '--name', 'alice@example.org'],
        ExitCode.Conflict,
        'OpenStack credential named alice@example.org already exists',
      ],
      [
        'an unknown tenant',
        ['--ec2', '--tenant', 'nobody', '--role', 'vm-admin'],
        ExitCode.NotFound,
        'tenant "nobody" not found',
      ],
      [
        'a bad name',
        ['--openstack', '--tenant', 'acme', '--role', 'vm-admin', '--name', 'a b'],
        ExitCode.Usage,
        'name: "a b" is not valid',
      ],
    ])('exits with its code and one line for %s', async (_what, args, code, message) => {
      const r = await flotilla('credential', 'create', ...args);
      expect(r.code).toBe(code);
      expect(r.stdout).toBe('');
      expect(r.stderr).toContain(message);
    });

    it('exits 2 revoking an unknown credential, 1 for something that is no id', async () => {
      expect((await flotilla('credential', 'revoke', '7d7a1e5e-7c39-4b7a-9d55-5f2b7d1c0a11')).code).toBe(
        ExitCode.NotFound,
      );
      expect((await flotilla('credential', 'revoke', 'alice')).code).toBe(ExitCode.Usage);
    });

    it('exits 4 for a token that is not pool-admin', async () => {
      const r = await runCli([
        '--endpoint',
        cloud.gatewayAddress,
        '--token',
        acme.token,
        'credential',
        'list',
      ]);
      expect(r.code).toBe(ExitCode.Denied);
    });
  },
);
