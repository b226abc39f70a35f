import { TokenBucket } from '@flotilla/platform';
import { Ec2Error } from '../errors';

/**
 * Per-access-key token buckets: each key may send `burst` requests at once and `ratePerSecond` sustained;
 * past that, RequestLimitExceeded (503), which aws-cli and the SDKs retry with backoff. It answers before
 * the request reaches the control plane. Memory is bounded: a bucket that has refilled is the same as no
 * bucket, so idle keys are swept out, and at most `maxKeys` keys are tracked at once.
 */
export class KeyThrottle {
  private readonly buckets = new Map<string, TokenBucket>();
  private readonly ratePerSecond: number;
  private readonly burst: number;
  private readonly now: () => number;
  private readonly maxKeys: number;
  /** Time for an empty bucket to refill: a bucket untouched that long is full, i.e. forgettable. */
  private readonly refillMs: number;
  private nextSweep: number;

  constructor(options: { ratePerSecond: number; burst: number; now?: () => number; maxKeys?: number }) {
    this.ratePerSecond = options.ratePerSecond;
    this.burst = options.burst;
    this.now = options.now ?? Date.now;
    this.maxKeys = options.maxKeys ?? 100_000;
    // Checks the figures once (it throws on a rate ≤ 0 or a burst < 1) and gives the refill time.
    this.refillMs = this.bucket().refillMs;
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
      bucket = this.bucket();
      this.buckets.set(accessKeyId, bucket);
    }
    if (!bucket.take()) {
      throw new Ec2Error(
        'RequestLimitExceeded',
        `Request limit exceeded: access key ${accessKeyId} may send ${this.burst} requests at once and ` +
          `${this.ratePerSecond} per second; retry with backoff.`,
        503,
      );
    }
  }

  /** Keys currently tracked (for tests and metrics). */
  get trackedKeys(): number {
    return this.buckets.size;
  }

  private bucket(): TokenBucket {
    return new TokenBucket(this.burst, this.ratePerSecond, this.now);
  }

  private sweep(now: number): void {
    for (const [key, bucket] of this.buckets) if (bucket.isFull(now)) this.buckets.delete(key);
    this.nextSweep = now + this.refillMs;
  }
}
