import { age, enumValue, labels, mebibytes, timestamp, toDate, word } from './format';

describe('formatting for people', () => {
  it('shows power states as lower-case words', () => {
    expect(word('POWER_STATE_RUNNING', 'POWER_STATE_')).toBe('running');
    expect(word('POWER_STATE_UNSPECIFIED', 'POWER_STATE_')).toBe('');
  });

  it('shows roles as the words the flags take', () => {
    expect(word('ROLE_VM_POWER_ADMIN', 'ROLE_')).toBe('vm-power-admin');
    expect(enumValue('vm-power-admin', 'ROLE_', ['ROLE_POOL_ADMIN', 'ROLE_VM_POWER_ADMIN'])).toBe(
      'ROLE_VM_POWER_ADMIN',
    );
    expect(enumValue('root', 'ROLE_', ['ROLE_POOL_ADMIN'])).toBeUndefined();
  });

  it('reads timestamps sent as Dates or as seconds and nanos', () => {
    expect(toDate({ seconds: 1, nanos: 500_000_000 })?.getTime()).toBe(1500);
    expect(timestamp(new Date('2025-01-31T12:00:03.456Z'))).toBe('2025-01-31 12:00:03Z');
    expect(timestamp(undefined)).toBe('');
  });

  it('shows ages in the largest whole unit', () => {
    const now = Date.parse('2025-01-31T12:00:00Z');
    expect(age(new Date(now - 45_000), now)).toBe('45s');
    expect(age(new Date(now - 3 * 3600_000), now)).toBe('3h');
    expect(age(new Date(now - 5 * 86400_000), now)).toBe('5d');
  });

  it('shows memory in MiB or GiB', () => {
    expect(mebibytes(512)).toBe('512 MiB');
    expect(mebibytes(2048)).toBe('2 GiB');
    expect(mebibytes(1536)).toBe('1.5 GiB');
  });

  it('shows labels as the flags take them', () => {
    expect(labels({ tier: 'web', zone: 'a' })).toBe('tier=web,zone=a');
  });
});
