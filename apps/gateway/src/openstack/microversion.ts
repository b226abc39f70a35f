/**
 * Nova microversion negotiation (https://docs.openstack.org/nova/latest/reference/api-microversion-history.html).
 * The request names a version in X-OpenStack-Nova-API-Version: 2.x or OpenStack-API-Version: compute 2.x
 * (the second wins when both are sent, as in Nova); none means 2.1, "latest" the maximum.
 */
export interface Microversion {
  major: number;
  minor: number;
}

/**
 * The highest microversion whose shape changes this front implements for what it serves (2.92 is what
 * `openstack --os-compute-api-version 2.latest` sends without discovery). 2.96 adds the server's
 * pinned_availability_zone (always null here: creates are not pinned); 2.98 would embed image properties.
 */
export const minMicroversion: Microversion = { major: 2, minor: 1 };
export const maxMicroversion: Microversion = { major: 2, minor: 96 };

export const format = (v: Microversion): string => `${v.major}.${v.minor}`;

export type Negotiated =
  { ok: true; version: Microversion } | { ok: false; status: 400 | 406; message: string };

export function negotiateMicroversion(headers: {
  legacy?: string | string[];
  generic?: string | string[];
}): Negotiated {
  const generic = computeEntry(headers.generic);
  const raw = generic ?? first(headers.legacy);
  if (raw === undefined || raw.trim() === '') return { ok: true, version: minMicroversion };
  const text = raw.trim().toLowerCase();
  if (text === 'latest') return { ok: true, version: maxMicroversion };
  const m = /^(\d+)\.(\d+)$/.exec(text);
  if (!m)
    return {
      ok: false,
      status: 400,
      message: `Invalid format for API version ${JSON.stringify(raw.trim())}: expected "2.<minor>" or "latest", e.g. "2.1"`,
    };
  const version = { major: Number(m[1]), minor: Number(m[2]) };
  if (compare(version, minMicroversion) < 0 || compare(version, maxMicroversion) > 0)
    return {
      ok: false,
      status: 406,
      message: `Version ${format(version)} is not supported by the API. Minimum is ${format(minMicroversion)} and maximum is ${format(maxMicroversion)}.`,
    };
  return { ok: true, version };
}

export function compare(a: Microversion, b: Microversion): number {
  return a.major !== b.major ? a.major - b.major : a.minor - b.minor;
}

/** True when the negotiated version is at least 2.<minor>. */
export const atLeast = (v: Microversion, minor: number): boolean => compare(v, { major: 2, minor }) >= 0;

/** The response headers that echo the negotiated version. */
export function microversionHeaders(v: Microversion): Record<string, string> {
  return {
    'x-openstack-nova-api-version': format(v),
    'openstack-api-version': `compute ${format(v)}`,
    vary: 'OpenStack-API-Version, X-OpenStack-Nova-API-Version',
  };
}

function first(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

/** "compute 2.60" from OpenStack-API-Version, which may list several services ("compute 2.60, image 2.5"). */
function computeEntry(v: string | string[] | undefined): string | undefined {
  const all = (Array.isArray(v) ? v.join(',') : (v ?? '')).split(',');
  for (const entry of all) {
    const [service, version] = entry.trim().split(/\s+/, 2);
    if (service?.toLowerCase() === 'compute') return version ?? '';
  }
  return undefined;
}
