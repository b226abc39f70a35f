import { decodeToken, encodeToken, pageOf } from './pagination';

const keys = ['a', 'b', 'c', 'd', 'e', 'f', 'g'];
const id = (s: string) => s;

describe('EC2 pagination', () => {
  it('walks every item once in pages of MaxResults and ends without a nextToken', () => {
    const seen: string[] = [];
    let nextToken: string | undefined;
    let pages = 0;
    do {
      const page = pageOf(keys, id, { maxResults: 3, nextToken });
      seen.push(...page.items);
      nextToken = page.nextToken;
      pages++;
    } while (nextToken);
    expect([seen, pages]).toEqual([keys, 3]);
  });

  it('gives no nextToken when the last page is exactly full', () => {
    expect(pageOf(keys.slice(0, 5), id, { maxResults: 5, nextToken: undefined }).nextToken).toBeUndefined();
  });

  it('continues after the last key even when it has been removed since', () => {
    const first = pageOf(keys, id, { maxResults: 2, nextToken: undefined });
    const rest = pageOf(
      keys.filter((k) => k !== 'b'),
      id,
      { maxResults: 2, nextToken: first.nextToken },
    );
    expect(rest.items).toEqual(['c', 'd']);
  });

  it('answers InvalidParameterValue naming NextToken for a token it did not issue', () => {
    expect(() => pageOf(keys, id, { maxResults: 2, nextToken: 'garbage!' })).toThrow(
      expect.objectContaining({
        code: 'InvalidParameterValue',
        message: expect.stringContaining('NextToken'),
      }),
    );
  });

  it('names the walk in the next token, asking for its id only when a next page exists', () => {
    const walk = jest.fn(() => 'w1');
    const first = pageOf(keys, id, { maxResults: 3, nextToken: undefined }, walk);
    expect(decodeToken(first.nextToken!)).toEqual({ after: 'c', walk: 'w1' });
    const last = pageOf(keys, id, { maxResults: 4, nextToken: first.nextToken }, walk);
    expect([last.items, last.nextToken, walk.mock.calls.length]).toEqual([
      ['d', 'e', 'f', 'g'],
      undefined,
      1,
    ]);
  });

  it('reads tokens without a walk, as earlier gateways wrote them', () => {
    expect(decodeToken(encodeToken('b'))).toEqual({ after: 'b' });
    expect(pageOf(keys, id, { maxResults: 2, nextToken: encodeToken('b') }).items).toEqual(['c', 'd']);
  });
});
