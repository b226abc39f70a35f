import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { commonV1, computeV1, migrationV1 } from '@flotilla/contracts';
import {
  LocalCloud,
  operationDone,
  startLocalCloud,
  testDatabases,
  uniqueSchema,
  vmRequest,
} from '@flotilla/platform';
import { cliFor } from '../cli.testing';
import { ExitCode } from '../errors';

// Real: the `flotilla` command tree (run in this process), the gateway relaying the migration services and
// routing their operations, the migration service, compute, storage, two host agents serving
// MigrationAgentService, gRPC on loopback, the database. Fake: the hypervisor (the sim driver's pre-copy
// model).

describe.each(testDatabases().slice(0, 1))(
  'the migration commands against a local cloud on %s',
  (_db, url) => {
    let cloud: LocalCloud;
    let work: string;
    let hosts: computeV1.Host[];
    const savedConfig = process.env.FLOTILLA_CONFIG;

    /** `flotilla <args>` with the admin token. */
    const { flotilla, json } = cliFor(() => ({ endpoint: cloud.gatewayAddress, token: cloud.adminToken }));

    const vmNamed = async (name: string) => (await json<{ vm: computeV1.Vm }>('vm', 'show', name)).vm;
    const hostName = (id: string) => hosts.find((h) => h.id === id)?.name ?? id;
    const otherHost = (id: string) => hosts.find((h) => h.id !== id)!.name;

    beforeAll(async () => {
      work = fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-cli-migration-'));
      process.env.FLOTILLA_CONFIG = path.join(work, 'config.json');
      cloud = await startLocalCloud({ databaseUrl: url, schemaPrefix: uniqueSchema('climigr'), agents: 2 });
      hosts = await cloud.hostsReady(2);
      // Sim VMs without an image: the catalogue of a bare local cloud has none.
      for (const name of ['mig-a', 'mig-b', 'mig-c']) {
        const created = await cloud.admin.vms.call.createVm(vmRequest({ name }));
        expect((await operationDone(cloud.admin.operations, created.operation!.id)).state).toBe(
          'OPERATION_STATE_SUCCEEDED',
        );
      }
    }, 120_000);
    afterAll(async () => {
      await cloud?.stop();
      fs.rmSync(work, { recursive: true, force: true });
      if (savedConfig === undefined) delete process.env.FLOTILLA_CONFIG;
      else process.env.FLOTILLA_CONFIG = savedConfig;
    });

    it('checks a migration with --dry-run, starting nothing', async () => {
      const vm = await vmNamed('mig-a');
      const to = otherHost(vm.hostId);
      const ok = await flotilla('vm', 'migrate', 'mig-a', '--to', to, '--dry-run');
      expect(ok).toMatchObject({ code: 0 });
      expect(ok.stdout).toMatch(new RegExp(`^vm mig-a can migrate to ${to} now$`, 'm'));
      expect(ok.stdout).toMatch(/^memory:\s+\d+ MiB$/m);
      expect((await json<{ migrations: unknown[] }>('migration', 'list')).migrations).toEqual([]);
    });

    it('migrates a running VM live, following it to the end, and prints its statistics', async () => {
      const before = await vmNamed('mig-a');
      const to = otherHost(before.hostId);
      const run = await flotilla(
        'vm',
        'migrate',
        'mig-a',
        '--to',
        to,
        '--downtime-limit',
        '300',
        '--bandwidth',
        '1G/s',
      );
      expect(run.stderr).toBe('');
      expect(run.code).toBe(0);
      expect(run.stdout).toMatch(
        new RegExp(
          `^vm mig-a migrated: ${hostName(before.hostId)} → ${to} \\(migration [0-9a-f-]{36}\\)$`,
          'm',
        ),
      );
      expect(run.stdout).toMatch(/^total time:\s+[\d.]+ m?s$/m);
      expect(run.stdout).toMatch(/^transferred:\s+[\d.]+ [KMG]?i?B$/m);
      expect(run.stdout).toMatch(/^rounds:\s+\d+$/m);
      const after = await vmNamed('mig-a');
      expect(hostName(after.hostId)).toBe(to);
      expect(after.powerState).toBe(computeV1.PowerState.POWER_STATE_RUNNING);
    });

    it('lists and shows migrations with their phases, and `op show` finds their operation', async () => {
      const { migrations } = await json<{ migrations: migrationV1.Migration[] }>(
        'migration',
        'list',
        '--vm',
        'mig-a',
      );
      expect(migrations).toHaveLength(1);
      const [m] = migrations;
      expect(m.state).toBe(migrationV1.MigrationState.MIGRATION_STATE_SUCCEEDED);

      const list = await flotilla('migration', 'list');
      expect(list.stdout).toMatch(/^ID\s+VM\s+ROUTE\s+MODE\s+STATE\s+PHASE\s+PROGRESS\s+DOWNTIME\s+AGE$/m);
      expect(list.stdout).toMatch(
        new RegExp(`^${m.id}\\s+mig-a\\s+\\S+ → \\S+\\s+live\\s+succeeded\\s+done\\s+100%`, 'm'),
      );

      const show = await flotilla('migration', 'show', m.id);
      expect(show.code).toBe(0);
      expect(show.stdout).toMatch(/^state:\s+succeeded$/m);
      expect(show.stdout).toMatch(/^point of no return:\s+passed at \d{4}-/m);
      expect(show.stdout).toMatch(/^PHASE\s+STARTED\s+DURATION\s+DETAIL$/m);
      for (const phase of ['preflight', 'prepare', 'transfer', 'switchover', 'cleanup'])
        expect(show.stdout).toMatch(
          new RegExp(`^${phase}\\s+\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\dZ\\s+[\\d.]+ m?s`, 'm'),
        );

      const op = await json<{ operation: commonV1.Operation }>('op', 'show', m.operationId);
      expect(op.operation).toMatchObject({ id: m.operationId, kind: 'vm.migrate' });
    });

    it('starts a migration with --no-wait, printing its operation id for `op wait`', async () => {
      const vm = await vmNamed('mig-b');
      const run = await flotilla('vm', 'migrate', 'mig-b', '--to', otherHost(vm.hostId), '--no-wait');
      expect(run.code).toBe(0);
      const operationId = run.stdout.trim();
      expect(operationId).toMatch(/^[0-9a-f-]{36}$/);
      const waited = await json<{ operation: commonV1.Operation }>('op', 'wait', operationId);
      expect(waited.operation).toMatchObject({ kind: 'vm.migrate', state: 'OPERATION_STATE_SUCCEEDED' });
    });

    it('refuses to cancel a finished migration with exit 3', async () => {
      const { migrations } = await json<{ migrations: migrationV1.Migration[] }>(
        'migration',
        'list',
        '--vm',
        'mig-a',
      );
      const run = await flotilla('migration', 'cancel', migrations[0].id);
      expect(run.code).toBe(ExitCode.Conflict);
    });

    it('puts a host in maintenance, keeps migrations away from it, and enables it again', async () => {
      const vm = await vmNamed('mig-c');
      const target = otherHost(vm.hostId);
      const maintenance = await flotilla('host', 'maintenance', target, '--reason', 'disk swap');
      expect(maintenance).toMatchObject({ code: 0, stdout: `host ${target} is maintenance (disk swap)\n` });

      const blocked = await flotilla('vm', 'migrate', 'mig-c', '--to', target, '--dry-run');
      expect(blocked.code).toBe(ExitCode.Conflict);
      expect(blocked.stdout).toMatch(/^destination-host-state\s/m);

      const enabled = await flotilla('host', 'enable', target);
      expect(enabled).toMatchObject({ code: 0, stdout: `host ${target} is enabled\n` });
    });
  },
);
