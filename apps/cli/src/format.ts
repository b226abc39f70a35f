/** Small pure formatters for what people read in tables. */

/** An API enum value as a lower-case word: POWER_STATE_RUNNING → "running", ROLE_VM_ADMIN → "vm-admin". */
export function word(value: string | undefined, prefix: string): string {
  if (!value || value.endsWith('_UNSPECIFIED')) return '';
  const rest = value.startsWith(prefix) ? value.slice(prefix.length) : value;
  return rest.toLowerCase().replace(/_/g, '-');
}

/** The inverse of word(): "vm-admin" → ROLE_VM_ADMIN, if it names one of the values. */
export function enumValue<T extends string>(
  input: string,
  prefix: string,
  values: readonly T[],
): T | undefined {
  const wanted = `${prefix}${input.trim().toUpperCase().replace(/-/g, '_')}`;
  return values.find((v) => v === wanted || v === input.trim().toUpperCase());
}

/** Timestamps arrive as Dates (ts-proto wrapper) or, without it, as {seconds, nanos}. */
export function toDate(value: unknown): Date | undefined {
  if (value instanceof Date) return Number.isNaN(value.getTime()) ? undefined : value;
  if (typeof value === 'string') {
    const d = new Date(value);
    return Number.isNaN(d.getTime()) ? undefined : d;
  }
  if (value && typeof value === 'object' && 'seconds' in value) {
    const { seconds, nanos } = value as { seconds: number | string; nanos?: number };
    return new Date(Number(seconds) * 1000 + (nanos ?? 0) / 1e6);
  }
  return undefined;
}

/** "2025-01-31 12:00:03Z" — UTC, to the second. */
export function timestamp(value: unknown): string {
  const d = toDate(value);
  if (!d || d.getTime() === 0) return '';
  return `${d.toISOString().slice(0, 19).replace('T', ' ')}Z`;
}

/** How long ago, in the largest whole unit: "45s", "3m", "2h", "5d". */
export function age(value: unknown, now: number = Date.now()): string {
  const d = toDate(value);
  if (!d || d.getTime() === 0) return '';
  const s = Math.max(0, Math.floor((now - d.getTime()) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

/** 512 → "512 MiB", 2048 → "2 GiB", 1536 → "1.5 GiB". */
export function mebibytes(mib: number | undefined): string {
  if (mib === undefined || mib === null) return '';
  if (mib >= 1024) return `${+(mib / 1024).toFixed(1)} GiB`;
  return `${mib} MiB`;
}

/** {tier: "web", zone: "a"} → "tier=web,zone=a". */
export function labels(map: Record<string, string> | undefined): string {
  return Object.entries(map ?? {})
    .map(([k, v]) => `${k}=${v}`)
    .join(',');
}

/** 0.42 → "42%". */
export function percent(fraction: number | undefined): string {
  return `${Math.round(Math.min(1, Math.max(0, fraction ?? 0)) * 100)}%`;
}
