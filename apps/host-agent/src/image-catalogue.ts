import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DomainError, ErrorCode, invalidArgument } from '@flotilla/domain';

/**
 * The host's image catalogue directory (FLOTILLA_IMAGE_DIR): KERNEL images name their files relative to
 * it. Resolution refuses anything that would leave the directory, and says how to fix a missing file.
 */
export class HostImageCatalogue {
  private readonly root: string;
  /** sha256 by file identity (path, size, mtime, inode): a kernel is hashed once, not at every boot. */
  private readonly hashes = new Map<string, string>();

  constructor(
    dir: string,
    private readonly hostName: string,
  ) {
    this.root = path.resolve(dir);
  }

  /**
   * The file's absolute path, refused unless it is inside the catalogue and, when `sha256` is given, has
   * exactly that content (the catalogue recorded it at registration: a file replaced or corrupted on this
   * host since must not boot).
   */
  resolve(field: string, relative: string, sha256 = ''): string {
    const real = this.locate(field, relative);
    if (sha256 && this.sha256Of(real) !== sha256.toLowerCase())
      throw new DomainError(
        ErrorCode.FailedPrecondition,
        `image file ${relative} on host ${this.hostName} is not the one the catalogue registered (sha256 differs): rebuild or copy the image again and register it (e.g. "flotilla image build-demo")`,
        { field },
      );
    return real;
  }

  private sha256Of(file: string): string {
    const st = fs.statSync(file);
    const key = `${file}:${st.size}:${st.mtimeMs}:${st.ino}`;
    let hash = this.hashes.get(key);
    if (!hash) {
      hash = createHash('sha256').update(fs.readFileSync(file)).digest('hex');
      this.hashes.set(key, hash);
    }
    return hash;
  }

  private locate(field: string, relative: string): string {
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
