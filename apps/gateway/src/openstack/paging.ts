import { OpenStackError } from './errors';

/**
 * limit/marker pagination as Nova, Glance and Neutron do it: `marker` is the id of the last item of the
 * previous page; a page that is full links to the next one (a last page may thus link to an empty one, as
 * in Nova).
 */
export function parseLimit(raw: string | null, o: { max: number; fallback: number }): number {
  if (raw === null || raw === '') return o.fallback;
  if (!/^\d+$/.test(raw))
    throw new OpenStackError(
      400,
      `Invalid input for query parameters limit: '${raw}' is not a non-negative integer.`,
    );
  return Math.min(Number(raw), o.max);
}

export function pageAfter<T>(
  items: T[],
  idOf: (item: T) => string,
  o: { limit: number; marker: string | null },
): { page: T[]; nextMarker?: string } {
  let start = 0;
  if (o.marker) {
    const at = items.findIndex((i) => idOf(i) === o.marker);
    if (at < 0) throw new OpenStackError(400, `marker [${o.marker}] not found`);
    start = at + 1;
  }
  const page = items.slice(start, start + o.limit);
  const full = o.limit > 0 && page.length === o.limit;
  return { page, nextMarker: full && page.length ? idOf(page[page.length - 1]) : undefined };
}

/** The request's URL with limit and marker replaced (other filters kept). */
export function nextHref(base: string, query: URLSearchParams, limit: number, marker: string): string {
  const q = new URLSearchParams(query);
  q.set('limit', String(limit));
  q.set('marker', marker);
  return `${base}?${q.toString()}`;
}

/** Nova's name filter: a regular expression searched in the name (as the database's REGEXP does). */
export function nameMatcher(pattern: string | null): (name: string) => boolean {
  if (pattern === null) return () => true;
  if (pattern.length > 255)
    throw new OpenStackError(400, 'Invalid input for query parameters name: at most 255 characters.');
  let re: RegExp;
  try {
    re = new RegExp(pattern);
  } catch (e) {
    throw new OpenStackError(400, `Invalid input for query parameters name: ${(e as Error).message}`);
  }
  return (name) => re.test(name);
}
