import { compileFilters, tagFilterValues, wildcardPattern } from './filters';

interface Item {
  id: string;
  state: string;
  tags: Array<{ key: string; value: string }>;
}

const fields: Record<string, (i: Item) => string[]> = {
  'instance-id': (i) => [i.id],
  'instance-state-name': (i) => [i.state],
};
const known = (n: string) => Object.hasOwn(fields, n) || n.startsWith('tag') || false;
const reader = (i: Item, n: string) => (Object.hasOwn(fields, n) ? fields[n](i) : tagFilterValues(i.tags, n));

const a: Item = { id: 'i-a', state: 'running', tags: [{ key: 'env', value: 'test' }] };
const b: Item = {
  id: 'i-b',
  state: 'pending',
  tags: [
    { key: 'env', value: 'prod' },
    { key: 'Name', value: 'web.1' },
  ],
};
const c: Item = { id: 'i-c', state: 'stopped', tags: [] };

const select = (filters: Array<{ name: string; values: string[] }>) =>
  [a, b, c].filter(compileFilters(filters, known, reader)).map((i) => i.id);

describe('EC2 filters', () => {
  it('matches * and ? wildcards over the whole value', () => {
    expect(wildcardPattern('web.*').test('web.1')).toBe(true);
    expect(wildcardPattern('web.?').test('web.12')).toBe(false);
    expect(wildcardPattern('web').test('web.1')).toBe(false);
  });

  it('takes a backslash-escaped wildcard literally and regex characters as text', () => {
    expect(wildcardPattern('a\\*').test('a*')).toBe(true);
    expect(wildcardPattern('a\\*').test('ab')).toBe(false);
    expect(wildcardPattern('web.1').test('webx1')).toBe(false);
  });

  it('ORs the values of one filter and ANDs the filters', () => {
    expect(select([{ name: 'instance-state-name', values: ['running', 'pending'] }])).toEqual(['i-a', 'i-b']);
    expect(
      select([
        { name: 'instance-state-name', values: ['running', 'pending'] },
        { name: 'tag:env', values: ['prod'] },
      ]),
    ).toEqual(['i-b']);
  });

  it('filters by tag:<key>, tag-key and tag-value', () => {
    expect(select([{ name: 'tag:Name', values: ['web*'] }])).toEqual(['i-b']);
    expect(select([{ name: 'tag-key', values: ['env'] }])).toEqual(['i-a', 'i-b']);
    expect(select([{ name: 'tag-value', values: ['te?t'] }])).toEqual(['i-a']);
  });

  it('answers InvalidParameterValue naming an unknown filter, even with nothing to filter', () => {
    expect(() => compileFilters([{ name: 'flavour', values: ['x'] }], known, reader)).toThrow(
      expect.objectContaining({ code: 'InvalidParameterValue', message: "The filter 'flavour' is invalid" }),
    );
  });

  it('matches nothing for a filter without values', () => {
    expect(select([{ name: 'instance-id', values: [] }])).toEqual([]);
  });
});
