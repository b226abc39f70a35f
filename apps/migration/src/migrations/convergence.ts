import { AUTO_CONVERGE, CONVERGENCE_DECISION_ROUNDS, type ConvergenceVerdict } from '@flotilla/domain';

/**
 * What the run does about the convergence detector's verdict (libs/domain judges the numbers; this picks
 * the remedy the options allow). A pre-copy that does not converge is switched to post-copy when allowed,
 * left to auto-converge while QEMU still raises the throttle, or given up with the numbers, instead of
 * looping until the timeout (HOST-NOTES §4: with QEMU's defaults a busy guest never converges).
 */
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
    // QEMU raises the throttle by itself each round the guest outpaces the link: give it room until it
    // stops rising or reaches its ceiling.
    const starting = round.throttlePercent === 0 && round.rounds < 2 * CONVERGENCE_DECISION_ROUNDS;
    const rising = round.throttlePercent > round.previousThrottlePercent || starting;
    if (rising && round.throttlePercent < AUTO_CONVERGE.maxPercent) return { action: 'wait' };
    return {
      action: 'give-up',
      reason: `pre-copy does not converge even with the vCPUs throttled ${round.throttlePercent}%: ${verdict.message}`,
    };
  }
  return { action: 'give-up', reason: `pre-copy does not converge: ${verdict.message}` };
}
