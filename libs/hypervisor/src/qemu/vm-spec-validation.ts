import * as path from 'node:path';
import { DriverDisk, DriverError, DriverNic, DriverVmSpec } from '../driver';

/** Bounds of what one QEMU process is asked to run (q35 takes up to 288 vCPUs; we stay well below). */
export const VM_SPEC_LIMITS = {
  vcpus: { min: 1, max: 64 },
  memoryMib: { min: 16, max: 1024 * 1024 },
  disks: 16,
  nics: 8,
  forwardsPerNic: 32,
  nameLength: 128,
  cmdlineLength: 4096,
  pathLength: 1024,
} as const;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** A safe token is a directory name by itself: no dots (so never `..`), no slashes, no commas. */
const SAFE_TOKEN = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;

function invalid(field: string, message: string): never {
  throw new DriverError('invalid-spec', `${field}: ${message}`);
}

function integerIn(field: string, value: unknown, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max)
    invalid(field, `must be an integer from ${min} to ${max}, got ${JSON.stringify(value)}`);
  return value;
}

/** An absolute, already-normalised host path: no `..`, no `.`, no `//`, no trailing slash, no control bytes. */
export function validateHostPath(field: string, value: unknown): string {
  if (typeof value !== 'string' || value.length === 0) invalid(field, 'must be an absolute path');
  if (value.length > VM_SPEC_LIMITS.pathLength)
    invalid(field, `longer than ${VM_SPEC_LIMITS.pathLength} characters`);
  if (CONTROL.test(value)) invalid(field, 'contains control characters');
  if (!path.posix.isAbsolute(value)) invalid(field, `must be an absolute path, got ${JSON.stringify(value)}`);
  if (value.split('/').some((part) => part === '..' || part === '.'))
    invalid(field, `must not contain '.' or '..' segments, got ${JSON.stringify(value)}`);
  if (path.posix.normalize(value) !== value || (value.length > 1 && value.endsWith('/')))
    invalid(field, `must be a normalised path, got ${JSON.stringify(value)}`);
  return value;
}

export function isUuid(value: string): boolean {
  return UUID.test(value);
}

export function validateVmId(value: unknown, field = 'vmId'): string {
  if (typeof value !== 'string' || !(UUID.test(value) || SAFE_TOKEN.test(value)))
    invalid(
      field,
      `must be a UUID or a token of letters, digits, '-' and '_' (1-64), got ${JSON.stringify(value)}`,
    );
  return value;
}

/** A disk id (a VBD id, usually a UUID): it only names QEMU nodes and devices, through diskToken(). */
const DISK_ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;

export function validateDiskId(value: unknown, field = 'disk id'): string {
  if (typeof value !== 'string' || !DISK_ID.test(value))
    invalid(
      field,
      `must be 1-128 of letters, digits, '.', '_', ':' and '-', got ${JSON.stringify(String(value).slice(0, 80))}`,
    );
  return value;
}

/** One disk, checked and copied (no extra fields); `field` prefixes the error, e.g. `disks[2]`. */
export function validateDriverDisk(field: string, disk: DriverDisk): DriverDisk {
  if (typeof disk !== 'object' || disk === null) invalid(field, 'must be an object');
  const p = validateHostPath(`${field}.path`, disk.path);
  if (disk.format !== 'qcow2' && disk.format !== 'raw')
    invalid(
      `${field}.format`,
      `must be 'qcow2' or 'raw' (never guessed), got ${JSON.stringify(disk.format)}`,
    );
  if (disk.readOnly !== undefined && typeof disk.readOnly !== 'boolean')
    invalid(`${field}.readOnly`, 'must be a boolean');
  if (disk.bootable !== undefined && typeof disk.bootable !== 'boolean')
    invalid(`${field}.bootable`, 'must be a boolean');
  const id = disk.id === undefined ? undefined : validateDiskId(disk.id, `${field}.id`);
  return {
    path: p,
    format: disk.format,
    ...(disk.readOnly ? { readOnly: true } : {}),
    ...(id !== undefined ? { id } : {}),
    ...(disk.bootable ? { bootable: true } : {}),
  };
}

function validateNic(field: string, nic: DriverNic): DriverNic {
  if (typeof nic !== 'object' || nic === null) invalid(field, 'must be an object');
  if (typeof nic.mac !== 'string' || !MAC.test(nic.mac))
    invalid(`${field}.mac`, `must look like 52:54:00:12:34:56, got ${JSON.stringify(nic.mac)}`);
  const firstOctet = parseInt(nic.mac.slice(0, 2), 16);
  if (firstOctet & 1) invalid(`${field}.mac`, `must be unicast (multicast bit set in ${nic.mac})`);
  if (!(firstOctet & 2))
    invalid(`${field}.mac`, `must be locally administered (e.g. 52:54:00:…), got ${nic.mac}`);
  if (!Array.isArray(nic.forwards)) invalid(`${field}.forwards`, 'must be an array');
  if (nic.forwards.length > VM_SPEC_LIMITS.forwardsPerNic)
    invalid(`${field}.forwards`, `at most ${VM_SPEC_LIMITS.forwardsPerNic}`);
  const forwards = nic.forwards.map((f, j) => {
    const guestPort = integerIn(`${field}.forwards[${j}].guestPort`, f?.guestPort, 1, 65535);
    const hostPort =
      f.hostPort === undefined || f.hostPort === 0
        ? 0
        : integerIn(`${field}.forwards[${j}].hostPort`, f.hostPort, 1, 65535);
    return { guestPort, hostPort };
  });
  return { mac: nic.mac.toLowerCase(), forwards };
}

/**
 * Checks everything the driver will turn into QEMU arguments and returns a clean copy (no extra fields).
 * Throws DriverError('invalid-spec') naming the first bad field.
 */
export function validateDriverVmSpec(spec: DriverVmSpec): DriverVmSpec {
  if (typeof spec !== 'object' || spec === null) invalid('spec', 'must be an object');
  const vmId = validateVmId(spec.vmId);
  if (typeof spec.name !== 'string' || spec.name.length === 0 || spec.name.length > VM_SPEC_LIMITS.nameLength)
    invalid('name', `must be 1-${VM_SPEC_LIMITS.nameLength} characters`);
  if (CONTROL.test(spec.name)) invalid('name', 'contains control characters');
  const vcpus = integerIn('vcpus', spec.vcpus, VM_SPEC_LIMITS.vcpus.min, VM_SPEC_LIMITS.vcpus.max);
  const memoryMib = integerIn(
    'memoryMib',
    spec.memoryMib,
    VM_SPEC_LIMITS.memoryMib.min,
    VM_SPEC_LIMITS.memoryMib.max,
  );

  if (!Array.isArray(spec.disks)) invalid('disks', 'must be an array');
  if (spec.disks.length > VM_SPEC_LIMITS.disks) invalid('disks', `at most ${VM_SPEC_LIMITS.disks}`);
  const disks = spec.disks.map((d, i) => validateDriverDisk(`disks[${i}]`, d));
  const ids = new Set<string>();
  disks.forEach((d, i) => {
    // Disks without an id are named by position (disk<i>): that name must not be taken by another.
    const id = d.id ?? `disk${i}`;
    if (ids.has(id)) invalid(`disks[${i}].id`, `${id} is used twice`);
    ids.add(id);
  });
  const paths = new Set<string>();
  disks.forEach((d, i) => {
    if (paths.has(d.path)) invalid(`disks[${i}].path`, `${d.path} is attached twice`);
    paths.add(d.path);
  });
  if (!Array.isArray(spec.nics)) invalid('nics', 'must be an array');
  if (spec.nics.length > VM_SPEC_LIMITS.nics) invalid('nics', `at most ${VM_SPEC_LIMITS.nics}`);
  const nics = spec.nics.map((n, i) => validateNic(`nics[${i}]`, n));
  const macs = new Set<string>();
  const hostPorts = new Set<number>();
  nics.forEach((nic, i) => {
    if (macs.has(nic.mac)) invalid(`nics[${i}].mac`, `${nic.mac} is used twice`);
    macs.add(nic.mac);
    nic.forwards.forEach((f, j) => {
      if (!f.hostPort) return;
      if (hostPorts.has(f.hostPort))
        invalid(`nics[${i}].forwards[${j}].hostPort`, `${f.hostPort} is used twice`);
      hostPorts.add(f.hostPort);
    });
  });

  const boot = spec.boot;
  if (typeof boot !== 'object' || boot === null) invalid('boot', 'must be an object');
  let validBoot: DriverVmSpec['boot'];
  if (boot.kind === 'kernel') {
    const kernel = validateHostPath('boot.kernel', boot.kernel);
    const initrd = boot.initrd === undefined ? undefined : validateHostPath('boot.initrd', boot.initrd);
    if (typeof boot.cmdline !== 'string' || boot.cmdline.length > VM_SPEC_LIMITS.cmdlineLength)
      invalid('boot.cmdline', `must be a string of at most ${VM_SPEC_LIMITS.cmdlineLength} characters`);
    if (CONTROL.test(boot.cmdline)) invalid('boot.cmdline', 'contains control characters');
    validBoot = { kind: 'kernel', kernel, ...(initrd ? { initrd } : {}), cmdline: boot.cmdline };
  } else if (boot.kind === 'disk') {
    if (disks.length === 0) invalid('disks', "boot.kind 'disk' needs at least one disk");
    validBoot = { kind: 'disk' };
  } else {
    invalid(
      'boot.kind',
      `must be 'kernel' or 'disk', got ${JSON.stringify((boot as { kind: unknown }).kind)}`,
    );
  }
  return { vmId, name: spec.name, vcpus, memoryMib, boot: validBoot, disks, nics };
}
