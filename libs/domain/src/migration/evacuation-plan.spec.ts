import { ErrorCode } from '../errors';
import {
  evacuationEnd,
  evacuationProgress,
  planEvacuation,
  validateMaxParallel,
  vmsToStart,
  type EvacuationVmStatus,
  type ResidentVm,
} from './evacuation-plan';

const vm = (
  vmId: string,
  memoryMib: number,
  blockers: ResidentVm['blockers'] = [],
  vcpus = 1,
): ResidentVm => ({
  vmId,
  memoryMib,
  vcpus,
  blockers,
});
const room = (freeMemoryMib: number, freeVcpus = 64) => ({ freeMemoryMib, freeVcpus });
const localDisk = { kind: 'LOCAL_STORAGE', message: 'disk d1 is on the FILE SR of h1' };

describe('validateMaxParallel', () => {
  it('reads 0 as the default of 2 migrations at once', () => {
    expect(validateMaxParallel(0)).toBe(2);
  });

  it('accepts 1 to 16', () => {
    expect(validateMaxParallel(1)).toBe(1);
    expect(validateMaxParallel(16)).toBe(16);
  });

  it.each([17, -1, 2.5])('refuses %p naming the field max_parallel', (value) => {
    expect(() => validateMaxParallel(value)).toThrow(
      expect.objectContaining({ code: ErrorCode.InvalidArgument, fields: { field: 'max_parallel' } }),
    );
  });
});

describe('planEvacuation', () => {
  it('moves every VM when none is blocked and the other hosts hold them all', () => {
    const plan = planEvacuation({
      vms: [vm('a', 512), vm('b', 1024)],
      destinations: [room(1024), room(512)],
      onBlocked: 'FAIL',
    });
    expect(plan).toEqual({
      refused: false,
      vms: [
        { vmId: 'a', action: 'MIGRATE', blockers: [] },
        { vmId: 'b', action: 'MIGRATE', blockers: [] },
      ],
    });
  });

  it('refuses under FAIL listing only the blocked VMs with their blockers', () => {
    const plan = planEvacuation({
      vms: [vm('a', 512, [localDisk]), vm('b', 512)],
      destinations: [room(4096)],
      onBlocked: 'FAIL',
    });
    expect(plan).toEqual({
      refused: true,
      reason: 'BLOCKED',
      blocked: [{ vmId: 'a', action: 'SKIP', blockers: [localDisk] }],
    });
  });

  it('leaves blocked VMs on the host under SKIP and moves the rest', () => {
    const plan = planEvacuation({
      vms: [vm('a', 512, [localDisk]), vm('b', 512)],
      destinations: [room(4096)],
      onBlocked: 'SKIP',
    });
    expect(plan.refused).toBe(false);
    expect(!plan.refused && plan.vms.map((p) => [p.vmId, p.action])).toEqual([
      ['a', 'SKIP'],
      ['b', 'MIGRATE'],
    ]);
  });

  it('shuts blocked VMs down under SHUTDOWN', () => {
    const plan = planEvacuation({
      vms: [vm('a', 512, [localDisk])],
      destinations: [room(4096)],
      onBlocked: 'SHUTDOWN',
    });
    expect(!plan.refused && plan.vms[0].action).toBe('SHUTDOWN');
  });

  it('blocks the VMs the other hosts cannot hold together, though each fits alone, keeping the most VMs', () => {
    // 2560 MiB free in all: the two 1024 MiB VMs fit, the 2048 MiB one no longer does.
    const plan = planEvacuation({
      vms: [vm('big', 2048), vm('s1', 1024), vm('s2', 1024)],
      destinations: [room(1536), room(1024)],
      onBlocked: 'SKIP',
    });
    expect(!plan.refused && plan.vms.map((p) => [p.vmId, p.action, p.blockers.map((b) => b.kind)])).toEqual([
      ['big', 'SKIP', ['INSUFFICIENT_MEMORY']],
      ['s1', 'MIGRATE', []],
      ['s2', 'MIGRATE', []],
    ]);
  });

  it('counts vCPUs as well as memory', () => {
    const plan = planEvacuation({
      vms: [vm('a', 128, [], 4), vm('b', 128, [], 4)],
      destinations: [room(4096, 6)],
      onBlocked: 'SKIP',
    });
    expect(!plan.refused && plan.vms.map((p) => p.blockers.map((b) => b.kind))).toEqual([
      [],
      ['INSUFFICIENT_CPU'],
    ]);
  });

  it('refuses as NO_CAPACITY under FAIL when lack of room is the only reason', () => {
    const plan = planEvacuation({
      vms: [vm('a', 1024), vm('b', 1024, [{ kind: 'NO_DESTINATION', message: 'no host' }])],
      destinations: [room(512)],
      onBlocked: 'FAIL',
    });
    expect(plan.refused && plan.reason).toBe('NO_CAPACITY');
    expect(plan.refused && plan.blocked.map((p) => p.vmId)).toEqual(['a', 'b']);
  });

  it('ignores overcommitted destinations (negative free room) in the sum', () => {
    const plan = planEvacuation({
      vms: [vm('a', 1024)],
      destinations: [room(-4096), room(1024)],
      onBlocked: 'FAIL',
    });
    expect(plan.refused).toBe(false);
  });

  it('plans an empty host as nothing to do', () => {
    expect(planEvacuation({ vms: [], destinations: [], onBlocked: 'FAIL' })).toEqual({
      refused: false,
      vms: [],
    });
  });
});

describe('a running evacuation', () => {
  const s = (
    vmId: string,
    outcome: EvacuationVmStatus['outcome'],
    action: EvacuationVmStatus['action'] = 'MIGRATE',
  ) => ({
    vmId,
    action,
    outcome,
  });

  it('starts pending moves only up to max_parallel migrations at once', () => {
    const vms = [
      s('a', 'MIGRATING'),
      s('b', 'PENDING'),
      s('c', 'PENDING'),
      s('d', 'MIGRATED'),
      s('e', 'PENDING'),
    ];
    expect(vmsToStart(vms, 3)).toEqual(['b', 'c']);
    expect(vmsToStart(vms, 1)).toEqual([]);
  });

  it('never starts a migration for a VM planned to be shut down or skipped', () => {
    expect(vmsToStart([s('a', 'PENDING', 'SHUTDOWN'), s('b', 'SKIPPED', 'SKIP')], 4)).toEqual([]);
  });

  it('measures progress as the fraction of VMs dealt with', () => {
    expect(
      evacuationProgress([s('a', 'MIGRATED'), s('b', 'MIGRATING'), s('c', 'SKIPPED'), s('d', 'PENDING')]),
    ).toBe(0.5);
    expect(evacuationProgress([])).toBe(1);
  });

  it('ends SUCCEEDED when every VM moved or was shut down', () => {
    expect(
      evacuationEnd({
        vms: [s('a', 'MIGRATED'), s('b', 'SHUT_DOWN')],
        cancelled: false,
        failedForHost: false,
      }),
    ).toBe('SUCCEEDED');
  });

  it('ends PARTIAL when some VMs were skipped or failed', () => {
    expect(
      evacuationEnd({ vms: [s('a', 'MIGRATED'), s('b', 'FAILED')], cancelled: false, failedForHost: false }),
    ).toBe('PARTIAL');
  });

  it('ends FAILED on an error for the whole host and CANCELLED on a cancel, whatever the VMs', () => {
    expect(evacuationEnd({ vms: [s('a', 'MIGRATED')], cancelled: false, failedForHost: true })).toBe(
      'FAILED',
    );
    expect(evacuationEnd({ vms: [s('a', 'MIGRATED')], cancelled: true, failedForHost: true })).toBe(
      'CANCELLED',
    );
  });
});
