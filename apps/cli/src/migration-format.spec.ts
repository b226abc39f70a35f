import { migrationV1 } from '@flotilla/contracts';
import { ExitCode } from './errors';
import { preflightExitCode } from './commands/migration';
import {
  duration,
  evacuationProgress,
  evacuationRows,
  migrationFailure,
  phaseRows,
  progressLine,
  statsPairs,
} from './migration-format';

// Pure: how migrations and evacuations read in the CLI.

const MiB = 1024 ** 2;
const P = migrationV1.MigrationPhase;
const O = migrationV1.EvacuationVmOutcome;

const migration = (over: Partial<migrationV1.Migration>): migrationV1.Migration =>
  ({
    id: 'm-1',
    vmId: 'vm-1',
    sourceHostId: 'h-1',
    destinationHostId: 'h-2',
    state: migrationV1.MigrationState.MIGRATION_STATE_RUNNING,
    phase: P.MIGRATION_PHASE_TRANSFER,
    progress: 0.42,
    phases: [],
    ...over,
  }) as migrationV1.Migration;

describe('migration formatting', () => {
  it.each<[number, string]>([
    [0, '0 ms'],
    [16, '16 ms'],
    [850, '850 ms'],
    [12_345, '12.3 s'],
    [60_000, '1 min'],
    [125_000, '2 min 5 s'],
    [7_384_000, '2 h 3 min'],
  ])('reads %d ms as %s', (ms, text) => {
    expect(duration(ms)).toBe(text);
  });

  it('shows phase, progress, round, remaining memory, dirty rate and throttle on one line', () => {
    const line = progressLine(
      migration({
        stats: {
          rounds: 3,
          memoryRemainingBytes: 120 * MiB,
          dirtyRateBytesPerSec: 80 * MiB,
          cpuThrottlePercent: 20,
        } as migrationV1.MigrationStats,
      }),
    );
    expect(line).toBe('transfer 42% · round 3 · 120 MiB left · dirty 80 MiB/s · throttle 20%');
  });

  it('leaves out of the progress line what is not measured yet', () => {
    expect(progressLine(migration({ phase: P.MIGRATION_PHASE_PREPARE, progress: 0 }))).toBe('prepare 0%');
  });

  it('lists the statistics people compare, leaving unknown ones empty', () => {
    const pairs = Object.fromEntries(
      statsPairs({
        totalTimeMs: 290,
        downtimeMs: 16,
        bytesTransferred: 530 * MiB,
        rounds: 2,
        dirtyRateBytesPerSec: 0,
      } as migrationV1.MigrationStats),
    );
    expect(pairs).toMatchObject({
      'total time': '290 ms',
      downtime: '16 ms',
      transferred: '530 MiB',
      rounds: 2,
      'dirty rate': '',
    });
  });

  it('times each phase, a running one until now', () => {
    const t0 = Date.UTC(2026, 0, 1, 10, 0, 0);
    const rows = phaseRows(
      [
        {
          phase: P.MIGRATION_PHASE_PREPARE,
          startedAt: new Date(t0),
          endedAt: new Date(t0 + 120),
          detail: 'ports bound',
        },
        { phase: P.MIGRATION_PHASE_TRANSFER, startedAt: new Date(t0 + 120), endedAt: undefined, detail: '' },
      ],
      t0 + 2620,
    );
    expect(rows).toEqual([
      ['prepare', '2026-01-01 10:00:00Z', '120 ms', 'ports bound'],
      ['transfer', '2026-01-01 10:00:00Z', '2.5 s (running)', ''],
    ]);
  });

  it('says where the VM is after a failure before the point of no return', () => {
    const failed = migration({
      state: migrationV1.MigrationState.MIGRATION_STATE_FAILED,
      error: { code: 14, message: 'the destination agent went away', details: [] },
    });
    expect(migrationFailure(failed, 'web-1', new Map([['h-1', 'host-1']]))).toBe(
      'migration m-1 of vm web-1 failed: the destination agent went away [UNAVAILABLE]; vm web-1 stays on host-1',
    );
    expect(
      migrationFailure(
        { ...failed, state: migrationV1.MigrationState.MIGRATION_STATE_CANCELLED, error: undefined },
        'web-1',
        new Map(),
      ),
    ).toBe('migration m-1 of vm web-1 was cancelled; vm web-1 stays on h-1');
  });

  it('refuses like CreateMigration would: exit 7 when only capacity blocks, else 3', () => {
    const B = migrationV1.BlockerKind;
    expect(
      preflightExitCode([
        { kind: B.BLOCKER_KIND_INSUFFICIENT_MEMORY },
        { kind: B.BLOCKER_KIND_NO_DESTINATION },
      ]),
    ).toBe(ExitCode.Exhausted);
    expect(
      preflightExitCode([{ kind: B.BLOCKER_KIND_INSUFFICIENT_CPU }, { kind: B.BLOCKER_KIND_LOCAL_STORAGE }]),
    ).toBe(ExitCode.Conflict);
  });
});

describe('evacuation formatting', () => {
  const vms = [
    {
      vmId: 'vm-1',
      outcome: O.EVACUATION_VM_OUTCOME_MIGRATED,
      migrationId: 'm-1',
      destinationHostId: 'h-2',
      blockers: [],
    },
    {
      vmId: 'vm-2',
      outcome: O.EVACUATION_VM_OUTCOME_MIGRATING,
      migrationId: 'm-2',
      destinationHostId: 'h-3',
      blockers: [],
    },
    {
      vmId: 'vm-3',
      outcome: O.EVACUATION_VM_OUTCOME_SKIPPED,
      migrationId: '',
      destinationHostId: '',
      blockers: [{ kind: migrationV1.BlockerKind.BLOCKER_KIND_LOCAL_STORAGE, message: 'disk on a local SR' }],
    },
    {
      vmId: 'vm-4',
      outcome: O.EVACUATION_VM_OUTCOME_PENDING,
      migrationId: '',
      destinationHostId: '',
      blockers: [],
    },
  ] as migrationV1.EvacuationVmResult[];

  it('gives one row per VM: name, outcome, destination, migration, reason', () => {
    expect(evacuationRows({ vms }, new Map([['vm-1', 'web-1']]), new Map([['h-2', 'host-2']]))).toEqual([
      ['web-1', 'migrated', 'host-2', 'm-1', ''],
      ['vm-2', 'migrating', 'h-3', 'm-2', ''],
      ['vm-3', 'skipped', '', '', 'local-storage: disk on a local SR'],
      ['vm-4', 'pending', '', '', ''],
    ]);
  });

  it('counts the VMs dealt with while it runs', () => {
    expect(evacuationProgress({ vms, state: migrationV1.EvacuationState.EVACUATION_STATE_RUNNING })).toBe(
      'running · 2/4 VMs dealt with · 1 migrating · 1 migrated · 1 skipped',
    );
  });
});
