/**
 * The pure pieces of AWS request canonicalisation shared by SigV4 and SigV2: RFC 3986 encoding, the raw query
 * decoded into pairs, the SigV4 canonical URI and header values, and AWS timestamps. No I/O, no secrets.
 */

/** RFC 3986 percent-encoding: unreserved A-Za-z0-9-_.~ kept, everything else %XX of its UTF-8 bytes. */
export function rfc3986(value: string): string {
  // encodeURIComponent keeps !'()* too, which RFC 3986 reserves; the fast path skips the regex when absent.
  const encoded = encodeURIComponent(value);
  return /[!'()*]/.test(encoded) ? encoded.replace(/[!'()*]/g, hexEscape) : encoded;
}

const hexEscape = (c: string) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`;

/**
 * Encodes a string that may hold lone surrogates (from a malformed request) without throwing: they become
 * U+FFFD, so the canonical form differs from what any signer produced and the signature simply mismatches.
 */
function safeRfc3986(value: string): string {
  try {
    return rfc3986(value);
  } catch {
    return rfc3986(value.replace(loneSurrogate, '\uFFFD'));
  }
}

const loneSurrogate = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

/**
 * Decodes one query component as form decoding does ("+" is a space, as URLSearchParams and aws4 read it).
 * A malformed %-sequence is kept as written, so the request cannot verify but nothing throws.
 */
export function decodeComponent(raw: string): string {
  const spaced = raw.includes('+') ? raw.replace(/\+/g, ' ') : raw;
  if (!spaced.includes('%')) return spaced;
  try {
    return decodeURIComponent(spaced);
  } catch {
    return spaced;
  }
}

export interface QueryPair {
  key: string;
  value: string;
}

/** The raw query split into decoded pairs, in request order (empty pieces, as in "a=1&&b=2", skipped). */
export function queryPairs(rawQuery: string): QueryPair[] {
  const pairs: QueryPair[] = [];
  if (!rawQuery) return pairs;
  for (const piece of rawQuery.split('&')) {
    if (!piece) continue;
    const eq = piece.indexOf('=');
    pairs.push(
      eq < 0
        ? { key: decodeComponent(piece), value: '' }
        : { key: decodeComponent(piece.slice(0, eq)), value: decodeComponent(piece.slice(eq + 1)) },
    );
  }
  return pairs;
}

/**
 * The canonical query of SigV4 (and the sorted query of SigV2): each pair RFC 3986-encoded, sorted by
 * encoded key then encoded value, joined with "&". `exclude` names a key left out (the signature itself).
 */
export function canonicalQuery(pairs: readonly QueryPair[], exclude?: string): string {
  const encoded: Array<[string, string]> = [];
  for (const { key, value } of pairs) {
    if (key === exclude) continue;
    encoded.push([safeRfc3986(key), safeRfc3986(value)]);
  }
  if (encoded.length === 0) return '';
  encoded.sort((a, b) => compare(a[0], b[0]) || compare(a[1], b[1]));
  let out = `${encoded[0][0]}=${encoded[0][1]}`;
  for (let i = 1; i < encoded.length; i++) out += `&${encoded[i][0]}=${encoded[i][1]}`;
  return out;
}

// Encoded strings are ASCII, so code-unit order is the byte order AWS sorts by.
const compare = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/**
 * The SigV4 canonical URI for every service but S3, as botocore and @smithy/signature-v4 compute it from
 * the path as sent on the wire: empty and "." segments dropped, ".." pops one, a trailing "/" kept, then
 * each segment URI-encoded again (so "%20" on the wire is "%2520" here; "/" stays).
 */
export function canonicalUri(rawPath: string): string {
  // The common paths need no work: "/" and segments of unreserved characters only.
  if (/^(\/[A-Za-z0-9\-_.~]+)*\/?$/.test(rawPath) && !/\/\.\.?(\/|$)/.test(rawPath)) {
    return rawPath || '/';
  }
  const segments: string[] = [];
  for (const segment of rawPath.split('/')) {
    if (segment === '' || segment === '.') continue;
    if (segment === '..') segments.pop();
    else segments.push(segment);
  }
  const trailing = segments.length > 0 && rawPath.endsWith('/') ? '/' : '';
  return `/${segments.map(safeRfc3986).join('/')}${trailing}`;
}

/** A header value as SigV4 signs it: arrays joined with ",", trimmed, runs of white space made one space. */
export function canonicalHeaderValue(value: string | string[] | undefined): string {
  if (value === undefined) return '';
  const joined = Array.isArray(value) ? value.join(',') : value;
  return /\s\s|[\t\r\n]|^\s|\s$/.test(joined) ? joined.trim().replace(/\s+/g, ' ') : joined;
}

/** Epoch ms of an ISO 8601 basic timestamp "20150830T123600Z"; undefined when it is not one. */
export function amzDateMs(value: string): number | undefined {
  // Requests signed in the same second share it: the last answer is kept.
  if (value === lastAmzDate.value) return lastAmzDate.ms;
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(value);
  if (!m) return undefined;
  const [year, month, day, hour, minute, second] = [+m[1], +m[2], +m[3], +m[4], +m[5], +m[6]];
  const ms = Date.UTC(year, month - 1, day, hour, minute, second);
  const at = new Date(ms);
  // Date.UTC rolls 20150231 over to March (and 24:00 to the next day): only a date that reads back is one.
  const valid =
    at.getUTCFullYear() === year &&
    at.getUTCMonth() === month - 1 &&
    at.getUTCDate() === day &&
    at.getUTCHours() === hour &&
    at.getUTCMinutes() === minute &&
    at.getUTCSeconds() === second;
  if (!valid) return undefined;
  lastAmzDate = { value, ms };
  return ms;
}

let lastAmzDate: { value: string; ms: number | undefined } = { value: '', ms: undefined };

/** "20150830T123600Z" for an HTTP Date header value (SigV4 accepts Date when X-Amz-Date is absent). */
export function amzDateOfHttpDate(value: string): string | undefined {
  const ms = Date.parse(value);
  if (!Number.isFinite(ms)) return undefined;
  return new Date(ms)
    .toISOString()
    .replace(/\.\d{3}Z$/, 'Z')
    .replace(/[-:]/g, '');
}

/**
 * Epoch ms of a SigV2 Timestamp/Expires: ISO 8601 extended ("2011-10-03T15:19:30", optional fraction and
 * zone). Without a zone it is UTC, as AWS reads it (Date.parse would take local time).
 */
export function isoTimestampMs(value: string): number | undefined {
  const m = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})?$/.exec(value);
  if (!m) return undefined;
  const ms = Date.parse(m[2] ? value : `${value}Z`);
  return Number.isFinite(ms) ? ms : undefined;
}
