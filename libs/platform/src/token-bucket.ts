/**
 * A token bucket: `burst` takes at once, refilled at `ratePerSecond` up to `burst` again. Time comes from the
 * injected clock (ms), so callers and tests decide what "now" is.
 */
export class TokenBucket {
  private tokens: number;
  /** When `tokens` was last brought up to date (ms of the clock). */
  private at: number;
  private readonly ratePerMs: number;

  constructor(
    readonly burst: number,
    readonly ratePerSecond: number,
    private readonly now: () => number = Date.now,
  ) {
    if (!(ratePerSecond > 0) || !(burst >= 1)) {
      throw new Error(
        `a token bucket needs ratePerSecond > 0 and burst >= 1 (got ${ratePerSecond}, ${burst})`,
      );
    }
    this.ratePerMs = ratePerSecond / 1000;
    this.tokens = burst;
    this.at = now();
  }

  /** Takes one token if there is one; false when the bucket is empty. */
  take(): boolean {
    const now = this.now();
    this.tokens = Math.min(this.burst, this.tokens + (now - this.at) * this.ratePerMs);
    this.at = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  /** Whether the bucket has refilled by `now`: a full bucket is the same as a new one, so it may be forgotten. */
  isFull(now: number = this.now()): boolean {
    return this.tokens + (now - this.at) * this.ratePerMs >= this.burst;
  }

  /** Time for an empty bucket to refill, ms. */
  get refillMs(): number {
    return this.burst / this.ratePerMs;
  }
}
