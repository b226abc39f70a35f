import { DomainError } from './errors';
import { encodePageToken, parseFilter, parsePage, validateLabels, validateName } from './validation';

const fieldOf = (fn: () => unknown): string | undefined => {
  try {
    fn();
  } catch (e) {
    return (e as DomainError).fields.field;
  }
  return undefined;
};

describe('validation', () => {
  it('accepts ordinary names', () => {
    expect(validateName('name', 'web-01.prod_a')).toBe('web-01.prod_a');
  });

  it.each([
    ['empty', ''],
    ['too long', 'a'.repeat(64)],
    ['starting with a dash', '-web'],
    ['with a slash', 'a/b'],
    ['with a space', 'a b'],
  ])('refuses a %s name naming the field', (_case, value) => {
    expect(fieldOf(() => validateName('name', value))).toBe('name');
  });

  it('refuses a label key with upper case naming the label', () => {
    expect(fieldOf(() => validateLabels('labels', { Tier: 'web' }))).toBe('labels.Tier');
  });

  it('parses filters into terms and refuses unknown fields', () => {
    expect(parseFilter('power_state=RUNNING, label.tier=web', ['power_state', 'label.*'])).toEqual([
      { field: 'power_state', value: 'RUNNING' },
      { field: 'label.tier', value: 'web' },
    ]);
    expect(() => parseFilter('colour=red', ['name'])).toThrow('unknown field "colour"; filter on: name');
  });

  it('round-trips page tokens and refuses one used with another filter', () => {
    const token = encodePageToken(200, 'name=a');
    expect(parsePage({ pageSize: 10, pageToken: token, filter: 'name=a' }, ['name']).offset).toBe(200);
    expect(fieldOf(() => parsePage({ pageToken: token, filter: 'name=b' }, ['name']))).toBe(
      'page.page_token',
    );
    expect(fieldOf(() => parsePage({ pageToken: 'garbage' }, ['name']))).toBe('page.page_token');
  });

  it('refuses absurd page sizes', () => {
    expect(fieldOf(() => parsePage({ pageSize: 100000 }, []))).toBe('page.page_size');
    expect(fieldOf(() => parsePage({ pageSize: -1 }, []))).toBe('page.page_size');
  });
});
