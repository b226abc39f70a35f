import { wireDate } from './wire-date';

describe('wireDate', () => {
  it('reads timestamps as grpc-js hands them over: {seconds, nanos}, seconds a number or a string', () => {
    expect(wireDate({ seconds: 1, nanos: 500_000_000 })?.getTime()).toBe(1500);
    expect(wireDate({ seconds: '1764000000', nanos: 999_999_999 })?.toISOString()).toBe(
      '2025-11-24T16:00:00.999Z',
    );
    expect(wireDate({ seconds: 2 })?.getTime()).toBe(2000);
  });

  it('passes Dates through and gives undefined for anything else', () => {
    const d = new Date('2025-01-31T12:00:03Z');
    expect(wireDate(d)).toBe(d);
    expect(wireDate(undefined)).toBeUndefined();
    expect(wireDate(null)).toBeUndefined();
    expect(wireDate('2025-01-31T12:00:03Z')).toBeUndefined();
  });
});
