import { Ec2Error } from '../errors';
import { KeyThrottle } from './throttle';

// Real: the throttle. Fake: its clock (injected), so refills are exact.

function limited(throttle: KeyThrottle, key: string): Ec2Error | undefined {
  try {
    throttle.take(key);
    return undefined;
  } catch (e) {
    if (e instanceof Ec2Error) return e;
    throw e;
  }
}

describe('KeyThrottle', () => {
  let now: number;
  const clock = () => now;
  beforeEach(() => (now = 1_000_000));

  it('lets a burst through, then answers RequestLimitExceeded (503) naming the key', () => {
    const throttle = new KeyThrottle({ ratePerSecond: 10, burst: 5, now: clock });
    for (let i = 0; i < 5; i++) expect(limited(throttle, 'AKID1')).toBeUndefined();
    const refused = limited(throttle, 'AKID1');
    expect(refused).toMatchObject({ code: 'RequestLimitExceeded', status: 503 });
    expect(refused!.message).toContain('AKID1');
  });

  it('keeps each key in its own bucket', () => {
    const throttle = new KeyThrottle({ ratePerSecond: 1, burst: 1, now: clock });
    throttle.take('AKID1');
    expect(limited(throttle, 'AKID1')).toBeDefined();
    expect(limited(throttle, 'AKID2')).toBeUndefined();
  });

  it('refills at the configured rate, never beyond the burst', () => {
    const throttle = new KeyThrottle({ ratePerSecond: 10, burst: 3, now: clock });
    for (let i = 0; i < 3; i++) throttle.take('AKID1');
    expect(limited(throttle, 'AKID1')).toBeDefined();
    now += 99;
    expect(limited(throttle, 'AKID1')).toBeDefined();
    now += 1; // 100 ms at 10/s: one token
    expect(limited(throttle, 'AKID1')).toBeUndefined();
    expect(limited(throttle, 'AKID1')).toBeDefined();
    now += 60_000; // a minute idle refills to the burst, not to 600
    for (let i = 0; i < 3; i++) expect(limited(throttle, 'AKID1')).toBeUndefined();
    expect(limited(throttle, 'AKID1')).toBeDefined();
  });

  it('forgets keys that have been idle long enough to refill', () => {
    const throttle = new KeyThrottle({ ratePerSecond: 10, burst: 10, now: clock });
    for (let i = 0; i < 1000; i++) throttle.take(`AKID${i}`);
    expect(throttle.trackedKeys).toBe(1000);
    now += 1000; // a full refill (10 tokens at 10/s)
    throttle.take('AKID-new');
    expect(throttle.trackedKeys).toBe(1);
  });

  it('tracks at most maxKeys keys', () => {
    const throttle = new KeyThrottle({ ratePerSecond: 1, burst: 5, now: clock, maxKeys: 100 });
    for (let i = 0; i < 1000; i++) throttle.take(`AKID${i}`);
    expect(throttle.trackedKeys).toBe(100);
  });

  it('refuses a configuration that would throttle everything or nothing', () => {
    expect(() => new KeyThrottle({ ratePerSecond: 0, burst: 5 })).toThrow(/ratePerSecond/);
    expect(() => new KeyThrottle({ ratePerSecond: 5, burst: 0 })).toThrow(/burst/);
  });
});
