import { judgeConvergence, type ConvergenceSample } from '@flotilla/domain';
import { remedy } from './convergence';
import {
  admit,
  blockedBy,
  cleanupActions,
  isEssential,
  phaseOfStep,
  refusalCode,
  resumeDecision,
  rollbackActions,
} from './run-plan';

describe('rollback actions', () => {
  it('undoes nothing before compute was asked to lock the VM, except the lock itself when it may have been taken', () => {
    expect(rollbackActions('queued')).toEqual([]);
    // Begin and storage's prepare may have answered without their one record: their undos are safe ("not
    // held", "nothing prepared" are successes).
    expect(rollbackActions('preflighted')).toEqual(['ABORT_DISKS', 'END_VM_MIGRATION']);
    // A record of 'begun' alone, written by an earlier version, still undoes what may follow it.
    expect(rollbackActions('begun')).toEqual(['ABORT_DISKS', 'END_VM_MIGRATION']);
  });

  it('undoes every side in order once the incoming VM may exist: source, destination, disks, compute', () => {
    expect(rollbackActions('disks-prepared')).toEqual(['ABORT_INCOMING', 'ABORT_DISKS', 'END_VM_MIGRATION']);
    expect(rollbackActions('incoming-prepared')).toEqual([
      'CANCEL_OUTGOING',
      'ABORT_INCOMING',
      'ABORT_DISKS',
      'END_VM_MIGRATION',
    ]);
    expect(rollbackActions('outgoing-started')).toEqual(rollbackActions('incoming-prepared'));
  });

  it('keeps compute holding the VM until the source stopped sending', () => {
    expect(blockedBy('END_VM_MIGRATION', ['CANCEL_OUTGOING', 'END_VM_MIGRATION'])).toBe('CANCEL_OUTGOING');
    expect(blockedBy('END_VM_MIGRATION', ['ABORT_INCOMING', 'END_VM_MIGRATION'])).toBeUndefined();
  });

  it('undoes nothing of the destination before the source is sure to keep the VM (its cancel succeeded)', () => {
    const all = rollbackActions('outgoing-started');
    expect(blockedBy('ABORT_INCOMING', all)).toBe('CANCEL_OUTGOING');
    expect(blockedBy('ABORT_DISKS', all)).toBe('CANCEL_OUTGOING');
    expect(blockedBy('ABORT_INCOMING', ['ABORT_INCOMING', 'ABORT_DISKS'])).toBeUndefined();
    expect(blockedBy('ABORT_DISKS', ['ABORT_INCOMING', 'ABORT_DISKS'])).toBeUndefined();
  });

  it('must cancel the source and release compute before ending; destination leftovers may wait', () => {
    expect(isEssential('CANCEL_OUTGOING', true)).toBe(true);
    expect(isEssential('END_VM_MIGRATION', true)).toBe(true);
    expect(isEssential('ABORT_INCOMING', true)).toBe(false);
    expect(isEssential('ABORT_DISKS', true)).toBe(false);
  });
});

describe('clean-up after the switchover', () => {
  it('hands the VM to the destination first and deletes old disk files only once the source QEMU is gone', () => {
    expect(cleanupActions()).toEqual([
      'COMMIT_DISKS',
      'FINISH_INCOMING',
      'FINISH_OUTGOING',
      'CLEAN_UP_DISKS',
      'END_VM_MIGRATION',
    ]);
    expect(blockedBy('CLEAN_UP_DISKS', ['COMMIT_DISKS', 'CLEAN_UP_DISKS'])).toBe('COMMIT_DISKS');
    expect(blockedBy('END_VM_MIGRATION', ['COMMIT_DISKS', 'END_VM_MIGRATION'])).toBe('COMMIT_DISKS');
    expect(isEssential('COMMIT_DISKS', false)).toBe(true);
    expect(blockedBy('CLEAN_UP_DISKS', ['FINISH_OUTGOING', 'CLEAN_UP_DISKS'])).toBe('FINISH_OUTGOING');
    expect(blockedBy('END_VM_MIGRATION', ['FINISH_INCOMING', 'END_VM_MIGRATION'])).toBe('FINISH_INCOMING');
    // A dead source host must not keep the VM locked in compute: only the destination side is essential.
    expect(isEssential('FINISH_OUTGOING', false)).toBe(false);
    expect(isEssential('FINISH_INCOMING', false)).toBe(true);
  });
});

describe('resume after a restart', () => {
  const base = { state: 'RUNNING', pointOfNoReturnPassed: false };

  it('only ever finishes a migration past its point of no return', () => {
    expect(resumeDecision({ ...base, step: 'committing', pointOfNoReturnPassed: true })).toBe('finish');
    expect(
      resumeDecision({
        ...base,
        step: 'switched',
        pointOfNoReturnPassed: true,
        outgoing: { kind: 'gone' },
      }),
    ).toBe('finish');
  });

  it('continues the idempotent preparation steps', () => {
    expect(resumeDecision({ ...base, step: 'begun' })).toBe('continue');
    expect(resumeDecision({ ...base, step: 'incoming-prepared' })).toBe('continue');
  });

  it('picks up a transfer the source QEMU still runs, and rolls back one it no longer does', () => {
    const at = { ...base, step: 'outgoing-started' };
    expect(resumeDecision({ ...at, outgoing: { kind: 'state', state: 'OUTGOING_STATE_ACTIVE' } })).toBe(
      'continue',
    );
    expect(
      resumeDecision({ ...at, outgoing: { kind: 'state', state: 'OUTGOING_STATE_PRE_SWITCHOVER' } }),
    ).toBe('continue');
    expect(resumeDecision({ ...at, outgoing: { kind: 'state', state: 'OUTGOING_STATE_FAILED' } })).toBe(
      'rollback',
    );
    expect(resumeDecision({ ...at, outgoing: { kind: 'gone' } })).toBe('rollback');
    // Armed, the source switches over by itself: the record of the point of no return is still to come.
    expect(resumeDecision({ ...at, outgoing: { kind: 'state', state: 'OUTGOING_STATE_COMPLETED' } })).toBe(
      'continue',
    );
    expect(resumeDecision({ ...at, outgoing: { kind: 'unreachable' } })).toBe('wait');
  });

  it('goes on rolling back a cancelled or failing one', () => {
    expect(resumeDecision({ ...base, state: 'CANCELLING', step: 'begun' })).toBe('rollback');
    expect(resumeDecision({ ...base, step: 'rolling-back' })).toBe('rollback');
  });
});

describe('phases', () => {
  it('maps steps to phases, with MIRROR only when disks are copied', () => {
    expect(phaseOfStep('queued', false)).toBe('PREFLIGHT');
    expect(phaseOfStep('begun', false)).toBe('PREPARE');
    expect(phaseOfStep('incoming-prepared', true)).toBe('MIRROR');
    expect(phaseOfStep('incoming-prepared', false)).toBe('TRANSFER');
    expect(phaseOfStep('mirror-ready', true)).toBe('TRANSFER');
    expect(phaseOfStep('committing', false)).toBe('SWITCHOVER');
    expect(phaseOfStep('completed', false)).toBe('CLEANUP');
  });
});

describe('refusals', () => {
  it('is RESOURCE_EXHAUSTED only when every blocker is about capacity', () => {
    expect(refusalCode(['INSUFFICIENT_MEMORY', 'NO_DESTINATION'])).toBe('RESOURCE_EXHAUSTED');
    expect(refusalCode(['INSUFFICIENT_MEMORY', 'VM_POWER_STATE'])).toBe('FAILED_PRECONDITION');
    expect(refusalCode(['LOCAL_STORAGE'])).toBe('FAILED_PRECONDITION');
  });
});

describe('admission', () => {
  const m = (id: string, vmId: string, from: string, to: string) => ({
    id,
    vmId,
    sourceHostId: from,
    destinationHostId: to,
  });
  const limits = { outgoing: 2, incoming: 2 };

  it('starts queued migrations oldest first within the per-host limits', () => {
    const running = [m('r1', 'v1', 'a', 'b'), m('r2', 'v2', 'a', 'c')];
    const queued = [m('q1', 'v3', 'a', 'd'), m('q2', 'v4', 'e', 'b'), m('q3', 'v5', 'f', 'b')];
    // a already sends 2; b receives 1, so one more fits.
    expect(admit(running, queued, limits).map((x) => x.id)).toEqual(['q2']);
  });

  it('moves a VM by one migration at a time', () => {
    expect(admit([m('r1', 'v1', 'a', 'b')], [m('q1', 'v1', 'a', 'c')], limits)).toEqual([]);
  });
});

describe('remedy for a pre-copy that does not converge', () => {
  const sample = (rounds: number, remainingMiB: number): ConvergenceSample => ({
    rounds,
    remainingBytes: remainingMiB * 1024 * 1024,
    dirtyRateBytesPerSec: 200 * 1024 * 1024,
    transferRateBytesPerSec: 128 * 1024 * 1024,
    expectedDowntimeMs: 500,
    downtimeLimitMs: 300,
  });
  const stuck = judgeConvergence([sample(1, 512), sample(2, 200), sample(3, 200)]);
  const policy = { autoConverge: false, postCopy: false, postCopyAfterRounds: 3 };

  it('gives up with the numbers when nothing else is allowed', () => {
    expect(stuck.state).toBe('not-converging');
    const r = remedy(stuck, { rounds: 3, throttlePercent: 0, previousThrottlePercent: 0 }, policy);
    expect(r.action).toBe('give-up');
    expect(r.action === 'give-up' && r.reason).toMatch(/MiB/);
  });

  it('switches to post-copy after the allowed rounds when post_copy is set', () => {
    const p = { ...policy, postCopy: true };
    expect(remedy(stuck, { rounds: 3, throttlePercent: 0, previousThrottlePercent: 0 }, p).action).toBe(
      'post-copy',
    );
    expect(
      remedy(
        stuck,
        { rounds: 3, throttlePercent: 0, previousThrottlePercent: 0 },
        { ...p, postCopyAfterRounds: 5 },
      ).action,
    ).toBe('wait');
  });

  it('lets auto-converge go on while the throttle rises, and gives up when it stops rising', () => {
    const p = { ...policy, autoConverge: true };
    expect(remedy(stuck, { rounds: 4, throttlePercent: 30, previousThrottlePercent: 20 }, p).action).toBe(
      'wait',
    );
    // QEMU throttles once a second, not once a round: a throttle that did not move this round is not the end.
    expect(remedy(stuck, { rounds: 12, throttlePercent: 30, previousThrottlePercent: 30 }, p).action).toBe(
      'wait',
    );
    expect(remedy(stuck, { rounds: 8, throttlePercent: 0, previousThrottlePercent: 0 }, p).action).toBe(
      'wait',
    );
    expect(remedy(stuck, { rounds: 30, throttlePercent: 0, previousThrottlePercent: 0 }, p).action).toBe(
      'give-up',
    );
    expect(remedy(stuck, { rounds: 9, throttlePercent: 99, previousThrottlePercent: 99 }, p).action).toBe(
      'give-up',
    );
  });

  it('waits while pre-copy converges', () => {
    const fine = judgeConvergence([sample(1, 512), { ...sample(2, 20), expectedDowntimeMs: 100 }]);
    expect(remedy(fine, { rounds: 2, throttlePercent: 0, previousThrottlePercent: 0 }, policy).action).toBe(
      'wait',
    );
  });
});
