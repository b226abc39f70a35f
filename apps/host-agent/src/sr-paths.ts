import * as fs from 'node:fs';
import * as path from 'node:path';
import { DomainError, ErrorCode, invalidArgument } from '@flotilla/domain';
import { isPlainFileName, SR_MARKER, srMarkerOf } from '@flotilla/hypervisor';

export { isPlainFileName, SR_MARKER };

/**
 * The storage service names SR directories and files; the agent checks every one, so that a compromised or
 * buggy caller can reach nothing outside the operator's SR roots (FLOTILLA_SR_ROOTS).
 */
export class SrPaths {
  constructor(readonly roots: string[]) {}

  /** sr_path as an absolute, normalised directory under one of the roots (not a root itself). */
  directory(srPath: string, field = 'sr_path'): string {
    if (!srPath || !path.isAbsolute(srPath))
      throw invalidArgument(field, `must be an absolute directory, got ${JSON.stringify(srPath)}`);
    if (srPath.split('/').includes('..') || srPath.includes('\0'))
      throw invalidArgument(field, 'must not contain ".." or NUL');
    const dir = path.resolve(srPath);
    const root = this.roots.find((r) => dir.startsWith(r + path.sep));
    if (!root)
      throw invalidArgument(
        field,
        `${dir} is outside this host's SR roots (${this.roots.join(', ')}): choose a directory under one of them, or add a root to FLOTILLA_SR_ROOTS`,
      );
    // A symlink anywhere between the root and the SR could lead outside it.
    let probe = dir;
    while (probe !== root) {
      if (fs.existsSync(probe) && fs.lstatSync(probe).isSymbolicLink())
        throw invalidArgument(field, `${probe} is a symbolic link: SR directories must be real directories`);
      probe = path.dirname(probe);
    }
    return dir;
  }

  /** The SR id in the directory's marker, or undefined when there is none. */
  markerOf(dir: string): string | undefined {
    return srMarkerOf(dir);
  }

  /** The directory of SR srId on this host: checked like directory(), and it must hold srId's marker. */
  srDirectory(srId: string, srPath: string, field = 'sr_path'): string {
    const dir = this.directory(srPath, field);
    const marker = this.markerOf(dir);
    if (marker !== srId)
      throw new DomainError(
        ErrorCode.FailedPrecondition,
        marker
          ? `${dir} holds the marker of SR ${marker}, not ${srId}: this host sees another directory at that path`
          : `SR ${srId} is not visible on this host: ${dir} has no Flotilla SR marker (mount the share, or scan the SR again)`,
      );
    return dir;
  }

  /** A file of SR srId: a plain name (checked) inside its directory. */
  file(srId: string, srPath: string, file: string, field = 'file', dirField = 'sr_path'): string {
    if (!isPlainFileName(file))
      throw invalidArgument(
        field,
        `must be a plain file name (letters, digits, '.', '_', '-'; not starting with '.'), got ${JSON.stringify(file.slice(0, 80))}`,
      );
    return path.join(this.srDirectory(srId, srPath, dirField), file);
  }
}
