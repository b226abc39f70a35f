import { InvalidArgumentError } from 'commander';
import { collectFilter, collectKeyValues, collectList, intInRange, looksLikeId, parseKeyValue } from './args';

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
