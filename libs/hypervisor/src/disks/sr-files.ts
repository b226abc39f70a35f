import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { isProcessAlive } from '../qemu/qemu-process';

/**
 * Files in an SR directory: plain names, temporary names and atomic publication. Every file Flotilla makes
 * is written under a '.tmp-' name in the same directory and then linked into place (link(2) fails if the
 * name exists, so two racing writers never overwrite each other), so a crash leaves no file or the whole
 * file. Temporaries left by a crash are removed by the next operation on the SR.
 */

export type DiskErrorKind =
  /** A name or an argument is refused (names the field). */
  | 'invalid'
  | 'not-found'
  /** The target exists with other parameters. */
  | 'exists'
  /** The image inspector refused a file (the reason says why). */
  | 'refused'
  /** A running VM holds the file, or another file backs onto it. */
  | 'in-use'
  /** The SR is not what the caller thinks (marker missing or of another SR, not a directory). */
  | 'precondition'
  | 'no-space'
  | 'limit'
  | 'cancelled'
  | 'failed';

export class DiskError extends Error {
  constructor(
    readonly kind: DiskErrorKind,
    message: string,
    readonly field?: string,
  ) {
    super(message);
    this.name = 'DiskError';
  }
}

/** The marker Flotilla writes into every SR directory: {"sr_id": "..."}. */
export const SR_MARKER = '.flotilla-sr.json';
export const TEMP_PREFIX = '.tmp-';

/** A plain file name inside an SR directory: no '/', not starting with '.', at most 255 bytes. */
const PLAIN_FILE = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}$/;

export const isPlainFileName = (name: string): boolean => PLAIN_FILE.test(name);

export function plainFile(name: string, field = 'file'): string {
  if (!isPlainFileName(name))
    throw new DiskError(
      'invalid',
      `${field}: must be a plain file name (letters, digits, '.', '_', '-'; not starting with '.'), got ${JSON.stringify(name.slice(0, 80))}`,
      field,
    );
  return name;
}

/** Bytes a file occupies on disk (allocated blocks, not its length: qcow2 and raw files are sparse). */
export function physicalBytes(st: fs.Stats): number {
  return st.blocks * 512;
}

// ---------------------------------------------------------------------------------------------------------
// Temporary files: ".tmp-<boot>.<pid>.<random>.<purpose>". The boot id and pid tell whether the process that
// made it is still alive on this machine; SR directories shared between hosts see temporaries of other
// machines, which are removed only when untouched for STALE_FOREIGN_MS.

const STALE_FOREIGN_MS = 6 * 3600_000;
const bootId = (() => {
  try {
    return fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim().replace(/-/g, '').slice(0, 12);
  } catch {
    return 'noboot';
  }
})();
/** Temporaries of this process that are being written: never swept. */
const live = new Set<string>();

export interface TempFile {
  path: string;
  /** Links the temporary into place as `target` (fails with EEXIST if it exists) and removes the temporary. */
  publish(target: string): void;
  /** Removes the temporary (if still there) and forgets it. */
  discard(): void;
}

/** A new temporary name in `dir` for `purpose` (a plain name; shortened to fit 255 bytes). */
export function tempFile(dir: string, purpose: string): TempFile {
  const name = `${TEMP_PREFIX}${bootId}.${process.pid}.${randomBytes(4).toString('hex')}.${purpose}`.slice(
    0,
    255,
  );
  const file = path.join(dir, name);
  live.add(file);
  return {
    path: file,
    publish(target: string) {
      fsyncFile(file);
      fs.linkSync(file, target);
      fsyncDir(dir);
      this.discard();
    },
    discard() {
      fs.rmSync(file, { force: true });
      live.delete(file);
    },
  };
}

/** Removes temporaries left by crashed processes (see above); returns the names removed. */
export function sweepTemporaries(dir: string, now = Date.now()): string[] {
  const removed: string[] = [];
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return removed;
  }
  for (const name of names) {
    if (!name.startsWith(TEMP_PREFIX)) continue;
    const file = path.join(dir, name);
    if (live.has(file)) continue;
    const [boot, pid] = name.slice(TEMP_PREFIX.length).split('.');
    let stale: boolean;
    if (boot === bootId) stale = Number(pid) === process.pid || !isProcessAlive(Number(pid));
    else {
      try {
        stale = now - fs.lstatSync(file).mtimeMs > STALE_FOREIGN_MS;
      } catch {
        continue;
      }
    }
    if (!stale) continue;
    try {
      fs.rmSync(file, { force: true });
      removed.push(name);
    } catch {
      // another sweeper got it
    }
  }
  return removed;
}

export function fsyncFile(file: string): void {
  const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

export function fsyncDir(dir: string): void {
  const fd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** lstat that says undefined for a missing file. */
export function lstatOrUndefined(file: string): fs.Stats | undefined {
  try {
    return fs.lstatSync(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

/** Whether O_DIRECT works in `dir` (tmpfs before Linux 6.6, some FUSE and network file systems: no). */
const directIoByDevice = new Map<number, boolean>();
export function supportsDirectIo(dir: string): boolean {
  const dev = fs.statSync(dir).dev;
  const known = directIoByDevice.get(dev);
  if (known !== undefined) return known;
  const probe = tempFile(dir, 'direct-io-probe');
  let ok = false;
  try {
    const fd = fs.openSync(
      probe.path,
      fs.constants.O_CREAT | fs.constants.O_WRONLY | fs.constants.O_EXCL | (fs.constants.O_DIRECT ?? 0),
      0o600,
    );
    fs.closeSync(fd);
    ok = fs.constants.O_DIRECT !== undefined;
  } catch {
    ok = false;
  } finally {
    probe.discard();
  }
  directIoByDevice.set(dev, ok);
  return ok;
}
