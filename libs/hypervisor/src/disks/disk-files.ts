import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  assertBackingFile,
  DeclaredFormat,
  ImageRefused,
  InspectedImage,
  inspectImage,
} from '../images/image-inspector';
import { QemuImg, QemuImgError, QemuImgLimits } from './qemu-img';
import {
  DiskError,
  isPlainFileName,
  lstatOrUndefined,
  physicalBytes,
  plainFile,
  supportsDirectIo,
  sweepTemporaries,
  tempFile,
  TempFile,
} from './sr-files';

/**
 * The qcow2 files of an SR directory, driven by qemu-img (DESIGN §6): thin create, info, grow, delete,
 * snapshot as an external overlay, flattened copy/convert with progress, rebase (coalescing), check, import
 * and export staging. Before qemu-img touches a file, the image inspector reads its header and every node
 * of its backing chain: each backing file must be a plain name of an existing qcow2 sibling in the same
 * directory (the only kind Flotilla sets), so qemu-img never opens a file Flotilla did not verify. Every
 * operation is idempotent (a target that exists as asked is success) and every new file appears atomically.
 * Callers pass checked absolute SR directories; names are checked again here.
 */

export type CopyFormat = 'qcow2' | 'raw' | 'vmdk';

export interface DiskFileInfo {
  file: string;
  format: DeclaredFormat;
  virtualSizeBytes: number;
  /** Bytes the file occupies on disk. */
  physicalBytes: number;
  /** Plain name of the backing file in the same directory; absent if none. */
  backingFile?: string;
}

export interface ChainNode {
  file: string;
  path: string;
  image: InspectedImage;
}

export interface CheckResult {
  /** False when qemu-img has no check for the format (raw, vhd): nothing was checked. */
  checked: boolean;
  corruptions: number;
  leaks: number;
}

/** Where a copy reads from: a file of an SR (qcow2, its chain flattened) or another checked file. */
export type CopySource =
  | { dir: string; file: string }
  /** An image outside the SR (catalogue, staging): inspected as `format`, no backing file accepted. */
  | { path: string; format: DeclaredFormat };

interface Op {
  dir: string;
  signal?: AbortSignal;
}

/** qemu-img's names of the formats. */
const qemuFormat: Record<DeclaredFormat, string> = { qcow2: 'qcow2', raw: 'raw', vmdk: 'vmdk', vhd: 'vpc' };
/** How long delete waits for a disk locked by another process before refusing it as in use. */
const DELETE_LOCK_PATIENCE_MS = 8000;

/** Chains are coalesced when snapshots are deleted; a chain longer than this is not one Flotilla made. */
const MAX_CHAIN_LENGTH = 256;
const MIB = 1024 * 1024;

export const roundUpToMib = (bytes: number): number => Math.ceil(bytes / MIB) * MIB;

export class DiskFiles {
  constructor(readonly qemuImg: QemuImg = new QemuImg()) {}

  /**
   * Inspects `file` and every backing file down its chain (top first). Refused: anything not qcow2, a
   * backing file that is a path rather than a plain sibling name, missing, a symlink, of another backing
   * format, or a loop.
   */
  chain(dir: string, file: string): ChainNode[] {
    const nodes: ChainNode[] = [];
    for (let name: string | undefined = plainFile(file); name;) {
      const full = path.join(dir, name);
      const st = lstatOrUndefined(full);
      if (!st) {
        if (nodes.length === 0)
          throw new DiskError('not-found', `disk file ${name} does not exist in ${dir}`);
        throw new DiskError(
          'refused',
          `${nodes[nodes.length - 1].file} is backed by ${name}, which is missing from ${dir}`,
        );
      }
      if (!st.isFile()) throw new DiskError('refused', `${name} is not a regular file`);
      const image = inspect(full, 'qcow2', name);
      if (image.backingFile !== undefined) {
        if (!isPlainFileName(image.backingFile))
          throw new DiskError(
            'refused',
            `${name} names the backing file ${JSON.stringify(image.backingFile.slice(0, 120))}, which is not a file of its SR: refused`,
          );
        guard(() => assertBackingFile(image, image.backingFile), name);
      }
      nodes.push({ file: name, path: full, image });
      if (nodes.length > MAX_CHAIN_LENGTH)
        throw new DiskError('refused', `the backing chain of ${file} is longer than ${MAX_CHAIN_LENGTH}`);
      name = image.backingFile;
      if (name && nodes.some((n) => n.file === name))
        throw new DiskError('refused', `the backing chain of ${file} loops through ${name}`);
    }
    return nodes;
  }

  /** A file's description from its header and the file system (no qemu-img run): chain verified. */
  describe(dir: string, file: string): DiskFileInfo {
    const [top] = this.chain(dir, file);
    return describeNode(top);
  }

  /** qemu-img info (force-share: works while a VM runs it), after verifying the whole chain. */
  async info(op: Op & { file: string }): Promise<DiskFileInfo> {
    sweepTemporaries(op.dir);
    const [top] = this.chain(op.dir, op.file);
    const out = await this.run(op, {
      args: ['info', '-U', '--output=json', '-f', 'qcow2', top.path],
      limits: this.qemuImg.limits('metadata'),
    });
    const parsed = JSON.parse(out) as {
      'virtual-size'?: number;
      'backing-filename'?: string;
      format?: string;
    };
    if (parsed.format !== 'qcow2' || typeof parsed['virtual-size'] !== 'number')
      throw new DiskError('failed', `qemu-img info of ${op.file} did not describe a qcow2 image`);
    return {
      file: top.file,
      format: 'qcow2',
      virtualSizeBytes: parsed['virtual-size'],
      physicalBytes: physicalBytes(fs.lstatSync(top.path)),
      ...(parsed['backing-filename'] ? { backingFile: parsed['backing-filename'] } : {}),
    };
  }

  /**
   * A thin qcow2 of virtualSizeBytes (rounded up to 1 MiB), empty or an overlay of backingFile (a file of
   * the same directory; size 0 means the backing file's size). qemu-img is told the size and `-u`, so it
   * never opens the backing file, which the inspector has verified instead.
   */
  async create(
    op: Op & { file: string; virtualSizeBytes: number; backingFile?: string },
  ): Promise<DiskFileInfo> {
    const file = plainFile(op.file);
    const backing = op.backingFile ? plainFile(op.backingFile, 'backing_file') : undefined;
    if (backing === file)
      throw new DiskError('invalid', 'backing_file: must not be the file itself', 'backing_file');
    sweepTemporaries(op.dir);
    const base = backing ? this.chain(op.dir, backing)[0] : undefined;
    return this.createOn(op, file, op.virtualSizeBytes, base);
  }

  /** create() once the names are checked and the backing file's chain (if any) is verified. */
  private async createOn(
    op: Op,
    file: string,
    virtualSizeBytes: number,
    base: ChainNode | undefined,
  ): Promise<DiskFileInfo> {
    const backing = base?.file;
    if (!Number.isSafeInteger(virtualSizeBytes) || virtualSizeBytes < 0 || (!base && virtualSizeBytes === 0))
      throw new DiskError(
        'invalid',
        'virtual_size_bytes: must be a positive number of bytes (0 only with a backing file)',
        'virtual_size_bytes',
      );
    const size =
      virtualSizeBytes === 0 && base ? base.image.virtualSizeBytes : roundUpToMib(virtualSizeBytes);
    if (base && size < base.image.virtualSizeBytes)
      throw new DiskError(
        'invalid',
        `virtual_size_bytes: ${size} is smaller than the backing file's ${base.image.virtualSizeBytes}`,
        'virtual_size_bytes',
      );
    const existing = this.existing(op.dir, file);
    if (existing) return this.sameOrConflict(existing, { virtualSizeBytes: size, backingFile: backing });
    return this.publish(
      op.dir,
      file,
      'create',
      async (tmp) => {
        await this.run(op, {
          args: [
            'create',
            '-q',
            '-f',
            'qcow2',
            ...(backing ? ['-b', backing, '-F', 'qcow2', '-u'] : []),
            tmp.path,
            String(size),
          ],
          limits: this.qemuImg.limits('metadata'),
        });
      },
      { virtualSizeBytes: size, backingFile: backing },
    );
  }

  /** Grows a disk to virtualSizeBytes (rounded up to 1 MiB); the same size is success, smaller refused. */
  async resize(op: Op & { file: string; virtualSizeBytes: number }): Promise<DiskFileInfo> {
    sweepTemporaries(op.dir);
    const [top] = this.chain(op.dir, op.file);
    const size = this.growTarget(top, op.virtualSizeBytes);
    if (size === top.image.virtualSizeBytes) return describeNode(top);
    await this.run(op, {
      args: ['resize', '-q', '-f', 'qcow2', top.path, String(size)],
      limits: this.qemuImg.limits('metadata'),
    });
    return this.describe(op.dir, op.file);
  }

  /** The rounded size a resize asks for; INVALID when it would shrink the disk. */
  growTarget(top: ChainNode, virtualSizeBytes: number): number {
    if (!Number.isSafeInteger(virtualSizeBytes) || virtualSizeBytes <= 0)
      throw new DiskError(
        'invalid',
        'virtual_size_bytes: must be a positive number of bytes',
        'virtual_size_bytes',
      );
    const size = roundUpToMib(virtualSizeBytes);
    if (size < top.image.virtualSizeBytes)
      throw new DiskError(
        'invalid',
        `virtual_size_bytes: ${size} is smaller than the disk's ${top.image.virtualSizeBytes} bytes: disks only grow`,
        'virtual_size_bytes',
      );
    return size;
  }

  /**
   * Deletes a disk file; one already gone is success. Refused while another file of the directory backs
   * onto it or a process (a VM's QEMU) holds its write lock.
   */
  async delete(op: Op & { file: string }): Promise<void> {
    const file = plainFile(op.file);
    sweepTemporaries(op.dir);
    const full = path.join(op.dir, file);
    const st = lstatOrUndefined(full);
    if (!st) return;
    if (!st.isFile()) throw new DiskError('refused', `${file} is not a regular file`);
    const children = this.backedBy(op.dir, file);
    if (children.length)
      throw new DiskError(
        'in-use',
        `${file} is the backing file of ${children.slice(0, 5).join(', ')}: delete or coalesce those first`,
      );
    // A qcow2 open read-write by a QEMU is locked; qemu-img info without force-share then fails.
    try {
      inspectImage(full, 'qcow2');
      await this.run(op, {
        args: ['info', '--output=json', '-f', 'qcow2', full],
        limits: this.qemuImg.limits('metadata'),
        // A disk in use is refused within seconds; one its QEMU is letting go of is usually free by then.
        lockPatienceMs: DELETE_LOCK_PATIENCE_MS,
      });
    } catch (e) {
      if (e instanceof DiskError && e.kind === 'in-use') throw e;
      // Not a readable qcow2 (a refused file): nothing can have it open as a disk; remove it.
    }
    fs.rmSync(full, { force: true });
  }

  /** Files of the directory whose qcow2 header names `file` as backing file. */
  backedBy(dir: string, file: string): string[] {
    const out: string[] = [];
    for (const name of fs.readdirSync(dir)) {
      if (name === file || !isPlainFileName(name)) continue;
      try {
        if (inspectImage(path.join(dir, name), 'qcow2').backingFile === file) out.push(name);
      } catch {
        // not a qcow2 Flotilla could use: it backs onto nothing
      }
    }
    return out;
  }

  /**
   * Freezes `file`: creates newTopFile as a qcow2 overlay backed by it (same size). The caller points the
   * VM at newTopFile (or, for a running VM, the driver does it live).
   */
  async snapshot(
    op: Op & { file: string; newTopFile: string },
  ): Promise<{ frozen: DiskFileInfo; newTop: DiskFileInfo }> {
    const file = plainFile(op.file);
    const newTop = plainFile(op.newTopFile, 'new_top_file');
    if (newTop === file)
      throw new DiskError('invalid', 'new_top_file: must differ from file', 'new_top_file');
    sweepTemporaries(op.dir);
    const [frozen] = this.chain(op.dir, file);
    const info = await this.createOn(op, newTop, frozen.image.virtualSizeBytes, frozen);
    return { frozen: describeNode(frozen), newTop: info };
  }

  /**
   * Writes target (qcow2, raw or streamOptimized VMDK) as a standalone copy of source, its chain flattened,
   * or as a thin overlay of backingFile (a file of the target directory) holding only what the source's top
   * holds. Cache mode none on both sides where the file systems support O_DIRECT (it keeps the copy from
   * churning the page cache and was several times faster than writeback here), writeback where not.
   */
  async copy(
    op: Op & {
      source: CopySource;
      file: string;
      format?: CopyFormat;
      backingFile?: string;
      compress?: boolean;
      onProgress?: (fraction: number) => void;
    },
  ): Promise<DiskFileInfo> {
    const file = plainFile(op.file);
    const format = op.format ?? 'qcow2';
    const backing = op.backingFile ? plainFile(op.backingFile, 'target_backing_file') : undefined;
    if (backing && format !== 'qcow2')
      throw new DiskError(
        'invalid',
        'target_backing_file: only a qcow2 target can have a backing file',
        'target_backing_file',
      );
    if (op.compress && format !== 'qcow2')
      throw new DiskError('invalid', 'compress: only qcow2 targets are compressed', 'compress');
    sweepTemporaries(op.dir);
    const source = this.source(op.source);
    if (backing) this.chain(op.dir, backing);
    const want = { virtualSizeBytes: source.image.virtualSizeBytes, backingFile: backing };
    const existing = this.existing(op.dir, file, format);
    if (existing) {
      const info = this.sameOrConflict(existing, want);
      op.onProgress?.(1);
      return info;
    }
    return this.publish(
      op.dir,
      file,
      'copy',
      (tmp) =>
        this.convert(op, {
          source: source.path,
          sourceFormat: source.image.format,
          sourceDirectIo: sourceSupportsDirectIo(source.path),
          virtualSizeBytes: source.image.virtualSizeBytes,
          target: tmp.path,
          format,
          compress: op.compress,
          backingFile: backing,
          onProgress: op.onProgress,
        }),
      want,
      format,
    );
  }

  /**
   * Merges the chain between `file` and newBackingFile into `file` and points it at newBackingFile (a file
   * further down its chain), or at nothing when newBackingFile is undefined: qemu-img rebase in safe mode,
   * so the disk's content does not change. A disk already on newBackingFile is success.
   */
  async rebase(op: Op & { file: string; newBackingFile?: string }): Promise<DiskFileInfo> {
    sweepTemporaries(op.dir);
    const nodes = this.chain(op.dir, op.file);
    const [top] = nodes;
    const target = op.newBackingFile ? plainFile(op.newBackingFile, 'new_backing_file') : undefined;
    if (top.image.backingFile === target) return describeNode(top);
    if (target && !nodes.slice(2).some((n) => n.file === target))
      throw new DiskError(
        'invalid',
        `new_backing_file: ${target} is not below the backing file of ${top.file} in its chain`,
        'new_backing_file',
      );
    await this.run(op, {
      args: [
        'rebase',
        '-q',
        ...cacheModes(supportsDirectIo(op.dir), supportsDirectIo(op.dir)),
        '-f',
        'qcow2',
        ...(target ? ['-b', target, '-F', 'qcow2'] : ['-b', '']),
        top.path,
      ],
      limits: this.qemuImg.limits('data', top.image.virtualSizeBytes),
    });
    return this.describe(op.dir, op.file);
  }

  /** qemu-img check of an inspected image; corruption or an unreadable image is refused with the reason. */
  async check(op: {
    path: string;
    format: DeclaredFormat;
    virtualSizeBytes: number;
    signal?: AbortSignal;
  }): Promise<CheckResult> {
    let out: { exitCode: number; stdout: string };
    try {
      out = await this.qemuImg.run({
        args: ['check', '--output=json', '-f', qemuFormat[op.format], op.path],
        limits: this.qemuImg.limits('data', op.virtualSizeBytes),
        okExitCodes: [2, 3, 63],
        signal: op.signal,
      });
    } catch (e) {
      if (e instanceof QemuImgError && e.failure === 'failed')
        throw new DiskError('refused', `the image cannot be read as ${op.format}: ${e.message}`);
      throw fromQemuImg(e);
    }
    if (out.exitCode === 63) return { checked: false, corruptions: 0, leaks: 0 };
    let report: { corruptions?: number; leaks?: number; 'check-errors'?: number } = {};
    try {
      report = JSON.parse(out.stdout) as typeof report;
    } catch {
      // exit code 2 without JSON still means corrupt
    }
    const corruptions = (report.corruptions ?? 0) + (report['check-errors'] ?? 0);
    if (out.exitCode === 2 || corruptions > 0)
      throw new DiskError(
        'refused',
        `qemu-img check found the ${op.format} image corrupt (${corruptions || 'some'} errors): repair it or upload it again`,
      );
    return { checked: true, corruptions: 0, leaks: report.leaks ?? 0 };
  }

  /**
   * Turns an uploaded staging file into the qcow2 target: inspected as `format` (no backing file, no data
   * file, no extents or parents it did not set), checked, converted. The staging file is removed in every
   * path (success, refusal, failure, cancel).
   */
  async importStaged(
    op: Op & {
      staging: TempFile;
      format: DeclaredFormat;
      file: string;
      onProgress?: (fraction: number) => void;
    },
  ): Promise<DiskFileInfo> {
    try {
      const file = plainFile(op.file);
      const image = inspect(op.staging.path, op.format, 'the upload');
      guard(() => assertBackingFile(image, undefined), 'the upload');
      const existing = this.existing(op.dir, file);
      if (existing) return this.sameOrConflict(existing, { virtualSizeBytes: image.virtualSizeBytes });
      await this.check({
        path: op.staging.path,
        format: op.format,
        virtualSizeBytes: image.virtualSizeBytes,
        signal: op.signal,
      });
      return await this.copy({
        dir: op.dir,
        signal: op.signal,
        source: { path: op.staging.path, format: op.format },
        file,
        format: 'qcow2',
        onProgress: op.onProgress,
      });
    } finally {
      op.staging.discard();
    }
  }

  /**
   * Writes `file` as a standalone image of `format` into a temporary of the directory, for an export
   * stream; the caller streams it and discards it.
   */
  async stageExport(
    op: Op & {
      file: string;
      format: CopyFormat;
      compress?: boolean;
      purpose?: string;
      onProgress?: (fraction: number) => void;
    },
  ): Promise<{ staging: TempFile; sizeBytes: number; virtualSizeBytes: number }> {
    sweepTemporaries(op.dir);
    const [top] = this.chain(op.dir, op.file);
    const staging = tempFile(
      op.dir,
      `export.${op.purpose ? plainFile(op.purpose, 'staging_file') : top.file}`,
    );
    try {
      await this.convert(op, {
        source: top.path,
        sourceFormat: 'qcow2',
        sourceDirectIo: supportsDirectIo(op.dir),
        virtualSizeBytes: top.image.virtualSizeBytes,
        target: staging.path,
        format: op.format,
        compress: op.compress,
        onProgress: op.onProgress,
      });
      return {
        staging,
        sizeBytes: fs.statSync(staging.path).size,
        virtualSizeBytes: top.image.virtualSizeBytes,
      };
    } catch (e) {
      staging.discard();
      throw e;
    }
  }

  // -------------------------------------------------------------------------------------------------------

  private source(source: CopySource): { path: string; image: InspectedImage } {
    if ('dir' in source) {
      const [top] = this.chain(source.dir, source.file);
      return top;
    }
    const st = lstatOrUndefined(source.path);
    if (!st) throw new DiskError('not-found', `source image ${path.basename(source.path)} does not exist`);
    const image = inspect(source.path, source.format, path.basename(source.path));
    guard(() => assertBackingFile(image, undefined), path.basename(source.path));
    return { path: source.path, image };
  }

  private existing(dir: string, file: string, format: DeclaredFormat = 'qcow2'): ChainNode | undefined {
    const full = path.join(dir, file);
    const st = lstatOrUndefined(full);
    if (!st) return undefined;
    if (!st.isFile()) throw new DiskError('exists', `${file} exists and is not a regular file`);
    if (format !== 'qcow2') return { file, path: full, image: inspect(full, format, file) };
    return this.chain(dir, file)[0];
  }

  /** An existing target is success when it is what was asked, else ALREADY_EXISTS naming the difference. */
  private sameOrConflict(
    node: ChainNode,
    want: { virtualSizeBytes: number; backingFile?: string },
  ): DiskFileInfo {
    const have = node.image;
    if (
      have.virtualSizeBytes !== want.virtualSizeBytes ||
      (have.backingFile ?? undefined) !== want.backingFile
    )
      throw new DiskError(
        'exists',
        `${node.file} already exists with other parameters (${have.virtualSizeBytes} bytes, backing ${have.backingFile ?? 'none'}; asked ${want.virtualSizeBytes} bytes, backing ${want.backingFile ?? 'none'}): choose another name or delete it`,
      );
    return describeNode(node);
  }

  /** Runs `write` on a fresh temporary, links it into place as `file`, and describes the result. */
  private async publish(
    dir: string,
    file: string,
    purpose: string,
    write: (tmp: TempFile) => Promise<void>,
    want: { virtualSizeBytes: number; backingFile?: string },
    format: DeclaredFormat = 'qcow2',
  ): Promise<DiskFileInfo> {
    const tmp = tempFile(dir, `${purpose}.${file}`);
    try {
      await write(tmp);
      try {
        tmp.publish(path.join(dir, file));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
        // A repeated call finished first: success if it made the same file.
        const existing = this.existing(dir, file, format);
        if (!existing) throw e;
        return this.sameOrConflict(existing, want);
      }
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOSPC')
        throw new DiskError('no-space', `the file system of ${dir} is full`);
      throw e;
    } finally {
      tmp.discard();
    }
    // Only the new file is read again: its backing file was verified before it was written.
    const full = path.join(dir, file);
    const image = inspect(full, format, file);
    if (format === 'qcow2') guard(() => assertBackingFile(image, want.backingFile), file);
    return describeNode({ file, path: full, image });
  }

  /**
   * qemu-img convert of `source` (its chain flattened) into a standalone `format` image at `target`, a file
   * of op.dir: a streamOptimized VMDK; qcow2 clusters compressed when asked; a thin qcow2 overlay of
   * backingFile when given. Compressing (a VMDK always is) is CPU-bound and gets the 'compress' limits.
   */
  private async convert(
    op: Op,
    c: {
      source: string;
      sourceFormat: DeclaredFormat;
      sourceDirectIo: boolean;
      virtualSizeBytes: number;
      target: string;
      format: CopyFormat;
      compress?: boolean;
      backingFile?: string;
      onProgress?: (fraction: number) => void;
    },
  ): Promise<void> {
    await this.run(op, {
      args: [
        'convert',
        '-p',
        ...cacheModes(supportsDirectIo(op.dir), c.sourceDirectIo),
        '-f',
        qemuFormat[c.sourceFormat],
        '-O',
        c.format,
        ...(c.format === 'vmdk' ? ['-o', 'subformat=streamOptimized'] : []),
        ...(c.compress && c.format === 'qcow2' ? ['-c'] : []),
        ...(c.backingFile ? ['-B', c.backingFile, '-F', 'qcow2'] : []),
        c.source,
        c.target,
      ],
      limits: this.qemuImg.limits(
        c.format === 'vmdk' || c.compress ? 'compress' : 'data',
        c.virtualSizeBytes,
      ),
      onProgress: c.onProgress,
    });
  }

  private async run(
    op: Op,
    run: {
      args: string[];
      limits: QemuImgLimits;
      onProgress?: (fraction: number) => void;
      lockPatienceMs?: number;
    },
  ): Promise<string> {
    try {
      return (await this.qemuImg.run({ ...run, signal: op.signal })).stdout;
    } catch (e) {
      throw fromQemuImg(e);
    }
  }
}

function describeNode(node: ChainNode): DiskFileInfo {
  return {
    file: node.file,
    format: node.image.format,
    virtualSizeBytes: node.image.virtualSizeBytes,
    physicalBytes: physicalBytes(fs.lstatSync(node.path)),
    ...(node.image.backingFile ? { backingFile: node.image.backingFile } : {}),
  };
}

function inspect(file: string, format: DeclaredFormat, name: string): InspectedImage {
  return guard(() => inspectImage(file, format), name);
}

function guard<T>(f: () => T, name: string): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof ImageRefused) throw new DiskError('refused', `${name}: ${e.message}`);
    if ((e as NodeJS.ErrnoException).code === 'ELOOP')
      throw new DiskError('refused', `${name} is a symbolic link: disk files must be regular files`);
    throw e;
  }
}

/** O_DIRECT reads of an existing file (a catalogue may be read-only: no probe file is written there). */
/**
 * qemu-img's cache modes of the target (-t) and the source (-T): none (O_DIRECT) where the file system
 * supports it, writeback where not.
 */
function cacheModes(targetDirectIo: boolean, sourceDirectIo: boolean): string[] {
  return ['-t', targetDirectIo ? 'none' : 'writeback', '-T', sourceDirectIo ? 'none' : 'writeback'];
}

function sourceSupportsDirectIo(file: string): boolean {
  if (fs.constants.O_DIRECT === undefined) return false;
  try {
    fs.closeSync(fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_DIRECT | fs.constants.O_NOFOLLOW));
    return true;
  } catch {
    return false;
  }
}

export function fromQemuImg(e: unknown): unknown {
  if (!(e instanceof QemuImgError)) return e;
  const kind = (
    {
      'no-space': 'no-space',
      locked: 'in-use',
      limit: 'limit',
      'no-direct-io': 'failed',
      cancelled: 'cancelled',
      failed: 'failed',
    } as const
  )[e.failure];
  return new DiskError(kind, e.message);
}
