import { invalidArgument, truncate } from '../errors';
import { isUuid } from '../validation';

/** Sizes of virtual disks: whole MiB, from 1 MiB to 64 TiB (qemu-img and guests handle both ends). */
export const MIB = 1024 * 1024;
export const GIB = 1024 * MIB;
export const diskLimits = {
  virtualSizeMinBytes: MIB,
  virtualSizeMaxBytes: 64 * 1024 * GIB,
  vdiNameMaxLength: 255,
  descriptionMaxLength: 1024,
  srPathMaxLength: 1024,
} as const;

/** The file of a VDI: its id and the format, a plain name the agent accepts and no user ever chooses. */
export function diskFileName(id: string): string {
  return `${id.toLowerCase()}.qcow2`;
}

/** The VDI id a file name was made from by diskFileName, if it was. */
export function idOfDiskFile(file: string): string | undefined {
  const m = /^([0-9a-f-]{36})\.qcow2$/.exec(file);
  return m && isUuid(m[1]) ? m[1] : undefined;
}

/** VDI names are free text (not unique), but one line of printable characters. */
export function validateVdiName(field: string, value: string): string {
  if (!value) throw invalidArgument(field, `is required: 1..${diskLimits.vdiNameMaxLength} characters`);
  if (value.length > diskLimits.vdiNameMaxLength)
    throw invalidArgument(
      field,
      `is ${value.length} characters long; at most ${diskLimits.vdiNameMaxLength} are allowed`,
    );
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(value))
    throw invalidArgument(field, 'must not contain control characters (newlines, tabs, NUL)');
  return value;
}

export function validateDescription(field: string, value: string): string {
  if (value.length > diskLimits.descriptionMaxLength)
    throw invalidArgument(
      field,
      `is ${value.length} characters long; at most ${diskLimits.descriptionMaxLength}`,
    );
  return value;
}

/**
 * A virtual size as asked: 1 MiB..64 TiB, rounded up to a whole MiB (qcow2 clusters and guests' partition
 * tools both like MiB boundaries).
 */
export function validateVirtualSize(field: string, bytes: number): number {
  const fix = `give a size from 1 MiB (${MIB}) to 64 TiB (${diskLimits.virtualSizeMaxBytes}) in bytes`;
  if (!Number.isSafeInteger(bytes) || bytes <= 0)
    throw invalidArgument(
      field,
      `${bytes === 0 ? 'is required' : `${bytes} is not a positive integer`}: ${fix}`,
    );
  const rounded = Math.ceil(bytes / MIB) * MIB;
  if (rounded > diskLimits.virtualSizeMaxBytes)
    throw invalidArgument(field, `${bytes} bytes is more than 64 TiB: ${fix}`);
  return rounded;
}

/**
 * An SR directory as the operator gives it: absolute, normalised (no "." or ".." segments, no "//", no
 * trailing "/"), one line. The agents also check it lies under their allowed SR roots and has no symlinks.
 */
export function validateSrPath(field: string, value: string): string {
  const fix =
    'give an absolute directory under the hosts\' SR roots (FLOTILLA_SR_ROOTS), e.g. "/var/lib/flotilla/sr/sr1"';
  if (!value) throw invalidArgument(field, `is required: ${fix}`);
  const shown = JSON.stringify(truncate(value, 80));
  if (value.length > diskLimits.srPathMaxLength)
    throw invalidArgument(field, `is ${value.length} characters long; at most ${diskLimits.srPathMaxLength}`);
  if (!value.startsWith('/')) throw invalidArgument(field, `${shown} is not absolute: ${fix}`);
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(value))
    throw invalidArgument(field, `${shown} contains control characters`);
  const segments = value.split('/').slice(1);
  if (segments.some((s) => s === '..' || s === '.'))
    throw invalidArgument(field, `${shown} contains "." or ".." segments: ${fix}`);
  const trimmed = segments.at(-1) === '' ? segments.slice(0, -1) : segments;
  if (trimmed.length === 0) throw invalidArgument(field, `"/" cannot be an SR: ${fix}`);
  if (trimmed.some((s) => s === ''))
    throw invalidArgument(field, `${shown} has an empty segment ("//"): ${fix}`);
  return `/${trimmed.join('/')}`;
}

/** Bytes as people read them in messages: "1.5 GiB". */
export function formatBytes(bytes: number): string {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = bytes;
  let u = 0;
  while (Math.abs(v) >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${bytes} bytes` : `${Number.isInteger(v) ? v : v.toFixed(1)} ${units[u]}`;
}
