import { invalidArgument, truncate } from './errors';

/** Image names are unique in a pool and appear in boot specs: lowercase so "Demo" and "demo" never coexist. */
const imageNamePattern = /^[a-z0-9][a-z0-9.-]{0,62}$/;
/** One segment of a catalogue path: no leading '.', so neither "..", "." nor hidden files. */
const pathSegmentPattern = /^[A-Za-z0-9_][A-Za-z0-9._-]*$/;
const sha256Pattern = /^[0-9a-f]{64}$/;

export const imageLimits = { pathMaxLength: 255, pathMaxDepth: 8, cmdlineMaxLength: 1024 } as const;

export function validateImageName(field: string, value: string): string {
  if (!value)
    throw invalidArgument(field, "is required: 1..63 lowercase letters, digits, '-' or '.', e.g. \"demo\"");
  if (!imageNamePattern.test(value))
    throw invalidArgument(
      field,
      `${JSON.stringify(truncate(value, 70))} is not a valid image name: use 1..63 lowercase letters, digits, '-' or '.', starting with a letter or digit`,
    );
  return value;
}

/**
 * A path under the hosts' image catalogue directory, as registered for KERNEL images. Relative and
 * traversal-free by construction, so an agent can join it to its catalogue directory without escaping it.
 */
export function validateCataloguePath(field: string, value: string): string {
  const fix = 'give a path relative to the catalogue directory, e.g. "demo/vmlinuz"';
  if (!value) throw invalidArgument(field, `is required: ${fix}`);
  const shown = JSON.stringify(truncate(value, 80));
  if (value.length > imageLimits.pathMaxLength)
    throw invalidArgument(field, `is ${value.length} characters long; at most ${imageLimits.pathMaxLength}`);
  if (value.startsWith('/') || /^[A-Za-z]:/.test(value) || value.startsWith('~'))
    throw invalidArgument(field, `${shown} is absolute: ${fix}`);
  const segments = value.split('/');
  if (segments.some((s) => s === '..' || s === '.'))
    throw invalidArgument(field, `${shown} contains "." or ".." segments: ${fix}`);
  if (segments.some((s) => s === ''))
    throw invalidArgument(field, `${shown} has an empty segment ("//" or a trailing "/"): ${fix}`);
  if (segments.length > imageLimits.pathMaxDepth)
    throw invalidArgument(
      field,
      `${shown} is ${segments.length} levels deep; at most ${imageLimits.pathMaxDepth}`,
    );
  const bad = segments.find((s) => !pathSegmentPattern.test(s));
  if (bad !== undefined)
    throw invalidArgument(
      field,
      `${shown}: segment ${JSON.stringify(truncate(bad, 40))} may use only letters, digits, '.', '_' and '-', not starting with '.'`,
    );
  return value;
}

/** Lowercase hex SHA-256; empty means none given. Uppercase hex is accepted and lowered. */
export function validateSha256(field: string, value: string): string {
  if (!value) return '';
  const lower = value.toLowerCase();
  if (!sha256Pattern.test(lower))
    throw invalidArgument(field, 'must be 64 hex digits (a SHA-256), e.g. the output of `sha256sum <file>`');
  return lower;
}

export function validateCmdline(field: string, value: string): string {
  if (value.length > imageLimits.cmdlineMaxLength)
    throw invalidArgument(field, `is ${value.length} characters; at most ${imageLimits.cmdlineMaxLength}`);
  if (/[\0\n\r]/.test(value)) throw invalidArgument(field, 'must be one line without NUL characters');
  return value;
}
