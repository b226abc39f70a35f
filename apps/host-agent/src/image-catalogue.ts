import * as fs from 'node:fs';
import * as path from 'node:path';
import { DomainError, ErrorCode, invalidArgument } from '@flotilla/domain';

/**
 * The host's image catalogue directory (FLOTILLA_IMAGE_DIR): KERNEL images name their files relative to
 * it. Resolution refuses anything that would leave the directory, and says how to fix a missing file.
 */
export class HostImageCatalogue {
  private readonly root: string;

  constructor(
    dir: string,
    private readonly hostName: string,
  ) {
    this.root = path.resolve(dir);
  }

  resolve(field: string, relative: string): string {
    if (!relative) throw invalidArgument(field, 'is required');
    if (path.isAbsolute(relative) || relative.split(/[\\/]/).includes('..') || relative.includes('\0'))
      throw invalidArgument(
        field,
        `${JSON.stringify(relative.slice(0, 80))} must be a path inside the image catalogue`,
      );
    const full = path.resolve(this.root, relative);
    if (!full.startsWith(this.root + path.sep))
      throw invalidArgument(field, `${JSON.stringify(relative.slice(0, 80))} leaves the image catalogue`);
    let real: string;
    try {
      real = fs.realpathSync(full);
    } catch {
      throw new DomainError(
        ErrorCode.FailedPrecondition,
        `image file ${relative} is missing on host ${this.hostName} (looked in ${this.root}): build or copy the image there (e.g. "flotilla image build-demo")`,
        { field },
      );
    }
    // A symlink inside the catalogue must not lead outside it.
    const realRoot = fs.realpathSync(this.root);
    if (!real.startsWith(realRoot + path.sep))
      throw invalidArgument(field, `${relative} resolves outside the image catalogue`);
    return real;
  }
}
