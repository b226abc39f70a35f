import { InvalidArgumentError } from 'commander';
import { parseSize } from './size';

/** Parses one `key=value` flag value; the key is non-empty, the value may be empty. */
export function parseKeyValue(raw: string): [string, string] {
  const eq = raw.indexOf('=');
  if (eq <= 0) throw new InvalidArgumentError(`expected key=value, got "${raw}"`);
  const key = raw.slice(0, eq).trim();
  if (!key) throw new InvalidArgumentError(`expected key=value, got "${raw}"`);
  return [key, raw.slice(eq + 1)];
}

/** A commander option parser collecting repeated `--flag k=v` into one map; a repeated key is an error. */
export function collectKeyValues(
  raw: string,
  previous: Record<string, string> | undefined,
): Record<string, string> {
  const [key, value] = parseKeyValue(raw);
  const map = { ...(previous ?? {}) };
  if (key in map) throw new InvalidArgumentError(`key "${key}" given twice`);
  map[key] = value;
  return map;
}

/** A commander option parser for integers within bounds. */
export function intInRange(min: number, max: number): (raw: string) => number {
  return (raw: string) => {
    if (!/^-?\d+$/.test(raw.trim())) throw new InvalidArgumentError(`expected a whole number, got "${raw}"`);
    const n = Number(raw);
    if (n < min || n > max) throw new InvalidArgumentError(`must be from ${min} to ${max}`);
    return n;
  };
}

/** A commander option parser for a comma-separated list ("vm,host"), repeatable. */
export function collectList(raw: string, previous: string[] | undefined): string[] {
  return [
    ...(previous ?? []),
    ...raw
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean),
  ];
}

/** A commander option parser for repeated filter terms, joined as the API expects ("a=b,c=d"). */
export function collectFilter(raw: string, previous: string | undefined): string {
  return previous ? `${previous},${raw}` : raw;
}

const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Resource ids are UUIDs; anything else the user typed is a name. */
export function looksLikeId(s: string): boolean {
  return uuid.test(s);
}

/** A commander option parser for byte sizes ("10G", "512M", bytes); see size.ts. */
export function sizeArg(raw: string): number {
  const r = parseSize(raw);
  if ('error' in r) throw new InvalidArgumentError(r.error);
  return r.bytes;
}

/**
 * A commander option parser for a bandwidth: a size per second, "1G/s", "500M/s" or "1G" (the "/s" may be
 * left out), in bytes per second.
 */
export function bandwidthArg(raw: string): number {
  const r = parseSize(raw.trim().replace(/\/s$/i, ''));
  if ('error' in r)
    throw new InvalidArgumentError(
      `expected a bandwidth such as 1G/s or 500M/s (bytes per second; K, M, G are powers of 1024), got "${raw}"`,
    );
  return r.bytes;
}
