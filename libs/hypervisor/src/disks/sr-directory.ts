import * as fs from 'node:fs';
import * as path from 'node:path';
import { DiskFileInfo, DiskFiles } from './disk-files';
import {
  DiskError,
  fsyncDir,
  isPlainFileName,
  lstatOrUndefined,
  physicalBytes,
  SR_MARKER,
  sweepTemporaries,
  tempFile,
} from './sr-files';

/**
 * An SR directory on this host: made and marked (attach), measured (stat), listed with every file read by
 * the image inspector (scan), and unmarked (detach). The marker {"sr_id": …} is how a host knows that the
 * directory it sees at a path is the SR the storage service means (a share not mounted shows an empty
 * directory, not the SR).
 */

export interface SrSpace {
  capacityBytes: number;
  freeBytes: number;
}

export interface ScannedSrFile {
  file: string;
  info?: DiskFileInfo;
  /** Why the inspector refused the file; qemu-img never opened it. */
  refusedReason?: string;
}

/** The SR id in the directory's marker, or undefined when there is none. */
export function srMarkerOf(dir: string): string | undefined {
  try {
    const parsed = JSON.parse(fs.readFileSync(path.join(dir, SR_MARKER), 'utf8')) as { sr_id?: unknown };
    return typeof parsed.sr_id === 'string' ? parsed.sr_id : undefined;
  } catch {
    return undefined;
  }
}

export function srSpace(dir: string): SrSpace {
  const s = fs.statfsSync(dir);
  return { capacityBytes: s.blocks * s.bsize, freeBytes: s.bavail * s.bsize };
}

/**
 * Makes `dir` the SR directory of srId: created (0700) if missing and createDirectory, checked to be a
 * real directory and writable, marked. A marker of another SR is ALREADY_EXISTS unless adoptExisting (the
 * marker's id is then returned and kept).
 */
export function attachSrDirectory(options: {
  dir: string;
  srId: string;
  createDirectory: boolean;
  adoptExisting: boolean;
}): { srId: string; createdDirectory: boolean } & SrSpace {
  const { dir, srId } = options;
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(srId))
    throw new DiskError('invalid', 'sr_id: must be 1..128 letters, digits, ".", "_" or "-"', 'sr_id');
  let createdDirectory = false;
  let st = lstatOrUndefined(dir);
  if (!st) {
    if (!options.createDirectory)
      throw new DiskError(
        'not-found',
        `${dir} does not exist on this host: create it (create_directory) or mount the share there`,
      );
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    createdDirectory = true;
    st = fs.lstatSync(dir);
  }
  if (!st.isDirectory()) throw new DiskError('precondition', `${dir} is not a directory`);
  sweepTemporaries(dir);
  assertWritable(dir);
  const marker = srMarkerOf(dir);
  if (marker && marker !== srId) {
    if (!options.adoptExisting)
      throw new DiskError(
        'exists',
        `${dir} already belongs to SR ${marker}: attach with adopt_existing to take it over as that SR, or choose another directory`,
      );
    return { srId: marker, createdDirectory, ...srSpace(dir) };
  }
  if (!marker) {
    writeMarker(dir, srId);
    const written = srMarkerOf(dir);
    if (written !== srId)
      throw new DiskError(
        'exists',
        `${dir} was attached as SR ${written} at the same moment: choose another directory`,
      );
  }
  return { srId, createdDirectory, ...srSpace(dir) };
}

/** File-system space and the bytes the SR's files (everything in the directory but the marker) occupy. */
export function statSrDirectory(dir: string): SrSpace & { physicalUtilisationBytes: number } {
  sweepTemporaries(dir);
  let used = 0;
  for (const name of fs.readdirSync(dir)) {
    if (name === SR_MARKER) continue;
    const st = lstatOrUndefined(path.join(dir, name));
    if (st?.isFile()) used += physicalBytes(st);
  }
  return { ...srSpace(dir), physicalUtilisationBytes: used };
}

/**
 * Every regular file of the SR (temporaries, the marker and other dot files excluded), read by the
 * inspector as qcow2 with its chain; refused files carry the reason and are never opened by qemu-img.
 */
export function scanSrDirectory(dir: string, disks: DiskFiles): ScannedSrFile[] {
  sweepTemporaries(dir);
  const out: ScannedSrFile[] = [];
  for (const name of fs.readdirSync(dir).sort()) {
    if (name.startsWith('.')) continue;
    const st = lstatOrUndefined(path.join(dir, name));
    if (!st || st.isDirectory()) continue;
    if (!isPlainFileName(name)) {
      out.push({ file: name, refusedReason: 'the name is not a plain file name Flotilla uses' });
      continue;
    }
    if (st.isSymbolicLink()) {
      out.push({ file: name, refusedReason: 'a symbolic link: SR files must be regular files' });
      continue;
    }
    if (!st.isFile()) continue;
    try {
      out.push({ file: name, info: disks.describe(dir, name) });
    } catch (e) {
      if (!(e instanceof DiskError)) throw e;
      out.push({ file: name, refusedReason: e.message });
    }
  }
  return out;
}

/** Removes the marker, and the directory when asked and then empty; disk files are left in place. */
export function detachSrDirectory(options: { dir: string; removeDirectory: boolean }): {
  removedDirectory: boolean;
} {
  const { dir } = options;
  if (!lstatOrUndefined(dir)) return { removedDirectory: false };
  sweepTemporaries(dir);
  fs.rmSync(path.join(dir, SR_MARKER), { force: true });
  fsyncDir(dir);
  if (!options.removeDirectory) return { removedDirectory: false };
  try {
    fs.rmdirSync(dir);
    return { removedDirectory: true };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOTEMPTY') return { removedDirectory: false };
    throw e;
  }
}

function assertWritable(dir: string): void {
  const probe = tempFile(dir, 'write-probe');
  try {
    fs.writeFileSync(probe.path, 'flotilla\n', { mode: 0o600, flag: 'wx' });
  } catch (e) {
    throw new DiskError(
      'precondition',
      `${dir} is not writable by the host agent (${(e as NodeJS.ErrnoException).code ?? 'error'}): fix its permissions or mount`,
    );
  } finally {
    probe.discard();
  }
}

function writeMarker(dir: string, srId: string): void {
  const tmp = tempFile(dir, 'marker');
  try {
    fs.writeFileSync(tmp.path, `${JSON.stringify({ sr_id: srId })}\n`, { mode: 0o600, flag: 'wx' });
    try {
      tmp.publish(path.join(dir, SR_MARKER));
    } catch (e) {
      // Another attach of the same SR won the race; a marker of another SR is refused by the caller's retry.
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
  } finally {
    tmp.discard();
  }
}
