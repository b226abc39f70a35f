import { Ec2Error } from './errors';

/**
 * Server-side pages over a list sorted by a stable key: NextToken carries the last key returned, so items
 * added or removed between pages never shift the rest. An empty or absent nextToken ends the list. A token
 * may also name a walk (PageWalks): the listing its first page was cut from, kept for the pages after it.
 */

export interface PageToken {
  after: string;
  walk?: string;
}

export function encodeToken(lastKey: string, walk?: string): string {
  return Buffer.from(JSON.stringify(walk ? { after: lastKey, walk } : { after: lastKey })).toString(
    'base64url',
  );
}

export function decodeToken(token: string): PageToken {
  try {
    const parsed = JSON.parse(Buffer.from(token, 'base64url').toString('utf8')) as {
      after?: unknown;
      walk?: unknown;
    };
    if (typeof parsed.after === 'string')
      return typeof parsed.walk === 'string'
        ? { after: parsed.after, walk: parsed.walk }
        : { after: parsed.after };
  } catch {
    // fall through: not one of ours
  }
  throw new Ec2Error(
    'InvalidParameterValue',
    `Value (${token.slice(0, 100)}) for parameter NextToken is invalid. Use the nextToken of the previous page.`,
  );
}

/**
 * One page of `sorted` (ascending by keyOf) after the token's key; nextToken only when more remain. `walk`
 * is called only then, for the id of the walk the next token names (none: the token names none).
 */
export function pageOf<T>(
  sorted: readonly T[],
  keyOf: (item: T) => string,
  page: { maxResults: number | undefined; nextToken: string | undefined },
  walk?: () => string | undefined,
): { items: T[]; nextToken: string | undefined } {
  let start = 0;
  if (page.nextToken) {
    const { after } = decodeToken(page.nextToken);
    start = sorted.findIndex((item) => keyOf(item) > after);
    if (start < 0) start = sorted.length;
  }
  if (page.maxResults === undefined) return { items: sorted.slice(start), nextToken: undefined };
  const items = sorted.slice(start, start + page.maxResults);
  const more = start + page.maxResults < sorted.length;
  return { items, nextToken: more ? encodeToken(keyOf(items[items.length - 1]), walk?.()) : undefined };
}
