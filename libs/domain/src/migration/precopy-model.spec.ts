import {
  AUTO_CONVERGE,
  estimateMigration,
  fitsDowntimeLimit,
  postCopyOutcome,
  precopyRound,
  precopyWithinRound,
  simulatePrecopy,
  startPrecopy,
} from './precopy-model';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const GB = 1e9;
/** HOST-NOTES §4: a 512 MiB demo guest; QEMU 7.2's defaults are 128 MiB/s and 300 ms. */
const guest = { memoryBytes: 512 * MiB };
const idle = { ...guest, dirtyRateBytesPerSec: 4e6 };
const dirty64 = { ...guest, dirtyRateBytesPerSec: GB, dirtyWorkingSetBytes: 64 * MiB };
const defaults = { bandwidthBytesPerSec: 128 * MiB, downtimeLimitMs: 300, autoConverge: false };

describe('pre-copy model', () => {
  it('moves an idle guest at 1 GiB/s in one round with a short downtime', () => {
    const result = simulatePrecopy({ ...idle, ...defaults, bandwidthBytesPerSec: GiB, maxRounds: 30 });
    expect(result.converged).toBe(true);
    expect(result.rounds.length).toBeLessThanOrEqual(2);
    expect(result.downtimeMs).toBeLessThan(300);
  });

  it('never converges with a guest rewriting 64 MiB at 1 GB/s under the defaults', () => {
    const result = simulatePrecopy({ ...dirty64, ...defaults, maxRounds: 100 });
    expect(result.converged).toBe(false);
    expect(result.remainingBytes).toBe(64 * MiB);
  });

  it('converges with the same guest at 4 GiB/s', () => {
    const result = simulatePrecopy({ ...dirty64, ...defaults, bandwidthBytesPerSec: 4 * GiB, maxRounds: 30 });
    expect(result.converged).toBe(true);
    expect(result.downtimeMs).toBeLessThanOrEqual(300);
  });

  it('converges with auto-converge under the defaults, throttling from 20% by 10% a round', () => {
    const result = simulatePrecopy({ ...dirty64, ...defaults, autoConverge: true, maxRounds: 50 });
    expect(result.converged).toBe(true);
    const throttles = result.rounds.map((r) => r.throttlePercent).filter((t) => t > 0);
    expect(throttles[0]).toBe(AUTO_CONVERGE.initialPercent);
    const raised = throttles.slice(1).map((t, i) => t - throttles[i]);
    expect(
      raised.every(
        (step, i) => step === AUTO_CONVERGE.incrementPercent || throttles[i + 1] === AUTO_CONVERGE.maxPercent,
      ),
    ).toBe(true);
  });

  it('never throttles past 99%', () => {
    const result = simulatePrecopy({
      memoryBytes: 512 * MiB,
      dirtyRateBytesPerSec: 1000 * GB,
      bandwidthBytesPerSec: MiB,
      downtimeLimitMs: 1,
      autoConverge: true,
      maxRounds: 20,
    });
    expect(result.throttlePercent).toBe(AUTO_CONVERGE.maxPercent);
  });

  it('sends all memory in round 1, then what the guest dirtied meanwhile, capped by its working set', () => {
    const first = precopyRound(startPrecopy(dirty64.memoryBytes), { ...dirty64, ...defaults });
    expect(first.round.sentBytes).toBe(512 * MiB);
    expect(first.round.durationMs).toBe(4000);
    expect(first.progress.remainingBytes).toBe(64 * MiB);
    const second = precopyRound(first.progress, { ...idle, ...defaults });
    expect(second.round.sentBytes).toBe(64 * MiB);
    expect(second.progress.transferredBytes).toBe(576 * MiB);
  });

  it('switches over only when the remainder goes within the downtime limit', () => {
    expect(fitsDowntimeLimit(38 * MiB, defaults)).toBe(true);
    expect(fitsDowntimeLimit(39 * MiB, defaults)).toBe(false);
  });

  it('reports a partly sent round as sent so far plus dirtied so far', () => {
    const start = startPrecopy(dirty64.memoryBytes);
    const { round } = precopyRound(start, { ...dirty64, ...defaults });
    expect(precopyWithinRound(start, round, round.durationMs / 2)).toEqual({
      transferredBytes: 256 * MiB,
      remainingBytes: 256 * MiB + 32 * MiB,
    });
  });

  it('pauses a post-copy guest only for the device state', () => {
    const outcome = postCopyOutcome(64 * MiB, { ...dirty64, ...defaults });
    expect(outcome.downtimeMs).toBeLessThan(5);
    expect(outcome.durationMs).toBeGreaterThan(500);
    expect(outcome.requests).toBeGreaterThan(0);
  });

  it('estimates a post-copy finish when pre-copy would not converge and post-copy is allowed', () => {
    const estimate = estimateMigration({ ...dirty64, ...defaults, postCopy: true, postCopyAfterRounds: 3 });
    expect(estimate).toMatchObject({ outcome: 'post-copy', rounds: 3 });
    expect(estimate.totalTimeMs).toBeGreaterThan(0);
  });

  it('estimates "does not converge" with no time when nothing helps', () => {
    expect(
      estimateMigration({ ...dirty64, ...defaults, postCopy: false, postCopyAfterRounds: 3 }),
    ).toMatchObject({
      outcome: 'does-not-converge',
      totalTimeMs: 0,
    });
  });

  it('refuses a zero bandwidth instead of looping forever', () => {
    expect(() => simulatePrecopy({ ...idle, ...defaults, bandwidthBytesPerSec: 0, maxRounds: 3 })).toThrow(
      'bandwidth_bytes_per_sec',
    );
  });
});
