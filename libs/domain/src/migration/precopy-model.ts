import { invalidArgument } from '../errors';

/**
 * Pre-copy live migration as QEMU runs it, reduced to its arithmetic: round 1 sends all memory at the
 * bandwidth cap; every next round sends what the guest dirtied during the previous one (never more than
 * its dirty working set); the source switches over once the remainder can be sent within the downtime
 * limit (QEMU's threshold: remaining <= bandwidth × downtime-limit). Auto-converge throttles the vCPUs as
 * QEMU does (cpu-throttle-initial 20, -increment 10, at most 99, triggered when a round dirtied more than
 * half of what it sent); a throttled guest dirties memory in proportion to the time it may run.
 * Used by the sim driver round by round and by preflight estimates in one go.
 */

/** Device state and the destination's start at switchover, on top of the last memory (12-35 ms measured under TCG). */
export const SWITCHOVER_OVERHEAD_MS = 10;
/** Post-copy pauses the guest only for the device state (1 ms measured). */
export const POST_COPY_SWITCH_MS = 1;
export const PAGE_SIZE_BYTES = 4096;
export const AUTO_CONVERGE = {
  initialPercent: 20,
  incrementPercent: 10,
  maxPercent: 99,
  /** A round that dirtied more than this share of what it sent raises the throttle. */
  triggerRatio: 0.5,
} as const;

/** How the guest writes its memory. */
export interface GuestMemoryLoad {
  memoryBytes: number;
  /** While unthrottled. */
  dirtyRateBytesPerSec: number;
  /** Memory the guest keeps rewriting: no round can find more dirty. Absent: all of its memory. */
  dirtyWorkingSetBytes?: number;
}

/** What the migration is allowed: the parameters the source QEMU gets. */
export interface PrecopyLink {
  bandwidthBytesPerSec: number;
  downtimeLimitMs: number;
  autoConverge: boolean;
}

export type PrecopyInput = GuestMemoryLoad & PrecopyLink;

/** Where a pre-copy stands between two rounds. */
export interface PrecopyProgress {
  /** Completed passes over memory. */
  rounds: number;
  /** Dirty memory the next pass (or the switchover) must send. */
  remainingBytes: number;
  transferredBytes: number;
  elapsedMs: number;
  throttlePercent: number;
  /** Effective dirty rate of the last round (after throttling); 0 before the first. */
  dirtyRateBytesPerSec: number;
}

export interface PrecopyRound {
  round: number;
  sentBytes: number;
  durationMs: number;
  dirtiedBytes: number;
  /** Dirty after the round: what the next round or the switchover sends. */
  remainingBytes: number;
  /** Effective rate during the round. */
  dirtyRateBytesPerSec: number;
  /** Throttle during the round. */
  throttlePercent: number;
  /** Downtime if the switchover happened right after the round. */
  expectedDowntimeMs: number;
}

export function startPrecopy(memoryBytes: number): PrecopyProgress {
  return {
    rounds: 0,
    remainingBytes: memoryBytes,
    transferredBytes: 0,
    elapsedMs: 0,
    throttlePercent: 0,
    dirtyRateBytesPerSec: 0,
  };
}

/** Time to send `bytes` at the bandwidth cap, ms. */
export function transferTimeMs(bytes: number, bandwidthBytesPerSec: number): number {
  return (bytes / bandwidthBytesPerSec) * 1000;
}

/** QEMU's switchover test: the remainder goes within the downtime limit. */
export function fitsDowntimeLimit(remainingBytes: number, link: PrecopyLink): boolean {
  return transferTimeMs(remainingBytes, link.bandwidthBytesPerSec) <= link.downtimeLimitMs;
}

/** The guest's dirty rate with the vCPUs throttled by `throttlePercent`. */
export function throttledDirtyRate(dirtyRateBytesPerSec: number, throttlePercent: number): number {
  return dirtyRateBytesPerSec * (1 - throttlePercent / 100);
}

/** One pass over memory: sends what is dirty, and returns what the guest dirtied meanwhile. */
export function precopyRound(
  progress: PrecopyProgress,
  input: PrecopyInput,
): { progress: PrecopyProgress; round: PrecopyRound } {
  checkInput(input);
  const sentBytes = progress.remainingBytes;
  const durationMs = transferTimeMs(sentBytes, input.bandwidthBytesPerSec);
  const dirtyRateBytesPerSec = throttledDirtyRate(input.dirtyRateBytesPerSec, progress.throttlePercent);
  const dirtiedBytes = Math.round(
    Math.min(workingSetBytes(input), (dirtyRateBytesPerSec * durationMs) / 1000),
  );
  const round: PrecopyRound = {
    round: progress.rounds + 1,
    sentBytes,
    durationMs,
    dirtiedBytes,
    remainingBytes: dirtiedBytes,
    dirtyRateBytesPerSec,
    throttlePercent: progress.throttlePercent,
    expectedDowntimeMs: transferTimeMs(dirtiedBytes, input.bandwidthBytesPerSec),
  };
  return {
    round,
    progress: {
      rounds: round.round,
      remainingBytes: dirtiedBytes,
      transferredBytes: progress.transferredBytes + sentBytes,
      elapsedMs: progress.elapsedMs + durationMs,
      throttlePercent: nextThrottlePercent(progress.throttlePercent, round, input.autoConverge),
      dirtyRateBytesPerSec,
    },
  };
}

/**
 * The pre-copy `elapsedMs` into a round that started at `progress`: what has gone and what is dirty now
 * (the unsent part of the round plus what the guest dirtied so far). For status between rounds and for a
 * switch to post-copy in the middle of one.
 */
export function precopyWithinRound(
  progress: PrecopyProgress,
  round: PrecopyRound,
  elapsedMs: number,
): { transferredBytes: number; remainingBytes: number } {
  const f = round.durationMs > 0 ? Math.min(1, Math.max(0, elapsedMs / round.durationMs)) : 1;
  const sent = Math.round(round.sentBytes * f);
  return {
    transferredBytes: progress.transferredBytes + sent,
    remainingBytes: round.sentBytes - sent + Math.round(round.dirtiedBytes * f),
  };
}

/** The stop-and-copy: the source pauses and sends the remainder and the device state. */
export function switchoverDowntimeMs(remainingBytes: number, bandwidthBytesPerSec: number): number {
  return transferTimeMs(remainingBytes, bandwidthBytesPerSec) + SWITCHOVER_OVERHEAD_MS;
}

export interface PostCopyOutcome {
  /** The guest is paused only for the device state. */
  downtimeMs: number;
  /** From the switch until the last page arrived. */
  durationMs: number;
  /** Pages the running guest touched before they arrived and had to fetch. */
  requests: number;
}

/**
 * Post-copy from `remainingBytes` dirty: the destination runs the guest at once and the source pushes the
 * rest at the bandwidth; the guest, unthrottled again, touches its working set at its dirty rate and on
 * average finds half of what it touches of the remainder still missing.
 */
export function postCopyOutcome(remainingBytes: number, input: PrecopyInput): PostCopyOutcome {
  checkInput(input);
  const durationMs = transferTimeMs(remainingBytes, input.bandwidthBytesPerSec);
  const touched = Math.min(
    remainingBytes,
    workingSetBytes(input),
    (input.dirtyRateBytesPerSec * durationMs) / 1000,
  );
  return {
    downtimeMs: POST_COPY_SWITCH_MS,
    durationMs: durationMs + POST_COPY_SWITCH_MS,
    requests: Math.round(touched / 2 / PAGE_SIZE_BYTES),
  };
}

export interface PrecopyResult {
  converged: boolean;
  rounds: PrecopyRound[];
  /** Switchover included when converged; the rounds run so far otherwise. */
  totalTimeMs: number;
  /** 0 when it did not converge. */
  downtimeMs: number;
  bytesTransferred: number;
  /** Still dirty at the end (0 when converged). */
  remainingBytes: number;
  throttlePercent: number;
}

/** Pre-copy rounds until the switchover or `maxRounds`, whichever comes first. */
export function simulatePrecopy(input: PrecopyInput & { maxRounds: number }): PrecopyResult {
  const rounds: PrecopyRound[] = [];
  let progress = startPrecopy(input.memoryBytes);
  while (rounds.length < input.maxRounds) {
    const next = precopyRound(progress, input);
    progress = next.progress;
    rounds.push(next.round);
    if (fitsDowntimeLimit(progress.remainingBytes, input)) {
      const downtimeMs = switchoverDowntimeMs(progress.remainingBytes, input.bandwidthBytesPerSec);
      return {
        converged: true,
        rounds,
        totalTimeMs: progress.elapsedMs + downtimeMs,
        downtimeMs,
        bytesTransferred: progress.transferredBytes + progress.remainingBytes,
        remainingBytes: 0,
        throttlePercent: progress.throttlePercent,
      };
    }
  }
  return {
    converged: false,
    rounds,
    totalTimeMs: progress.elapsedMs,
    downtimeMs: 0,
    bytesTransferred: progress.transferredBytes,
    remainingBytes: progress.remainingBytes,
    throttlePercent: progress.throttlePercent,
  };
}

/** Rounds a preflight estimate looks ahead: auto-converge reaches its 99% ceiling after 9 raises. */
export const ESTIMATE_MAX_ROUNDS = 50;

export interface MigrationEstimate {
  outcome: 'converges' | 'post-copy' | 'does-not-converge';
  /** 0 when it does not converge. */
  totalTimeMs: number;
  downtimeMs: number;
  rounds: number;
  bytesTransferred: number;
}

/**
 * A preflight estimate from the memory size, the recent dirty rate and the options: pre-copy, switching to
 * post-copy after `postCopyAfterRounds` when post-copy is on and pre-copy has not converged by then.
 */
export function estimateMigration(
  input: PrecopyInput & { postCopy: boolean; postCopyAfterRounds: number },
): MigrationEstimate {
  const precopy = simulatePrecopy({
    ...input,
    maxRounds: input.postCopy ? input.postCopyAfterRounds : ESTIMATE_MAX_ROUNDS,
  });
  const base = { rounds: precopy.rounds.length };
  if (precopy.converged)
    return {
      ...base,
      outcome: 'converges',
      totalTimeMs: Math.round(precopy.totalTimeMs),
      downtimeMs: Math.round(precopy.downtimeMs),
      bytesTransferred: precopy.bytesTransferred,
    };
  if (!input.postCopy)
    return { ...base, outcome: 'does-not-converge', totalTimeMs: 0, downtimeMs: 0, bytesTransferred: 0 };
  const post = postCopyOutcome(precopy.remainingBytes, input);
  return {
    ...base,
    outcome: 'post-copy',
    totalTimeMs: Math.round(precopy.totalTimeMs + post.durationMs),
    downtimeMs: Math.round(post.downtimeMs),
    bytesTransferred: precopy.bytesTransferred + precopy.remainingBytes,
  };
}

function nextThrottlePercent(current: number, round: PrecopyRound, autoConverge: boolean): number {
  if (!autoConverge || round.dirtiedBytes <= AUTO_CONVERGE.triggerRatio * round.sentBytes) return current;
  if (current === 0) return AUTO_CONVERGE.initialPercent;
  return Math.min(AUTO_CONVERGE.maxPercent, current + AUTO_CONVERGE.incrementPercent);
}

function workingSetBytes(load: GuestMemoryLoad): number {
  return Math.min(load.memoryBytes, load.dirtyWorkingSetBytes ?? load.memoryBytes);
}

/** Callers pass validated parameters; a zero bandwidth would make every round infinite. */
function checkInput(input: PrecopyInput): void {
  if (!(input.bandwidthBytesPerSec > 0))
    throw invalidArgument(
      'bandwidth_bytes_per_sec',
      `${input.bandwidthBytesPerSec} is not allowed: must be > 0`,
    );
  if (!(input.memoryBytes > 0))
    throw invalidArgument('memory_bytes', `${input.memoryBytes} is not allowed: must be > 0`);
  if (!(input.dirtyRateBytesPerSec >= 0))
    throw invalidArgument(
      'dirty_rate_bytes_per_sec',
      `${input.dirtyRateBytesPerSec} is not allowed: must be >= 0`,
    );
}
