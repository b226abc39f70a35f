import {
  amzDateMs,
  canonicalHeaderValue,
  canonicalQuery,
  canonicalUri,
  isoTimestampMs,
  queryPairs,
  rfc3986,
} from './canonical';

// Pure functions; nothing is faked.

describe('rfc3986', () => {
  it('keeps only A-Za-z0-9-_.~ and percent-encodes the UTF-8 bytes of everything else', () => {
    expect(rfc3986("aZ09-_.~ !'()*/:+=&é")).toBe('aZ09-_.~%20%21%27%28%29%2A%2F%3A%2B%3D%26%C3%A9');
  });
});

describe('queryPairs', () => {
  it('decodes keys and values, "+" as a space, keeping duplicates and order', () => {
    expect(queryPairs('b=2&a=x+y%2B&a=1&flag&&c=')).toEqual([
      { key: 'b', value: '2' },
      { key: 'a', value: 'x y+' },
      { key: 'a', value: '1' },
      { key: 'flag', value: '' },
      { key: 'c', value: '' },
    ]);
  });

  it('keeps a malformed percent-sequence as written instead of throwing', () => {
    expect(queryPairs('a=%E0%A4%A&b=%zz')).toEqual([
      { key: 'a', value: '%E0%A4%A' },
      { key: 'b', value: '%zz' },
    ]);
  });
});

describe('canonicalQuery', () => {
  it('re-encodes and sorts by key, then by value', () => {
    expect(canonicalQuery(queryPairs('b=2&a=z&a=y&A=1&a.b=%7e'))).toBe('A=1&a=y&a=z&a.b=~&b=2');
  });

  it('leaves out the excluded key (the presigned signature)', () => {
    expect(canonicalQuery(queryPairs('X-Amz-Signature=ab&Action=X'), 'X-Amz-Signature')).toBe('Action=X');
  });

  it('is empty for no parameters', () => {
    expect(canonicalQuery([])).toBe('');
  });
});

describe('canonicalUri', () => {
  it.each([
    ['', '/'],
    ['/', '/'],
    ['/services/compute', '/services/compute'],
    ['/services/compute/', '/services/compute/'],
    ['//services///compute//', '/services/compute/'],
    ['/services/./compute/.', '/services/compute'],
    ['/services/x/../compute/', '/services/compute/'],
    ['/../..', '/'],
    ['/a%20b/c d', '/a%2520b/c%20d'],
  ])('turns %j into %j', (raw, canonical) => {
    expect(canonicalUri(raw)).toBe(canonical);
  });
});

describe('canonicalHeaderValue', () => {
  it('trims and collapses white space, joins repeated headers with ","', () => {
    expect(canonicalHeaderValue('  a   b\tc  ')).toBe('a b c');
    expect(canonicalHeaderValue(['x', 'y'])).toBe('x,y');
    expect(canonicalHeaderValue(undefined)).toBe('');
  });
});

describe('timestamps', () => {
  it('reads X-Amz-Date in the basic format only, and only real dates', () => {
    expect(amzDateMs('20150830T123600Z')).toBe(Date.UTC(2015, 7, 30, 12, 36, 0));
    expect(amzDateMs('2015-08-30T12:36:00Z')).toBeUndefined();
    expect(amzDateMs('20150231T000000Z')).toBeUndefined();
    expect(amzDateMs('20150830T240000Z')).toBeUndefined();
    expect(amzDateMs('20150830T126000Z')).toBeUndefined();
    // The same value twice (the kept answer) reads the same; an invalid one after a valid one is still invalid.
    expect(amzDateMs('20150830T123600Z')).toBe(Date.UTC(2015, 7, 30, 12, 36, 0));
    expect(amzDateMs('20150830T123600Z')).toBe(Date.UTC(2015, 7, 30, 12, 36, 0));
    expect(amzDateMs('20150830T123660Z')).toBeUndefined();
  });

  it('reads a SigV2 Timestamp without a zone as UTC', () => {
    expect(isoTimestampMs('2011-10-03T15:19:30')).toBe(Date.UTC(2011, 9, 3, 15, 19, 30));
    expect(isoTimestampMs('2011-10-03T15:19:30.250Z')).toBe(Date.UTC(2011, 9, 3, 15, 19, 30, 250));
    expect(isoTimestampMs('2011-10-03T17:19:30+02:00')).toBe(Date.UTC(2011, 9, 3, 15, 19, 30));
    expect(isoTimestampMs('Mon, 03 Oct 2011 15:19:30 GMT')).toBeUndefined();
  });
});
