import type { MigrationPhaseName, PendingAction } from '../persistence/entities';

/**
 * The decisions of a migration's run, pure: which crash points exist and in which order, what a rollback
 * or a clean-up has to call, what a restart does with a migration it finds, and how far along a phase is.
 * The runner (migration-runner.ts) does the I/O and records each step after it is done; every call it
 * makes is idempotent by migration id, so repeating the step after a crash is safe.
 */

/** Crash points of a LIVE run, in order: the last one passed is recorded as the migration's `step`. */
export const steps = [
  'queued',
  'preflighted',
  // compute BeginVmMigration: the VM is locked, the destination reserved, the hosts known. Not recorded on
  // its own since 2026-11-27: the record of 'disks-prepared' covers it (older records may still say it).
  'begun',
  // storage PrepareVmDiskMigration: target files made, the disk plan known.
  'disks-prepared',
  // destination PrepareIncoming: the incoming QEMU waits, its addresses known.
  'incoming-prepared',
  // source StartDiskMirror (only when disks are copied).
  'mirror-started',
  'mirror-ready',
  // source StartOutgoing: memory moves.
  'outgoing-started',
  // The point of no return, recorded while the source waits paused, or right after it switched over by
  // itself (the switch is armed); then the switch, then compute's commit (the VM's host and forwarded ports
  // move).
  'committing',
  'committed',
  // SwitchOver sent (or post-copy started): the destination has the VM.
  'switched',
  'completed',
  // The source could not say, but the destination runs the VM (its FinishIncoming answered).
  'completed-on-destination',
  // Post-copy lost the guest (the source went away with part of its memory): finished FAILED.
  'lost',
  // Rollback and clean-up keep their own list of calls (`pending`).
  'rolling-back',
  'cleaning-up',
  'done',
] as const;
export type Step = (typeof steps)[number];

export const stepIndex = (s: string): number => steps.indexOf(s as Step);

/** Steps the runner passes without a record of their own: the next step's record covers them. */
const unrecorded: ReadonlySet<Step> = new Set(['begun']);

/** The index of the next step the runner records after `step`. */
function nextRecorded(step: string): number {
  let i = stepIndex(step) + 1;
  while (unrecorded.has(steps[i])) i++;
  return i;
}

/** Whether step `at` is at or after `than`. */
export const reached = (at: string, than: Step): boolean => stepIndex(at) >= stepIndex(than);

/** Undo calls, in order, for a run that stopped at `step` before the point of no return. */
export function rollbackActions(step: string): PendingAction[] {
  const out: PendingAction[] = [];
  // Each undo is "success when nothing", so a step that may have run without being recorded (the call
  // answered, the process died before the record) is undone too: undo up to the next recorded step.
  const upTo = Math.min(nextRecorded(step), stepIndex('outgoing-started'));
  if (upTo >= stepIndex('mirror-started')) out.push('CANCEL_OUTGOING');
  if (upTo >= stepIndex('incoming-prepared')) out.push('ABORT_INCOMING');
  if (upTo >= stepIndex('disks-prepared')) out.push('ABORT_DISKS');
  if (upTo >= stepIndex('begun')) out.push('END_VM_MIGRATION');
  return out;
}

/**
 * Clean-up calls after the switchover, in order. Storage's commit (the VBDs attached on the destination, the
 * copied VDIs in their new files) comes first, for every migration: it is a record past the point of no
 * return, so it waits for the switch-over instead of adding to the guest's downtime.
 */
export function cleanupActions(): PendingAction[] {
  return ['COMMIT_DISKS', 'FINISH_INCOMING', 'FINISH_OUTGOING', 'CLEAN_UP_DISKS', 'END_VM_MIGRATION'];
}

/**
 * Calls that must have succeeded before the migration may end: the VM runs on exactly one host and compute
 * no longer holds it. The others (source leftovers, destination leftovers after a rollback) are retried by
 * the reconciler after the end.
 */
export function isEssential(action: PendingAction, rollingBack: boolean): boolean {
  return rollingBack
    ? action === 'CANCEL_OUTGOING' || action === 'END_VM_MIGRATION'
    : action === 'COMMIT_DISKS' || action === 'FINISH_INCOMING' || action === 'END_VM_MIGRATION';
}

/** An action waits for another one of the same list (old disk files go once the source QEMU is gone). */
export function blockedBy(
  action: PendingAction,
  pending: readonly PendingAction[],
): PendingAction | undefined {
  // The source decides the switch (armed, it switches by itself): nothing of the destination is undone
  // before the source's cancel succeeded, i.e. before it is sure to keep the VM.
  if ((action === 'ABORT_INCOMING' || action === 'ABORT_DISKS') && pending.includes('CANCEL_OUTGOING'))
    return 'CANCEL_OUTGOING';
  if (action === 'CLEAN_UP_DISKS' && pending.includes('COMMIT_DISKS')) return 'COMMIT_DISKS';
  if (action === 'CLEAN_UP_DISKS' && pending.includes('FINISH_OUTGOING')) return 'FINISH_OUTGOING';
  if (action === 'END_VM_MIGRATION' && pending.includes('COMMIT_DISKS')) return 'COMMIT_DISKS';
  // Compute releases the VM once the side it ends on has it (the source QEMU stopped, or the destination's
  // incoming VM taken over).
  if (action === 'END_VM_MIGRATION' && pending.includes('CANCEL_OUTGOING')) return 'CANCEL_OUTGOING';
  if (action === 'END_VM_MIGRATION' && pending.includes('FINISH_INCOMING')) return 'FINISH_INCOMING';
  return undefined;
}

/** The source QEMU's migration state as far as a restart needs it. */
export type OutgoingView =
  | { kind: 'gone' } // no migration of that id on the source (never started, or its record is gone)
  | { kind: 'unreachable' }
  | { kind: 'state'; state: string };

/** Source states a run goes on from: still migrating, or switched over by the source itself (armed). */
const goesOn = new Set([
  'OUTGOING_STATE_MIRRORING',
  'OUTGOING_STATE_SETUP',
  'OUTGOING_STATE_ACTIVE',
  'OUTGOING_STATE_PRE_SWITCHOVER',
  'OUTGOING_STATE_DEVICE',
  'OUTGOING_STATE_COMPLETED',
]);

export type ResumeDecision = 'continue' | 'rollback' | 'finish' | 'wait';

/**
 * What a (re)started service does with an unfinished migration. Past the point of no return it only ever
 * finishes. Before it, a run goes on while the source QEMU migrates or once it has switched over by itself
 * (the switch is armed: the record of the point of no return follows); one that failed or was cancelled
 * rolls back.
 * `outgoing` is asked only when the run had started mirroring or sending memory.
 */
export function resumeDecision(m: {
  state: string;
  step: string;
  pointOfNoReturnPassed: boolean;
  outgoing?: OutgoingView;
}): ResumeDecision {
  if (m.pointOfNoReturnPassed) return 'finish';
  if (m.state === 'CANCELLING' || m.step === 'rolling-back') return 'rollback';
  if (!reached(m.step, 'mirror-started')) return 'continue';
  if (!m.outgoing || m.outgoing.kind === 'unreachable') return 'wait';
  if (m.outgoing.kind === 'gone') return 'rollback';
  return goesOn.has(m.outgoing.state) ? 'continue' : 'rollback';
}

/** The phase a step belongs to. */
export function phaseOfStep(step: string, disksCopied: boolean): MigrationPhaseName {
  if (!reached(step, 'preflighted')) return 'PREFLIGHT';
  if (!reached(step, 'incoming-prepared')) return 'PREPARE';
  if (disksCopied && !reached(step, 'mirror-ready')) return 'MIRROR';
  if (!reached(step, 'committing')) return 'TRANSFER';
  if (!reached(step, 'completed')) return 'SWITCHOVER';
  return 'CLEANUP';
}

/** Overall progress, 0..1, from the phase and how far the phase is (0..1). */
export function overallProgress(phase: MigrationPhaseName, within: number, disksCopied: boolean): number {
  const f = Math.min(1, Math.max(0, within));
  const span = (from: number, to: number) => from + (to - from) * f;
  switch (phase) {
    case 'PREFLIGHT':
      return span(0, 0.02);
    case 'PREPARE':
      return span(0.02, 0.05);
    case 'MIRROR':
      return span(0.05, 0.45);
    case 'TRANSFER':
      return disksCopied ? span(0.45, 0.9) : span(0.05, 0.9);
    case 'SWITCHOVER':
    case 'POST_COPY':
      return span(0.9, 0.95);
    case 'CLEANUP':
      return span(0.95, 0.99);
    case 'DONE':
      return 1;
    case 'ROLLBACK':
      return 0;
  }
}

/** Blocker kinds that mean "not enough room" (RESOURCE_EXHAUSTED); every other one is FAILED_PRECONDITION. */
const capacityBlockers = new Set([
  'NO_DESTINATION',
  'INSUFFICIENT_MEMORY',
  'INSUFFICIENT_CPU',
  'INSUFFICIENT_STORAGE',
]);

/** The code CreateMigration refuses with: RESOURCE_EXHAUSTED only when every blocker is about capacity. */
export function refusalCode(blockerKinds: readonly string[]): 'RESOURCE_EXHAUSTED' | 'FAILED_PRECONDITION' {
  return blockerKinds.length > 0 && blockerKinds.every((k) => capacityBlockers.has(k))
    ? 'RESOURCE_EXHAUSTED'
    : 'FAILED_PRECONDITION';
}

/** Per-host limits of migrations taking part at once. */
export interface SlotLimits {
  outgoing: number;
  incoming: number;
}

/**
 * Which QUEUED migrations may start now (oldest first), given the running ones: a host sends at most
 * `outgoing` and receives at most `incoming` migrations at once, and a VM is moved by one at a time.
 */
export function admit<
  T extends { id: string; vmId: string; sourceHostId: string; destinationHostId: string },
>(running: readonly T[], queued: readonly T[], limits: SlotLimits): T[] {
  const out = new Map<string, number>();
  const inc = new Map<string, number>();
  const vms = new Set<string>();
  const take = (m: T) => {
    out.set(m.sourceHostId, (out.get(m.sourceHostId) ?? 0) + 1);
    inc.set(m.destinationHostId, (inc.get(m.destinationHostId) ?? 0) + 1);
    vms.add(m.vmId);
  };
  running.forEach(take);
  const admitted: T[] = [];
  for (const m of queued) {
    if (vms.has(m.vmId)) continue;
    if ((out.get(m.sourceHostId) ?? 0) >= limits.outgoing) continue;
    if ((inc.get(m.destinationHostId) ?? 0) >= limits.incoming) continue;
    take(m);
    admitted.push(m);
  }
  return admitted;
}
