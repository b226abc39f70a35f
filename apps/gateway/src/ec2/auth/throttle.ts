import { Ec2Error } from '../errors';

interface Bucket {
  tokens: number;
  /** When `tokens` was last brought up to date (ms of the injected clock). */
  at: number;
}

/**
 * Per-access-key token buckets: each key may send `burst` requests at once and `ratePerSecond` sustained;
 * past that, RequestLimitExceeded (503), which aws-cli and the SDKs retry with backoff. It answers before
 * the request reaches the control plane. Memory is bounded: a bucket that has refilled is the same as no
 * bucket, so idle keys are swept out, and at most `maxKeys` keys are tracked at once.
 */
export class KeyThrottle {
  private readonly buckets = new Map<string, Bucket>();
  private readonly ratePerMs: number;
  private readonly burst: number;
  private readonly now: () => number;
  private readonly maxKeys: number;
  /** Time for an empty bucket to refill: a bucket untouched that long is full, i.e. forgettable. */
  private readonly refillMs: number;
  private nextSweep: number;

  constructor(options: { ratePerSecond: number; burst: number; now?: () => number; maxKeys?: number }) {
    if (!(options.ratePerSecond > 0) || !(options.burst >= 1)) {
      throw new Error(
        `KeyThrottle needs ratePerSecond > 0 and burst >= 1 (got ${options.ratePerSecond}, ${options.burst})`,
      );
    }
    this.ratePerMs = options.ratePerSecond / 1000;
    this.burst = options.burst;
    this.now = options.now ?? Date.now;
    this.maxKeys = options.maxKeys ?? 100_000;
    this.refillMs = this.burst / this.ratePerMs;
    this.nextSweep = this.now() + this.refillMs;
  }

  /** Takes one request from the key's bucket; throws Ec2Error('RequestLimitExceeded', …, 503) when empty. */
  take(accessKeyId: string): void {
    const now = this.now();
    if (now >= this.nextSweep) this.sweep(now);
    let bucket = this.buckets.get(accessKeyId);
    if (!bucket) {
      // Full of busy keys (the periodic sweep keeps idle ones out): forget the longest-tracked one, which
      // starts over with a full bucket. Evicting one, not sweeping all, keeps each take O(1).
      if (this.buckets.size >= this.maxKeys) this.buckets.delete(this.buckets.keys().next().value as string);
      bucket = { tokens: this.burst, at: now };
      this.buckets.set(accessKeyId, bucket);
    } else {
      bucket.tokens = Math.min(this.burst, bucket.tokens + (now - bucket.at) * this.ratePerMs);
      bucket.at = now;
    }
    if (bucket.tokens < 1) {
      throw new Ec2Error(
        'RequestLimitExceeded',
        `Request limit exceeded: access key ${accessKeyId} may send ${this.burst} requests at once and ` +
          `${this.ratePerMs * 1000} per second; retry with backoff.`,
        503,
      );
    }
    bucket.tokens -= 1;
  }

  /** Keys currently tracked (for tests and metrics). */
  get trackedKeys(): number {
    return this.buckets.size;
  }

  private sweep(now: number): void {
    for (const [key, bucket] of this.buckets) {
      if (bucket.tokens + (now - bucket.at) * this.ratePerMs >= this.burst) this.buckets.delete(key);
    }
    this.nextSweep = now + this.refillMs;
  }
}
