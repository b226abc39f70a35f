import { AUTO_CONVERGE, CONVERGENCE_DECISION_ROUNDS, type ConvergenceVerdict } from '@flotilla/domain';

/**
 * What the run does about the convergence detector's verdict (libs/domain judges the numbers; this picks
 * the remedy the options allow). A pre-copy that does not converge is switched to post-copy when allowed,
 * left to auto-converge while QEMU still raises the throttle, or given up with the numbers, instead of
 * looping until the timeout (HOST-NOTES §4: with QEMU's defaults a busy guest never converges).
 */
/** Rounds auto-converge gets to start throttling before its absence counts as failure. */
export const AUTO_CONVERGE_GRACE_ROUNDS = 10 * CONVERGENCE_DECISION_ROUNDS;

export interface RemedyPolicy {
  autoConverge: boolean;
  postCopy: boolean;
  /** With post_copy: pre-copy rounds before switching. */
  postCopyAfterRounds: number;
}

export interface RoundView {
  rounds: number;
  throttlePercent: number;
  /** The throttle at the previous verdict (auto-converge goes on while it rises). */
  previousThrottlePercent: number;
}

export type Remedy =
  { action: 'wait' } | { action: 'post-copy'; reason: string } | { action: 'give-up'; reason: string };

export function remedy(verdict: ConvergenceVerdict, round: RoundView, policy: RemedyPolicy): Remedy {
  if (policy.postCopy && round.rounds >= policy.postCopyAfterRounds && verdict.state !== 'converging')
    return {
      action: 'post-copy',
      reason: `pre-copy did not converge in ${round.rounds} rounds (${verdict.message}): switched to post-copy`,
    };
  if (verdict.state !== 'not-converging') return { action: 'wait' };
  if (policy.postCopy) return { action: 'wait' };
  if (policy.autoConverge) {
    // QEMU raises the throttle by itself, once per second of a guest outpacing the link (not per round: rounds
    // of a small guest are much shorter), up to its ceiling: give up only when the throttle is at the ceiling
    // and the guest still outpaces the link, or when QEMU never started throttling over many rounds.
    const maxedOut = round.throttlePercent >= AUTO_CONVERGE.maxPercent;
    const neverThrottled = round.throttlePercent === 0 && round.rounds >= AUTO_CONVERGE_GRACE_ROUNDS;
    if (!maxedOut && !neverThrottled) return { action: 'wait' };
    return {
      action: 'give-up',
      reason: `pre-copy does not converge even with the vCPUs throttled ${round.throttlePercent}%: ${verdict.message}`,
    };
  }
  return { action: 'give-up', reason: `pre-copy does not converge: ${verdict.message}` };
}
