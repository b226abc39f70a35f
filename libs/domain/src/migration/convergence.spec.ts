import {
  autoConvergeSafe,
  ConvergenceDetector,
  ConvergenceSample,
  judgeConvergence,
  postCopySafe,
} from './convergence';
import { simulatePrecopy } from './precopy-model';

const MiB = 1024 * 1024;
const GB = 1e9;

/** The samples a source would report for the modelled pre-copy. */
function samplesOf(input: Parameters<typeof simulatePrecopy>[0]): ConvergenceSample[] {
  return simulatePrecopy(input).rounds.map((r) => ({
    rounds: r.round,
    remainingBytes: r.remainingBytes,
    dirtyRateBytesPerSec: r.dirtyRateBytesPerSec,
    transferRateBytesPerSec: input.bandwidthBytesPerSec,
    expectedDowntimeMs: r.expectedDowntimeMs,
    downtimeLimitMs: input.downtimeLimitMs,
  }));
}

const dirty64 = { memoryBytes: 512 * MiB, dirtyRateBytesPerSec: GB, dirtyWorkingSetBytes: 64 * MiB };
const defaults = { bandwidthBytesPerSec: 128 * MiB, downtimeLimitMs: 300, autoConverge: false };

describe('convergence detector', () => {
  it('says not converging within 3 rounds for a guest dirtying faster than the link, with the numbers', () => {
    const detector = new ConvergenceDetector();
    const verdicts = samplesOf({ ...dirty64, ...defaults, maxRounds: 3 }).map((s) => detector.add(s));
    const verdict = verdicts[2];
    expect(verdict.state).toBe('not-converging');
    expect(verdict.message).toContain('after 3 rounds 64 MiB still to send');
    expect(verdict.message).toContain('the guest dirties 953.7 MiB/s, the link moves 128 MiB/s');
    expect(verdict.message).toContain('downtime limit of 300 ms needs <= 38.4 MiB left');
    expect(verdict.neededDowntimeLimitMs).toBe(500);
    // 64 MiB within 300 ms: what the bandwidth option must allow.
    expect(verdict.neededBandwidthBytesPerSec).toBe(Math.ceil((64 * MiB * 1000) / 300));
  });

  it('offers auto-converge and post-copy as ways out only where they are allowed', () => {
    const samples = samplesOf({ ...dirty64, ...defaults, maxRounds: 3 });
    const judge = (options?: { autoConvergeAllowed?: boolean; postCopyAllowed?: boolean }) => {
      const detector = new ConvergenceDetector(options);
      return samples.map((s) => detector.add(s))[2].message;
    };
    expect(judge()).toMatch(/, or set auto_converge or post_copy$/);
    expect(judge({ autoConvergeAllowed: false })).toMatch(
      /, or set post_copy \(auto_converge is refused on this TCG host\)$/,
    );
    // A TCG source: neither is offered, and the numbers still say what bandwidth or limit would do.
    expect(judge({ autoConvergeAllowed: false, postCopyAllowed: false })).toMatch(
      /raise bandwidth_bytes_per_sec to at least \d+ .*\(auto_converge and post_copy are refused on this TCG host\)$/,
    );
  });

  it('refuses auto-converge and post-copy only under TCG', () => {
    for (const safe of [autoConvergeSafe, postCopySafe]) {
      expect(safe('tcg')).toBe(false);
      expect(safe('TCG (kvm probe: no probe kernel available)')).toBe(false);
      expect(safe('kvm (probe passed)')).toBe(true);
      expect(safe('')).toBe(true);
    }
  });

  it('says converging as soon as the remainder fits the downtime limit', () => {
    const detector = new ConvergenceDetector();
    const samples = samplesOf({
      ...dirty64,
      ...defaults,
      bandwidthBytesPerSec: 4 * 1024 * MiB,
      maxRounds: 3,
    });
    expect(samples).toHaveLength(1);
    expect(detector.add(samples[0]).state).toBe('converging');
  });

  it('stays undecided after the first full pass when the remainder does not fit yet', () => {
    const [first] = samplesOf({ ...dirty64, ...defaults, maxRounds: 1 });
    expect(judgeConvergence([first]).state).toBe('undecided');
  });

  it('says converging by round 3 for a remainder shrinking fast enough', () => {
    const base = {
      dirtyRateBytesPerSec: 50 * MiB,
      transferRateBytesPerSec: 100 * MiB,
      expectedDowntimeMs: 1000,
      downtimeLimitMs: 300,
    };
    const verdict = judgeConvergence([
      { ...base, rounds: 1, remainingBytes: 400 * MiB },
      { ...base, rounds: 2, remainingBytes: 200 * MiB },
      { ...base, rounds: 3, remainingBytes: 100 * MiB },
    ]);
    expect(verdict.state).toBe('converging');
    expect(verdict.message).toContain('shrinking 50% a round');
  });

  it('says not converging when the remainder stalls for two rounds though the link is faster', () => {
    const base = {
      dirtyRateBytesPerSec: 90 * MiB,
      transferRateBytesPerSec: 100 * MiB,
      expectedDowntimeMs: 1000,
      downtimeLimitMs: 300,
    };
    const verdict = judgeConvergence([
      { ...base, rounds: 1, remainingBytes: 100 * MiB },
      { ...base, rounds: 2, remainingBytes: 98 * MiB },
      { ...base, rounds: 3, remainingBytes: 97 * MiB },
    ]);
    expect(verdict.state).toBe('not-converging');
  });

  it('ignores a repeated sample of the same round', () => {
    const detector = new ConvergenceDetector();
    const [first, second] = samplesOf({ ...dirty64, ...defaults, maxRounds: 2 });
    detector.add(first);
    detector.add(second);
    detector.add(second);
    // Three samples of which two are distinct: the stall rule needs two comparisons, so no verdict from it.
    expect(detector.verdict().message).not.toContain('after 3 rounds');
  });

  it('sees auto-converge turn a stalled pre-copy into a converging one', () => {
    const detector = new ConvergenceDetector();
    const verdicts = samplesOf({ ...dirty64, ...defaults, autoConverge: true, maxRounds: 50 }).map((s) =>
      detector.add(s),
    );
    expect(verdicts[2].state).toBe('not-converging');
    expect(verdicts[verdicts.length - 1].state).toBe('converging');
  });
});
