import * as grpc from '@grpc/grpc-js';
import { migrationV1 } from '@flotilla/contracts';
import { DomainError, ErrorCode } from '@flotilla/domain';
import { serviceDefinition, statusWithDetails } from '@flotilla/platform';
import { cliFor } from '../cli.testing';
import { ExitCode } from '../errors';

// Real: the `flotilla` command tree (run in this process) and gRPC on loopback. Fake: the cloud behind the
// endpoint, one server answering the calls these commands make with canned but realistic replies, for what
// the local cloud cannot show yet or cannot provoke on demand: EvacuationService (not served by the
// migration service yet), a migration that fails after it started, refusals carrying blockers.

// Timestamps as the loaded contracts encode them (google.protobuf.Timestamp ↔ Date).
const T = (ms: number) => new Date(ms);
const NOW = Date.UTC(2026, 10, 25, 12, 0, 0);
const HOSTS = [
  { id: '11111111-1111-4111-8111-111111111111', name: 'host-1' },
  { id: '22222222-2222-4222-8222-222222222222', name: 'host-2' },
];
const VMS = [
  { id: 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', name: 'web-1', hostId: HOSTS[0].id },
  { id: 'bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb', name: 'db-1', hostId: HOSTS[0].id },
];
const EVAC_ID = 'eeeeeeee-eeee-4eee-8eee-eeeeeeeeeeee';
const MIG_ID = 'dddddddd-dddd-4ddd-8ddd-dddddddddddd';
const OP_ID = 'cccccccc-cccc-4ccc-8ccc-cccccccccccc';

type Handler = (req: Record<string, unknown>) => unknown;

/** The fake cloud: unary handlers by "Service/Method"; every request is recorded. */
class FakeCloud {
  readonly requests: Array<{ method: string; request: Record<string, unknown> }> = [];
  readonly handlers = new Map<string, Handler>();
  private readonly server = new grpc.Server();

  async start(): Promise<string> {
    for (const service of [
      'flotilla.compute.v1.HostService',
      'flotilla.compute.v1.VmService',
      'flotilla.migration.v1.MigrationService',
      'flotilla.migration.v1.EvacuationService',
      'flotilla.common.v1.OperationService',
    ]) {
      const definition = serviceDefinition(service);
      const impl: grpc.UntypedServiceImplementation = {};
      for (const name of Object.keys(definition)) {
        const key = `${service.split('.').pop()}/${name}`;
        impl[name] = (
          call: grpc.ServerUnaryCall<Record<string, unknown>, unknown>,
          cb: grpc.sendUnaryData<unknown>,
        ) => {
          this.requests.push({ method: key, request: call.request });
          const handler = this.handlers.get(key);
          if (!handler) return cb({ code: grpc.status.UNIMPLEMENTED, details: `${key} is not faked` });
          try {
            cb(null, handler(call.request));
          } catch (e) {
            cb(e as grpc.ServiceError);
          }
        };
      }
      this.server.addService(definition, impl);
    }
    const port = await new Promise<number>((resolve, reject) =>
      this.server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) =>
        e ? reject(e) : resolve(p),
      ),
    );
    return `127.0.0.1:${port}`;
  }

  stop(): void {
    this.server.forceShutdown();
  }

  calls(method: string): Array<Record<string, unknown>> {
    return this.requests.filter((r) => r.method === method).map((r) => r.request);
  }
}

const operation = (state: string) => ({
  id: OP_ID,
  kind: 'host.evacuate',
  state,
  progress: 0,
  createdAt: T(NOW),
  updatedAt: T(NOW),
});

const evacuation = (
  state: migrationV1.EvacuationState,
  vms: Array<Partial<migrationV1.EvacuationVmResult>>,
  over: Partial<migrationV1.Evacuation> = {},
) => ({
  id: EVAC_ID,
  hostId: HOSTS[0].id,
  state,
  maxParallel: 2,
  onBlocked: migrationV1.EvacuationBlockedPolicy.EVACUATION_BLOCKED_POLICY_SKIP,
  operationId: OP_ID,
  createdAt: T(NOW),
  vms: vms.map((v) => ({ blockers: [], migrationId: '', destinationHostId: '', ...v })),
  ...over,
});

const O = migrationV1.EvacuationVmOutcome;
const localStorage = {
  kind: migrationV1.BlockerKind.BLOCKER_KIND_LOCAL_STORAGE,
  message: 'disk db-1-root is on the local SR of host-1: add --with-storage',
  resource: { kind: 'vdi', id: 'f0f0f0f0-f0f0-4f0f-8f0f-f0f0f0f0f0f0', name: 'db-1-root' },
};

describe('the evacuation commands and migration failures against a fake cloud', () => {
  let fake: FakeCloud;
  let endpoint: string;

  const { flotilla } = cliFor(() => ({ endpoint, token: 'flt_test' }));

  beforeEach(async () => {
    fake = new FakeCloud();
    endpoint = await fake.start();
    const host = (ref: string) => HOSTS.find((h) => h.id === ref || h.name === ref);
    fake.handlers.set('HostService/GetHost', (r) => {
      const h = host(String(r.id));
      if (!h) throw new DomainError(ErrorCode.NotFound, `host ${String(r.id)} not found`);
      return { host: { ...h, state: 'HOST_STATE_ENABLED', vmCount: 2 } };
    });
    fake.handlers.set('HostService/ListHosts', () => ({ hosts: HOSTS, nextPageToken: '' }));
    fake.handlers.set('VmService/ListVms', (r) => {
      const filter = String((r.page as { filter?: string })?.filter ?? '');
      const name = /^name=(.*)$/.exec(filter)?.[1];
      return { vms: VMS.filter((v) => !name || v.name === name), nextPageToken: '' };
    });
    fake.handlers.set('OperationService/WaitOperation', () => ({
      operation: operation('OPERATION_STATE_RUNNING'),
    }));
  });
  afterEach(() => fake.stop());

  /** An evacuation that moves web-1, skips db-1 (blocked) and ends PARTIAL, one step per read. */
  const partialEvacuation = () => {
    const steps = [
      evacuation(migrationV1.EvacuationState.EVACUATION_STATE_RUNNING, [
        {
          vmId: VMS[0].id,
          outcome: O.EVACUATION_VM_OUTCOME_MIGRATING,
          migrationId: MIG_ID,
          destinationHostId: HOSTS[1].id,
        },
        { vmId: VMS[1].id, outcome: O.EVACUATION_VM_OUTCOME_SKIPPED, blockers: [localStorage] },
      ]),
      evacuation(
        migrationV1.EvacuationState.EVACUATION_STATE_PARTIAL,
        [
          {
            vmId: VMS[0].id,
            outcome: O.EVACUATION_VM_OUTCOME_MIGRATED,
            migrationId: MIG_ID,
            destinationHostId: HOSTS[1].id,
          },
          { vmId: VMS[1].id, outcome: O.EVACUATION_VM_OUTCOME_SKIPPED, blockers: [localStorage] },
        ],
        { stateReason: '1 VM blocked and skipped', progress: 1 },
      ),
    ];
    fake.handlers.set('EvacuationService/EvacuateHost', () => ({
      evacuation: evacuation(migrationV1.EvacuationState.EVACUATION_STATE_RUNNING, [
        { vmId: VMS[0].id, outcome: O.EVACUATION_VM_OUTCOME_PENDING },
        { vmId: VMS[1].id, outcome: O.EVACUATION_VM_OUTCOME_SKIPPED, blockers: [localStorage] },
      ]),
      operation: operation('OPERATION_STATE_RUNNING'),
    }));
    fake.handlers.set('EvacuationService/GetEvacuation', () => ({
      evacuation: steps.length > 1 ? steps.shift() : steps[0],
    }));
  };

  it('evacuates a host by name with the asked policy, and prints per VM what happened', async () => {
    partialEvacuation();
    const run = await flotilla('host', 'evacuate', 'host-1', '--on-blocked', 'skip', '--max-parallel', '3');
    expect(fake.calls('EvacuationService/EvacuateHost')).toEqual([
      expect.objectContaining({
        hostId: HOSTS[0].id,
        maxParallel: 3,
        onBlocked: 'EVACUATION_BLOCKED_POLICY_SKIP',
        withStorage: false,
        enterMaintenance: false,
        requestId: expect.stringMatching(/^cli-/),
      }),
    ]);
    expect(run.stdout).toMatch(/^VM\s+OUTCOME\s+DESTINATION\s+MIGRATION\s+REASON$/m);
    expect(run.stdout).toMatch(new RegExp(`^web-1\\s+migrated\\s+host-2\\s+${MIG_ID}$`, 'm'));
    expect(run.stdout).toMatch(
      /^db-1\s+skipped\s+local-storage: disk db-1-root is on the local SR of host-1/m,
    );
    expect(run.code).toBe(ExitCode.OperationFailed);
    expect(run.stderr).toBe(
      `flotilla: evacuation ${EVAC_ID} of host host-1 ended partial: 1 VM blocked and skipped; 1 VM still on the host\n`,
    );
  });

  it('prints the evacuation as JSON with --json, and still exits 6 when VMs remain', async () => {
    partialEvacuation();
    const run = await flotilla('host', 'evacuate', 'host-1', '--on-blocked', 'skip', '--json');
    expect(JSON.parse(run.stdout)).toMatchObject({
      evacuation: { id: EVAC_ID, state: 'EVACUATION_STATE_PARTIAL' },
    });
    expect(run.code).toBe(ExitCode.OperationFailed);
  });

  it('says the host is in maintenance when the evacuation emptied it', async () => {
    const done = evacuation(
      migrationV1.EvacuationState.EVACUATION_STATE_SUCCEEDED,
      [
        {
          vmId: VMS[0].id,
          outcome: O.EVACUATION_VM_OUTCOME_MIGRATED,
          migrationId: MIG_ID,
          destinationHostId: HOSTS[1].id,
        },
      ],
      { enterMaintenance: true, progress: 1 },
    );
    fake.handlers.set('EvacuationService/EvacuateHost', () => ({
      evacuation: { ...done, state: migrationV1.EvacuationState.EVACUATION_STATE_RUNNING },
      operation: operation('OPERATION_STATE_RUNNING'),
    }));
    fake.handlers.set('EvacuationService/GetEvacuation', () => ({ evacuation: done }));
    const run = await flotilla('host', 'evacuate', 'host-1', '--maintenance', '--with-storage');
    expect(fake.calls('EvacuationService/EvacuateHost')[0]).toMatchObject({
      enterMaintenance: true,
      withStorage: true,
    });
    expect(run).toMatchObject({ code: 0, stderr: '' });
    expect(run.stdout).toMatch(
      new RegExp(`^host host-1 evacuated and in maintenance \\(evacuation ${EVAC_ID}\\)$`, 'm'),
    );
  });

  it('prints each blocked VM of a refused evacuation before the error, and exits 3', async () => {
    fake.handlers.set('EvacuationService/EvacuateHost', () => {
      throw statusWithDetails(
        new DomainError(
          ErrorCode.FailedPrecondition,
          '1 VM of host host-1 cannot move: use --on-blocked skip or shutdown',
        ),
        [
          {
            reason: 'BLOCKER_KIND_LOCAL_STORAGE',
            field: '',
            description: localStorage.message,
            metadata: { vm_id: VMS[1].id },
          },
        ],
      );
    });
    const run = await flotilla('host', 'evacuate', 'host-1');
    expect(run.code).toBe(ExitCode.Conflict);
    expect(run.stderr).toBe(
      `  local-storage (${VMS[1].id}): ${localStorage.message}\n` +
        'flotilla: 1 VM of host host-1 cannot move: use --on-blocked skip or shutdown\n',
    );
  });

  it('prints the operation id and starts nothing else with --no-wait', async () => {
    partialEvacuation();
    const run = await flotilla('host', 'evacuate', 'host-1', '--on-blocked', 'skip', '--no-wait');
    expect(run).toMatchObject({ code: 0, stdout: `${OP_ID}\n` });
    expect(fake.calls('EvacuationService/GetEvacuation')).toEqual([]);
  });

  it('lists, shows and cancels evacuations', async () => {
    partialEvacuation();
    const last = evacuation(migrationV1.EvacuationState.EVACUATION_STATE_CANCELLED, [
      { vmId: VMS[0].id, outcome: O.EVACUATION_VM_OUTCOME_SKIPPED },
    ]);
    fake.handlers.set('EvacuationService/ListEvacuations', () => ({
      evacuations: [last],
      nextPageToken: '',
    }));
    fake.handlers.set('EvacuationService/CancelEvacuation', () => ({
      evacuation: { ...last, state: migrationV1.EvacuationState.EVACUATION_STATE_CANCELLING },
    }));
    const list = await flotilla('evacuation', 'list');
    expect(list.stdout).toMatch(/^ID\s+HOST\s+STATE\s+PROGRESS\s+VMS\s+ON BLOCKED\s+AGE$/m);
    expect(list.stdout).toMatch(new RegExp(`^${EVAC_ID}\\s+host-1\\s+cancelled\\s+0%\\s+1\\s+skip`, 'm'));
    const show = await flotilla('evacuation', 'show', EVAC_ID);
    expect(show.stdout).toMatch(/^state:\s+running$/m);
    expect(show.stdout).toMatch(/^db-1\s+skipped\s+local-storage:/m);
    const cancel = await flotilla('evacuation', 'cancel', EVAC_ID, '--no-wait');
    expect(cancel).toMatchObject({ code: 0 });
    expect(cancel.stdout).toMatch(/is cancelling; the host stays disabled/);
    expect(fake.calls('EvacuationService/CancelEvacuation')).toEqual([{ id: EVAC_ID }]);
  });

  it('follows a migration that fails after it started: its error, where the VM is, exit 6', async () => {
    const m = (state: migrationV1.MigrationState, over: Partial<migrationV1.Migration> = {}) => ({
      id: MIG_ID,
      vmId: VMS[0].id,
      sourceHostId: HOSTS[0].id,
      destinationHostId: HOSTS[1].id,
      mode: migrationV1.MigrationMode.MIGRATION_MODE_LIVE,
      state,
      phase: migrationV1.MigrationPhase.MIGRATION_PHASE_TRANSFER,
      operationId: OP_ID,
      createdAt: T(NOW),
      ...over,
    });
    fake.handlers.set('MigrationService/CreateMigration', () => ({
      migration: m(migrationV1.MigrationState.MIGRATION_STATE_RUNNING),
      operation: { ...operation('OPERATION_STATE_RUNNING'), kind: 'vm.migrate' },
    }));
    fake.handlers.set('MigrationService/GetMigration', () => ({
      migration: m(migrationV1.MigrationState.MIGRATION_STATE_FAILED, {
        phase: migrationV1.MigrationPhase.MIGRATION_PHASE_DONE,
        error: {
          code: grpc.status.UNAVAILABLE,
          message: 'host host-2 went DOWN during transfer; rolled back',
          details: [],
        },
      }),
    }));
    const run = await flotilla(
      'vm',
      'migrate',
      'web-1',
      '--to',
      'host-2',
      '--bandwidth',
      '512M/s',
      '--downtime-limit',
      '50',
      '--auto-converge',
      '--post-copy',
      '--post-copy-after',
      '5',
      '--timeout',
      '120',
    );
    expect(fake.calls('MigrationService/CreateMigration')[0]).toMatchObject({
      spec: {
        vmId: VMS[0].id,
        destinationHostId: HOSTS[1].id,
        mode: 'MIGRATION_MODE_LIVE',
        withStorage: false,
        options: {
          downtimeLimitMs: 50,
          bandwidthBytesPerSec: 512 * 1024 ** 2,
          autoConverge: true,
          postCopy: true,
          postCopyAfterRounds: 5,
          timeoutMs: 120_000,
        },
      },
    });
    expect(run.code).toBe(ExitCode.OperationFailed);
    expect(run.stderr).toBe(
      `flotilla: migration ${MIG_ID} of vm web-1 failed: host host-2 went DOWN during transfer; rolled back [UNAVAILABLE]; vm web-1 stays on host-1\n`,
    );
  });

  it('stops following on Ctrl-C, exits 130 and says how to follow or cancel the migration that goes on', async () => {
    const running = {
      id: MIG_ID,
      vmId: VMS[0].id,
      sourceHostId: HOSTS[0].id,
      destinationHostId: HOSTS[1].id,
      state: migrationV1.MigrationState.MIGRATION_STATE_RUNNING,
      phase: migrationV1.MigrationPhase.MIGRATION_PHASE_TRANSFER,
      operationId: OP_ID,
    };
    fake.handlers.set('MigrationService/CreateMigration', () => ({
      migration: running,
      operation: { ...operation('OPERATION_STATE_RUNNING'), kind: 'vm.migrate' },
    }));
    fake.handlers.set('MigrationService/GetMigration', () => {
      // The person presses Ctrl-C while the migration is still transferring.
      process.emit('SIGINT');
      return { migration: running };
    });
    const listeners = process.listenerCount('SIGINT');
    const run = await flotilla('vm', 'migrate', 'web-1');
    expect(run.code).toBe(ExitCode.Interrupted);
    expect(run.stderr).toBe(
      `flotilla: stopped following; migration ${MIG_ID} goes on (follow it with \`flotilla migration show ${MIG_ID}\`, ` +
        `cancel it with \`flotilla migration cancel ${MIG_ID}\`)\n`,
    );
    expect(fake.calls('MigrationService/CancelMigration')).toEqual([]);
    expect(process.listenerCount('SIGINT')).toBe(listeners);
  });

  it('exits 7 from --dry-run when only capacity blocks the migration, with warnings and estimates', async () => {
    fake.handlers.set('MigrationService/PreflightMigration', () => ({
      check: {
        migratable: false,
        blockers: [
          {
            kind: migrationV1.BlockerKind.BLOCKER_KIND_INSUFFICIENT_MEMORY,
            message: 'host host-2 has 1024 MiB free, the VM needs 2048 MiB',
            resource: { kind: 'host', id: HOSTS[1].id, name: 'host-2' },
          },
        ],
        warnings: [
          {
            kind: migrationV1.WarningKind.WARNING_KIND_MAY_NOT_CONVERGE,
            message: 'dirty rate 900 MiB/s is close to the bandwidth',
          },
        ],
        destinationHostId: HOSTS[1].id,
        vdiMap: {},
        memoryBytes: 2 * 1024 ** 3,
        storageBytesToCopy: 0,
        estimatedTotalTimeMs: 4200,
        estimatedDowntimeMs: 30,
        checkedAt: T(NOW),
      },
    }));
    const run = await flotilla('vm', 'migrate', 'web-1', '--dry-run');
    expect(fake.calls('MigrationService/PreflightMigration')[0]).toMatchObject({
      spec: { vmId: VMS[0].id, destinationHostId: '' },
    });
    expect(run.code).toBe(ExitCode.Exhausted);
    expect(run.stdout).toMatch(/^vm web-1 cannot migrate to host-2 now: 1 blocker$/m);
    expect(run.stdout).toMatch(/^insufficient-memory\s+host host-2\s+host host-2 has 1024 MiB free/m);
    expect(run.stdout).toMatch(/^may-not-converge\s+dirty rate 900 MiB\/s/m);
    expect(run.stdout).toMatch(/^estimated total time:\s+4\.2 s$/m);
    expect(run.stdout).toMatch(/^estimated downtime:\s+30 ms$/m);
    expect(fake.calls('MigrationService/CreateMigration')).toEqual([]);
  });
});
