import { TokenBucket } from './token-bucket';

describe('TokenBucket', () => {
  let t = 0;
  const clock = () => t;
  beforeEach(() => (t = 1_000));

  it('gives burst tokens at once, then refills at its rate and never above burst', () => {
    const bucket = new TokenBucket(3, 10, clock);
    expect([bucket.take(), bucket.take(), bucket.take(), bucket.take()]).toEqual([true, true, true, false]);
    t += 99; // 0.99 of a token
    expect(bucket.take()).toBe(false);
    t += 11; // 0.11 more: 1.1 tokens, one whole
    expect(bucket.take()).toBe(true);
    expect(bucket.take()).toBe(false);
    t += 60_000;
    expect(bucket.isFull()).toBe(true);
    expect([bucket.take(), bucket.take(), bucket.take(), bucket.take()]).toEqual([true, true, true, false]);
  });

  it('says when it has refilled, and how long that takes from empty', () => {
    const bucket = new TokenBucket(2, 4, clock);
    expect(bucket.refillMs).toBe(500);
    bucket.take();
    bucket.take();
    expect(bucket.isFull(t + 499)).toBe(false);
    expect(bucket.isFull(t + 500)).toBe(true);
  });

  it('refuses a rate or a burst that would refuse everything', () => {
    expect(() => new TokenBucket(5, 0)).toThrow(/ratePerSecond > 0.*got 0, 5/);
    expect(() => new TokenBucket(0, 5)).toThrow(/burst >= 1.*got 5, 0/);
  });
});
