import { formatBytes, gibibytes, parseSize, share } from './size';

const GiB = 1024 ** 3;

describe('parseSize', () => {
  it.each([
    ['10G', 10 * GiB],
    ['512M', 512 * 1024 ** 2],
    ['1T', 1024 * GiB],
    ['1.5G', 1.5 * GiB],
    ['64KiB', 64 * 1024],
    ['2GB', 2 * GiB],
    ['2g', 2 * GiB],
    ['3 M', 3 * 1024 ** 2],
    ['1048576', 1048576],
    ['4096B', 4096],
    [' 1P ', 1024 ** 5],
  ])('reads %j as %d bytes (suffixes are powers of 1024)', (raw, bytes) => {
    expect(parseSize(raw)).toEqual({ bytes });
  });

  it('rounds a fraction of a unit up to a whole byte', () => {
    expect(parseSize('0.001K')).toEqual({ bytes: 2 });
  });

  it.each(['', 'G', '10X', '-1G', '1e3', '10 GiBs', 'ten', '1,5G', '0', '0G', '1.5', '1.5B'])(
    'refuses %j with a message that says what it expects',
    (raw) => {
      const r = parseSize(raw);
      expect('error' in r && r.error).toBeTruthy();
    },
  );

  it('refuses a size beyond what a number holds exactly', () => {
    expect(parseSize('9999999P')).toEqual({ error: '"9999999P" is too large' });
  });
});

describe('formatBytes', () => {
  it.each([
    [0, '0 B'],
    [1023, '1023 B'],
    [1536, '1.5 KiB'],
    [10 * GiB, '10 GiB'],
    [1.25 * GiB, '1.3 GiB'],
    [1024 * GiB - 1, '1 TiB'],
    [3 * 1024 ** 4, '3 TiB'],
  ])('shows %d bytes as %j', (bytes, text) => {
    expect(formatBytes(bytes)).toBe(text);
  });

  it('shows nothing for a missing value', () => {
    expect(formatBytes(undefined)).toBe('');
  });
});

describe('gibibytes and share', () => {
  it('shows capacities in GiB with one decimal below 100 GiB', () => {
    expect(gibibytes(10 * GiB)).toBe('10.0 GiB');
    expect(gibibytes(512 * 1024 ** 2)).toBe('0.50 GiB');
    expect(gibibytes(16 * 1024 ** 2)).toBe('0.02 GiB');
    expect(gibibytes(0)).toBe('0.0 GiB');
    expect(gibibytes(250 * GiB)).toBe('250 GiB');
  });

  it('shows a part of a whole with its percentage', () => {
    expect(share(25 * GiB, 100 * GiB)).toBe('25 GiB of 100 GiB (25%)');
    expect(share(5 * GiB, 0)).toBe('5 GiB');
  });
});
