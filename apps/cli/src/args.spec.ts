import { InvalidArgumentError } from 'commander';
import {
  bandwidthArg,
  collectFilter,
  collectKeyValues,
  collectList,
  intInRange,
  looksLikeId,
  parseKeyValue,
} from './args';

describe('key=value arguments', () => {
  it('splits at the first equals sign so values may contain one', () => {
    expect(parseKeyValue('cmd=a=b')).toEqual(['cmd', 'a=b']);
  });

  it('accepts an empty value', () => {
    expect(parseKeyValue('tier=')).toEqual(['tier', '']);
  });

  it.each(['tier', '=web', ' =web', ''])('refuses %j as a usage error', (raw) => {
    expect(() => parseKeyValue(raw)).toThrow(InvalidArgumentError);
  });

  it('collects repeated flags into one map', () => {
    const first = collectKeyValues('tier=web', undefined);
    expect(collectKeyValues('zone=a', first)).toEqual({ tier: 'web', zone: 'a' });
  });

  it('refuses the same key twice instead of silently keeping one', () => {
    expect(() => collectKeyValues('tier=db', { tier: 'web' })).toThrow('key "tier" given twice');
  });

  it('does not change the map it was given', () => {
    const first = { tier: 'web' };
    collectKeyValues('zone=a', first);
    expect(first).toEqual({ tier: 'web' });
  });
});

describe('other argument parsers', () => {
  it('parses integers within bounds', () => {
    expect(intInRange(1, 10)('7')).toBe(7);
  });

  it.each(['0', '11', '1.5', 'x', ''])('refuses %j outside 1..10 or not an integer', (raw) => {
    expect(() => intInRange(1, 10)(raw)).toThrow(InvalidArgumentError);
  });

  it('collects comma-separated and repeated lists', () => {
    expect(collectList('host', collectList('vm, operation', undefined))).toEqual(['vm', 'operation', 'host']);
  });

  it('joins repeated filter terms with commas', () => {
    expect(collectFilter('label.tier=web', collectFilter('power_state=RUNNING', undefined))).toBe(
      'power_state=RUNNING,label.tier=web',
    );
  });

  it('tells ids from names', () => {
    expect(looksLikeId('0b6f3a9e-2c1d-4e5f-8a7b-9c0d1e2f3a4b')).toBe(true);
    expect(looksLikeId('web-1')).toBe(false);
  });
});

describe('bandwidth arguments', () => {
  it.each<[string, number]>([
    ['1G/s', 1024 ** 3],
    ['500M/s', 500 * 1024 ** 2],
    ['1G', 1024 ** 3],
    ['2048', 2048],
  ])('reads %j as %d bytes per second', (raw, bytes) => {
    expect(bandwidthArg(raw)).toBe(bytes);
  });

  it.each(['fast', '1G/min', '0/s', '-1G/s'])('refuses %j, saying what a bandwidth looks like', (raw) => {
    expect(() => bandwidthArg(raw)).toThrow(/expected a bandwidth such as 1G\/s or 500M\/s/);
  });
});
