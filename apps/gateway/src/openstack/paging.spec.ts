import { OpenStackError } from './errors';
import { nameMatcher, nextHref, pageAfter, parseLimit } from './paging';

// Pure: limit/marker pages, next links and Nova's regex name filter.

const items = ['a', 'b', 'c', 'd', 'e'].map((id) => ({ id }));
const idOf = (i: { id: string }) => i.id;

describe('OpenStack pagination', () => {
  it('cuts a page after the marker and names the last id as the next marker when the page is full', () => {
    expect(pageAfter(items, idOf, { limit: 2, marker: 'b' })).toEqual({
      page: [{ id: 'c' }, { id: 'd' }],
      nextMarker: 'd',
    });
  });

  it('gives no next marker on a page that is not full', () => {
    expect(pageAfter(items, idOf, { limit: 10, marker: null })).toEqual({ page: items });
  });

  it('answers 400 for a marker that is not in the list', () => {
    expect(() => pageAfter(items, idOf, { limit: 2, marker: 'zz' })).toThrow(
      new OpenStackError(400, 'marker [zz] not found'),
    );
  });

  it('takes the fallback without a limit, caps it at the maximum and refuses a non-number', () => {
    expect(parseLimit(null, { max: 1000, fallback: 25 })).toBe(25);
    expect(parseLimit('5000', { max: 1000, fallback: 25 })).toBe(1000);
    expect(() => parseLimit('-1', { max: 1000, fallback: 25 })).toThrow(/limit/);
  });

  it('keeps the other query parameters in the next link', () => {
    expect(
      nextHref('http://h/compute/v2.1/servers/detail', new URLSearchParams('name=web&limit=2'), 2, 'x'),
    ).toBe('http://h/compute/v2.1/servers/detail?name=web&limit=2&marker=x');
  });
});

describe("Nova's name filter", () => {
  it('searches the name with a regular expression, as Nova does', () => {
    const match = nameMatcher('^web-[0-9]$');
    expect(['web-1', 'web-12', 'my-web-1'].filter(match)).toEqual(['web-1']);
    expect(['web-1', 'my-web-1'].filter(nameMatcher('web'))).toEqual(['web-1', 'my-web-1']);
  });

  it('matches everything without a filter', () => {
    expect(nameMatcher(null)('anything')).toBe(true);
  });

  it('answers 400 for an invalid expression', () => {
    expect(() => nameMatcher('web(')).toThrow(/Invalid input for query parameters name/);
  });
});
