import { BlockList, isIP } from 'node:net';

/**
 * The outbound URL policy of imports (DESIGN §8: no SSRF to internal addresses unless allowed). Pure: the
 * fetcher resolves host names and asks checkAddress() about each address before it connects to it.
 *
 * FLOTILLA_IMPORT_URL_ALLOW is a comma-separated list of entries, each either
 * - a URL prefix, `https://images.example.com/pub/`: same scheme, host and port, and a path under it
 *   (on a segment boundary: `/pub` allows `/pub/x`, not `/public`), or
 * - a host pattern, `images.example.com`, `*.example.com` (subdomains only), `10.1.2.3`, `[fd00::5]`,
 *   optionally with `:port`: http or https, any path.
 * Whatever an entry allows, a host name that resolves to a loopback, link-local (cloud metadata
 * 169.254.169.254), private, shared, multicast or reserved address is refused, unless the entry names that
 * address itself (the operator wrote `127.0.0.1`, not `localhost`). An empty list turns URL imports off.
 */

export interface UrlAllowEntry {
  /** As the operator wrote it, for messages. */
  text: string;
  /** 'http:' or 'https:' for a prefix; undefined (either) for a host pattern. */
  protocol?: string;
  /** Lowercase host name or IP literal without brackets; `*.suffix` for a wildcard. */
  host: string;
  /** Explicit port as a string; '' means the scheme's default for a prefix, any port for a host pattern. */
  port: string;
  /** Path prefix (prefix entries only). */
  path?: string;
  /** Set when host is an IP literal: the one internal address this entry allows. */
  address?: string;
}

export type Parsed<T> = { ok: true; value: T } | { ok: false; reason: string };

const maxUrlLength = 2048;
const schemes = new Set(['http:', 'https:']);

/** Parses the allow-list; an entry that is not understood fails the whole list (config is checked at start). */
export function parseUrlAllowList(value: string): Parsed<UrlAllowEntry[]> {
  const entries: UrlAllowEntry[] = [];
  for (const text of value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)) {
    const entry = parseEntry(text);
    if (!entry.ok) return entry;
    entries.push(entry.value);
  }
  return { ok: true, value: entries };
}

function parseEntry(text: string): Parsed<UrlAllowEntry> {
  const bad = (why: string): Parsed<UrlAllowEntry> => ({
    ok: false,
    reason: `entry ${JSON.stringify(text)} ${why}`,
  });
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(text)) {
    let u: URL;
    try {
      u = new URL(text);
    } catch {
      return bad('is not a valid URL');
    }
    if (!schemes.has(u.protocol)) return bad('must be http:// or https://');
    if (u.username || u.password) return bad('must not carry credentials');
    if (u.search || u.hash) return bad('must not have a query or fragment');
    const host = bare(u.hostname);
    return {
      ok: true,
      value: { text, protocol: u.protocol, host, port: u.port, path: u.pathname, address: ipLiteral(host) },
    };
  }
  const m = /^(\[[0-9a-f:.]+\]|\*\.[a-z0-9.-]+|[a-z0-9.-]+)(?::(\d{1,5}))?$/i.exec(text);
  if (!m)
    return bad('is neither a URL prefix (https://host/path/) nor a host pattern (host, *.domain, host:port)');
  const host = bare(m[1].toLowerCase());
  if (m[1].startsWith('[') && isIP(host) !== 6) return bad('is not an IPv6 address in brackets');
  if (m[2] !== undefined && (Number(m[2]) < 1 || Number(m[2]) > 65535))
    return bad('has a port outside 1..65535');
  return { ok: true, value: { text, host, port: m[2] ?? '', address: ipLiteral(host) } };
}

/**
 * Checks a URL against the list before anything is resolved or fetched: http/https, no credentials, on the
 * list. Returns the URL and the entries that allow it (the address check needs them).
 */
export function checkUrl(
  raw: string,
  allow: readonly UrlAllowEntry[],
): Parsed<{ url: URL; entries: UrlAllowEntry[] }> {
  if (!allow.length)
    return {
      ok: false,
      reason:
        'importing from a URL is turned off in this pool: the operator enables it by listing allowed URL prefixes or hosts in FLOTILLA_IMPORT_URL_ALLOW of the storage service; or upload the bytes in the stream instead',
    };
  if (raw.length > maxUrlLength) return { ok: false, reason: `is longer than ${maxUrlLength} characters` };
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return { ok: false, reason: 'is not a valid absolute URL' };
  }
  if (!schemes.has(url.protocol))
    return { ok: false, reason: `must be http:// or https://, not ${url.protocol}//` };
  if (url.username || url.password)
    return {
      ok: false,
      reason: 'must not carry credentials (user:password@): they would be logged and kept',
    };
  const entries = allow.filter((e) => matches(url, e));
  if (!entries.length)
    return {
      ok: false,
      reason: `${url.origin}${url.pathname} is not on the import allow-list of this pool (FLOTILLA_IMPORT_URL_ALLOW): ask the operator to add it, or upload the bytes instead`,
    };
  return { ok: true, value: { url, entries } };
}

/**
 * Whether the fetcher may connect to `address` (what the URL's host resolved to) under the entries that
 * allowed the URL: any public address, or an internal one that one of them names explicitly.
 */
export function checkAddress(address: string, entries: readonly UrlAllowEntry[]): Parsed<string> {
  const ip = bare(address).toLowerCase();
  if (!isIP(ip)) return { ok: false, reason: `${address} is not an IP address` };
  if (!isInternalAddress(ip)) return { ok: true, value: ip };
  const normal = normalIp(ip);
  if (entries.some((e) => e.address !== undefined && e.address === normal)) return { ok: true, value: ip };
  return {
    ok: false,
    reason: `resolves to ${ip}, an address internal to the installation (loopback, link-local, private or reserved): refused unless the allow-list names ${ip} itself`,
  };
}

const internal = new BlockList();
for (const [net, bits] of [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.0.2.0', 24],
  ['192.88.99.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['198.51.100.0', 24],
  ['203.0.113.0', 24],
  ['224.0.0.0', 4],
  ['240.0.0.0', 4],
] as const)
  internal.addSubnet(net, bits, 'ipv4');
for (const [net, bits] of [
  ['::', 128],
  ['::1', 128],
  ['64:ff9b:1::', 48],
  ['100::', 64],
  ['2001:db8::', 32],
  ['fc00::', 7],
  ['fe80::', 10],
  ['fec0::', 10],
  ['ff00::', 8],
] as const)
  internal.addSubnet(net, bits, 'ipv6');

/** Loopback, link-local (metadata services), private, shared, documentation, multicast or reserved. */
export function isInternalAddress(address: string): boolean {
  const ip = normalIp(bare(address));
  const family = isIP(ip);
  if (family === 4) return internal.check(ip, 'ipv4');
  if (family !== 6) return true;
  // IPv4 embedded in IPv6 (mapped ::ffff:a.b.c.d, NAT64 64:ff9b::a.b.c.d) is judged as that IPv4 address.
  const v4 = embeddedV4(ip);
  if (v4) return internal.check(v4, 'ipv4');
  return internal.check(ip, 'ipv6');
}

function matches(url: URL, e: UrlAllowEntry): boolean {
  const host = bare(url.hostname);
  if (e.protocol !== undefined) {
    if (url.protocol !== e.protocol || host !== e.host || url.port !== e.port) return false;
    const prefix = e.path ?? '/';
    return (
      url.pathname === prefix ||
      (url.pathname.startsWith(prefix) && (prefix.endsWith('/') || url.pathname[prefix.length] === '/'))
    );
  }
  if (e.port && url.port !== e.port && !(url.port === '' && e.port === defaultPort(url.protocol)))
    return false;
  if (e.host.startsWith('*.')) return host.endsWith(e.host.slice(1)) && host.length > e.host.length - 1;
  if (e.address !== undefined) return ipLiteral(host) === e.address;
  return host === e.host;
}

const defaultPort = (protocol: string): string => (protocol === 'https:' ? '443' : '80');

/** Host without IPv6 brackets. */
function bare(host: string): string {
  return host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
}

function ipLiteral(host: string): string | undefined {
  return isIP(host) ? normalIp(host) : undefined;
}

/** One spelling per address, so `::1` and `0:0::1` compare equal. */
function normalIp(ip: string): string {
  if (isIP(ip) !== 6) return ip;
  try {
    return new URL(`http://[${ip}]/`).hostname.slice(1, -1);
  } catch {
    return ip;
  }
}

function embeddedV4(ip6: string): string | undefined {
  const m = /^(?:::ffff:|64:ff9b::)(\d+\.\d+\.\d+\.\d+)$/i.exec(ip6);
  if (m) return m[1];
  const hex = /^(?:::ffff:|64:ff9b::)([0-9a-f]{1,4}):([0-9a-f]{1,4})$/i.exec(ip6);
  if (!hex) return undefined;
  const [hi, lo] = [parseInt(hex[1], 16), parseInt(hex[2], 16)];
  return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
}
