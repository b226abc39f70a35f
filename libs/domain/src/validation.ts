import { invalidArgument, truncate } from './errors';

/** Limits shared by every API edge. */
export const limits = {
  nameMaxLength: 63,
  labelCount: 64,
  labelKeyMaxLength: 63,
  labelValueMaxLength: 255,
  requestIdMaxLength: 128,
  vcpusMax: 256,
  memoryMibMin: 16,
  memoryMibMax: 4 * 1024 * 1024,
  diskGibMax: 64 * 1024,
  pageSizeDefault: 100,
  pageSizeMax: 1000,
  filterMaxLength: 1024,
} as const;

const namePattern = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const labelKeyPattern = /^[a-z0-9]([a-z0-9._/-]*[a-z0-9])?$/;

export function validateName(field: string, value: string): string {
  if (!value) throw invalidArgument(field, 'is required: 1..63 characters, letters, digits, ".", "_" or "-"');
  if (value.length > limits.nameMaxLength)
    throw invalidArgument(
      field,
      `is ${value.length} characters long; at most ${limits.nameMaxLength} are allowed`,
    );
  if (!namePattern.test(value))
    throw invalidArgument(
      field,
      `${JSON.stringify(truncate(value, 40))} is not a valid name: use letters, digits, ".", "_" or "-", starting with a letter or digit`,
    );
  return value;
}

export function isUuid(value: string): boolean {
  return uuidPattern.test(value);
}

export function validateId(field: string, value: string, kind: string): string {
  if (!value) throw invalidArgument(field, `is required: the ${kind}'s id`);
  if (!isUuid(value))
    throw invalidArgument(field, `${JSON.stringify(truncate(value, 40))} is not a valid ${kind} id (a UUID)`);
  return value.toLowerCase();
}

export function validateRequestId(value: string | undefined): string | undefined {
  if (!value) return undefined;
  if (value.length > limits.requestIdMaxLength)
    throw invalidArgument(
      'request_id',
      `is ${value.length} characters long; at most ${limits.requestIdMaxLength}`,
    );
  return value;
}

export function validateLabels(
  field: string,
  labels: Record<string, string> | undefined,
): Record<string, string> {
  const entries = Object.entries(labels ?? {});
  if (entries.length > limits.labelCount)
    throw invalidArgument(field, `has ${entries.length} entries; at most ${limits.labelCount}`);
  for (const [k, v] of entries) {
    if (k.length > limits.labelKeyMaxLength || !labelKeyPattern.test(k))
      throw invalidArgument(
        `${field}.${truncate(k, 40)}`,
        'keys are 1..63 lowercase letters, digits, ".", "_", "-" or "/"',
      );
    if (v.length > limits.labelValueMaxLength)
      throw invalidArgument(
        `${field}.${k}`,
        `value is ${v.length} characters long; at most ${limits.labelValueMaxLength}`,
      );
  }
  return Object.fromEntries(entries);
}

export function validateIntRange(field: string, value: number, min: number, max: number, unit = ''): number {
  if (!Number.isInteger(value) || value < min || value > max)
    throw invalidArgument(field, `must be an integer from ${min} to ${max}${unit}; got ${value}`);
  return value;
}

/** A VM size as callers give it: vCPUs and memory within the platform's limits. */
export function validateVmSize(size: { vcpus: number; memoryMib: number }): {
  vcpus: number;
  memoryMib: number;
} {
  return {
    vcpus: validateIntRange('vcpus', size.vcpus, 1, limits.vcpusMax),
    memoryMib: validateIntRange(
      'memory_mib',
      size.memoryMib,
      limits.memoryMibMin,
      limits.memoryMibMax,
      ' MiB',
    ),
  };
}

export interface PageSpec {
  pageSize: number;
  /** Offset into the ordered result; opaque to clients. */
  offset: number;
  filter: FilterTerm[];
}

export interface FilterTerm {
  field: string;
  value: string;
}

/**
 * Parses `page` of a List request. `allowedFields` lists filter fields; `label.<key>` terms are allowed when
 * `label.*` is in it.
 */
export function parsePage(
  page: { pageSize?: number; pageToken?: string; filter?: string } | undefined,
  allowedFields: readonly string[],
): PageSpec {
  const pageSize = page?.pageSize || limits.pageSizeDefault;
  validateIntRange('page.page_size', pageSize, 1, limits.pageSizeMax);
  const filterText = page?.filter ?? '';
  const filter = parseFilter(filterText, allowedFields);
  return { pageSize, offset: decodePageToken(page?.pageToken ?? '', filterText), filter };
}

export function parseFilter(text: string, allowedFields: readonly string[]): FilterTerm[] {
  if (text.length > limits.filterMaxLength)
    throw invalidArgument(
      'page.filter',
      `is ${text.length} characters long; at most ${limits.filterMaxLength}`,
    );
  if (!text.trim()) return [];
  return text.split(',').map((term) => {
    const eq = term.indexOf('=');
    if (eq <= 0)
      throw invalidArgument('page.filter', `term ${JSON.stringify(truncate(term, 40))} is not field=value`);
    const field = term.slice(0, eq).trim();
    const value = term.slice(eq + 1).trim();
    const known =
      allowedFields.includes(field) || (field.startsWith('label.') && allowedFields.includes('label.*'));
    if (!known)
      throw invalidArgument(
        'page.filter',
        `unknown field ${JSON.stringify(truncate(field, 40))}; filter on: ${allowedFields.join(', ')}`,
      );
    return { field, value };
  });
}

/** Page tokens bind the offset to the filter so a token is not reused with another filter. */
export function encodePageToken(offset: number, filter: string): string {
  return Buffer.from(JSON.stringify({ o: offset, f: hashFilter(filter) })).toString('base64url');
}

function decodePageToken(token: string, filter: string): number {
  if (!token) return 0;
  try {
    const parsed = JSON.parse(Buffer.from(token, 'base64url').toString('utf8')) as {
      o?: unknown;
      f?: unknown;
    };
    if (
      typeof parsed.o === 'number' &&
      Number.isInteger(parsed.o) &&
      parsed.o >= 0 &&
      parsed.f === hashFilter(filter)
    )
      return parsed.o;
  } catch {
    // fall through to the error below
  }
  throw invalidArgument(
    'page.page_token',
    'is not a token returned by this list with the same filter: start without it',
  );
}

function hashFilter(filter: string): number {
  let h = 0;
  for (let i = 0; i < filter.length; i++) h = (Math.imul(h, 31) + filter.charCodeAt(i)) | 0;
  return h;
}
