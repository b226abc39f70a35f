import { createHash } from 'node:crypto';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Metadata } from '@grpc/grpc-js';
import { Controller, Inject } from '@nestjs/common';
import { GrpcMethod, GrpcStreamMethod } from '@nestjs/microservices';
import { Observable } from 'rxjs';
import { storageV1 } from '@flotilla/contracts';
import { DomainError, ErrorCode, invalidArgument } from '@flotilla/domain';
import {
  attachSrDirectory,
  CopyFormat,
  DeclaredFormat,
  detachSrDirectory,
  DiskFileInfo,
  DiskFiles,
  DriverError,
  HypervisorDriver,
  isPlainFileName,
  scanSrDirectory,
  statSrDirectory,
  tempFile,
  TempFile,
} from '@flotilla/hypervisor';
import { ServiceIdentity } from '@flotilla/platform';
import { HYPERVISOR_DRIVER } from '../agent.grpc';
import { PerVmQueue } from '../host-state';
import { HostImageCatalogue } from '../image-catalogue';
import { SrPaths } from '../sr-paths';
import { toDomainError } from './storage-agent.errors';

const F = storageV1.DiskFormat;
/** Export chunks: at most 1 MiB per message (ExportVdiResponse). */
const CHUNK_BYTES = 1024 * 1024;
const MAX_IMPORT_BYTES = 64 * 1024 ** 4;
/** Progress messages are sent when the fraction moved by at least this much (qemu-img reports every 1 %). */
const PROGRESS_STEP = 0.01;

interface Located {
  dir: string;
  file: string;
  path: string;
}

/**
 * StorageAgentService: the storage service's file work on this host's SR directories, over the disks
 * library of @flotilla/hypervisor. Every path is checked by SrPaths (roots, no traversal, no symlinks, the
 * SR marker), every call is idempotent, and work on one file is serialised. Live variants (vm_id) go through
 * the hypervisor driver.
 */
@Controller()
export class StorageAgentGrpc implements storageV1.StorageAgentServiceController {
  /** One operation at a time per file (a repeated call waits for the first and then finds it done). */
  private readonly perFile = new PerVmQueue();

  constructor(
    @Inject(ServiceIdentity) private readonly identity: ServiceIdentity,
    @Inject(HYPERVISOR_DRIVER) private readonly driver: HypervisorDriver,
    @Inject(SrPaths) private readonly srPaths: SrPaths,
    @Inject(HostImageCatalogue) private readonly catalogue: HostImageCatalogue,
    @Inject(DiskFiles) private readonly disks: DiskFiles,
  ) {}

  @GrpcMethod('StorageAgentService', 'AttachSr')
  attachSr(req: storageV1.AttachSrRequest, md: Metadata): Promise<storageV1.AttachSrResponse> {
    return this.unary(md, async () => {
      const dir = this.srPaths.directory(req.srPath);
      return attachSrDirectory({
        dir,
        srId: req.srId,
        createDirectory: req.createDirectory,
        adoptExisting: req.adoptExisting,
      });
    });
  }

  @GrpcMethod('StorageAgentService', 'StatSr')
  statSr(req: storageV1.StatSrRequest, md: Metadata): Promise<storageV1.StatSrResponse> {
    return this.unary(md, async () => statSrDirectory(this.srPaths.srDirectory(req.srId, req.srPath)));
  }

  @GrpcMethod('StorageAgentService', 'ScanSrFiles')
  scanSrFiles(req: storageV1.ScanSrFilesRequest, md: Metadata): Promise<storageV1.ScanSrFilesResponse> {
    return this.unary(md, async () => ({
      files: scanSrDirectory(this.srPaths.srDirectory(req.srId, req.srPath), this.disks).map((f) => ({
        info: f.info ? toInfo(f.info) : emptyInfo(f.file),
        refusedReason: f.refusedReason ?? '',
      })),
    }));
  }

  @GrpcMethod('StorageAgentService', 'DetachSr')
  detachSr(req: storageV1.DetachSrRequest, md: Metadata): Promise<storageV1.DetachSrResponse> {
    return this.unary(md, async () => {
      const dir = this.srPaths.directory(req.srPath);
      const marker = this.srPaths.markerOf(dir);
      if (marker && marker !== req.srId)
        throw new DomainError(
          ErrorCode.FailedPrecondition,
          `${dir} holds the marker of SR ${marker}, not ${req.srId}: nothing detached`,
        );
      return detachSrDirectory({ dir, removeDirectory: req.removeDirectory });
    });
  }

  @GrpcMethod('StorageAgentService', 'CreateDisk')
  createDisk(req: storageV1.CreateDiskRequest, md: Metadata): Promise<storageV1.CreateDiskResponse> {
    return this.unary(md, async () => {
      const at = this.locate(req.disk, 'disk');
      return this.serial(at, async () => ({
        info: toInfo(
          await this.disks.create({
            dir: at.dir,
            file: at.file,
            virtualSizeBytes: req.virtualSizeBytes,
            backingFile: req.backingFile || undefined,
          }),
        ),
      }));
    });
  }

  @GrpcMethod('StorageAgentService', 'GetDiskInfo')
  getDiskInfo(req: storageV1.GetDiskInfoRequest, md: Metadata): Promise<storageV1.GetDiskInfoResponse> {
    return this.unary(md, async () => {
      const at = this.locate(req.disk, 'disk');
      return { info: toInfo(await this.disks.info({ dir: at.dir, file: at.file })) };
    });
  }

  @GrpcMethod('StorageAgentService', 'ResizeDisk')
  resizeDisk(req: storageV1.ResizeDiskRequest, md: Metadata): Promise<storageV1.ResizeDiskResponse> {
    return this.unary(md, async () => {
      const at = this.locate(req.disk, 'disk');
      return this.serial(at, async () => {
        if (!req.vmId)
          return {
            info: toInfo(
              await this.disks.resize({ dir: at.dir, file: at.file, virtualSizeBytes: req.virtualSizeBytes }),
            ),
          };
        const [top] = this.disks.chain(at.dir, at.file);
        const size = this.disks.growTarget(top, req.virtualSizeBytes);
        await this.assertOpenBy(req.vmId, at);
        if (size !== top.image.virtualSizeBytes) await this.driver.resizeDisk(req.vmId, at.path, size);
        return { info: toInfo(this.disks.describe(at.dir, at.file)) };
      });
    });
  }

  @GrpcMethod('StorageAgentService', 'DeleteDisk')
  deleteDisk(req: storageV1.DeleteDiskRequest, md: Metadata): Promise<storageV1.DeleteDiskResponse> {
    return this.unary(md, async () => {
      const at = this.locate(req.disk, 'disk');
      return this.serial(at, async () => {
        const holders = await this.vmsHolding(at.path);
        if (holders.length)
          throw new DomainError(
            ErrorCode.FailedPrecondition,
            `disk file ${at.file} is open by running VM ${holders.join(', ')}: detach it or stop the VM first`,
          );
        await this.disks.delete({ dir: at.dir, file: at.file });
        return {};
      });
    });
  }

  @GrpcMethod('StorageAgentService', 'SnapshotDisk')
  snapshotDisk(req: storageV1.SnapshotDiskRequest, md: Metadata): Promise<storageV1.SnapshotDiskResponse> {
    return this.unary(md, async () => {
      const at = this.locate(req.disk, 'disk');
      const top = this.sibling(at, req.newTopFile, 'new_top_file');
      return this.serial(at, async () => {
        if (!req.vmId) {
          const holders = await this.vmsHolding(at.path);
          if (holders.length)
            throw new DomainError(
              ErrorCode.FailedPrecondition,
              `disk file ${at.file} is in use by running VM ${holders.join(', ')}: pass vm_id for a live snapshot`,
              { field: 'vm_id' },
            );
          const { frozen, newTop } = await this.disks.snapshot({
            dir: at.dir,
            file: at.file,
            newTopFile: top.file,
          });
          return { frozen: toInfo(frozen), newTop: toInfo(newTop) };
        }
        const open = await this.assertOpenBy(req.vmId, at, top);
        const existed = fs.existsSync(top.path);
        const { frozen, newTop } = await this.disks.snapshot({
          dir: at.dir,
          file: at.file,
          newTopFile: top.file,
        });
        if (!open.includes(top.path)) {
          try {
            await this.driver.snapshotDisk(req.vmId, at.path, top.path);
          } catch (e) {
            // The VM did not switch: the overlay this call made would be a stray file.
            if (!existed) fs.rmSync(top.path, { force: true });
            throw e;
          }
        }
        return { frozen: toInfo(frozen), newTop: toInfo(newTop) };
      });
    });
  }

  @GrpcMethod('StorageAgentService', 'RebaseDisk')
  rebaseDisk(req: storageV1.RebaseDiskRequest, md: Metadata): Promise<storageV1.RebaseDiskResponse> {
    return this.unary(md, async () => {
      const at = this.locate(req.disk, 'disk');
      const base = req.newBackingFile
        ? this.sibling(at, req.newBackingFile, 'new_backing_file').file
        : undefined;
      return this.serial(at, async () => {
        if (!req.vmId)
          return {
            info: toInfo(await this.disks.rebase({ dir: at.dir, file: at.file, newBackingFile: base })),
          };
        const nodes = this.disks.chain(at.dir, at.file);
        if (nodes[0].image.backingFile !== base) {
          if (base && !nodes.slice(2).some((n) => n.file === base))
            throw invalidArgument('new_backing_file', `${base} is not below the backing file of ${at.file}`);
          await this.assertOpenBy(req.vmId, at);
          await this.driver.streamDisk(req.vmId, at.path, base);
        }
        return { info: toInfo(this.disks.describe(at.dir, at.file)) };
      });
    });
  }

  @GrpcMethod('StorageAgentService', 'CopyDisk')
  copyDisk(req: storageV1.CopyDiskRequest, md: Metadata): Observable<storageV1.CopyDiskResponse> {
    return this.stream(md, async (emit, signal) => {
      const target = this.locate(req.target, 'target');
      const format = copyFormat(req.targetFormat, 'target_format');
      let source: Parameters<DiskFiles['copy']>[0]['source'];
      if (req.sourceDisk) {
        if (req.sourceFormat !== F.DISK_FORMAT_UNSPECIFIED && req.sourceFormat !== F.DISK_FORMAT_QCOW2)
          throw invalidArgument('source_format', 'SR files are qcow2: leave it unset or QCOW2');
        const from = this.locate(req.sourceDisk, 'source_disk');
        source = { dir: from.dir, file: from.file };
      } else if (req.catalogueFile) {
        source = {
          path: this.catalogue.resolve('catalogue_file', req.catalogueFile),
          format: declaredFormat(req.sourceFormat, 'source_format'),
        };
      } else throw invalidArgument('source', 'give source_disk or catalogue_file');
      let last = -1;
      const info = await this.serial(target, () =>
        this.disks.copy({
          dir: target.dir,
          file: target.file,
          source,
          format,
          backingFile: req.targetBackingFile || undefined,
          signal,
          onProgress: (fraction) => {
            if (fraction - last < PROGRESS_STEP && fraction < 1) return;
            last = fraction;
            emit({ fraction, done: undefined });
          },
        }),
      );
      emit({ fraction: 1, done: toInfo(info) });
    });
  }

  /** Client stream: the header, then the bytes in order, into a staging file of the target SR. */
  @GrpcStreamMethod('StorageAgentService', 'ImportDisk')
  importDisk(
    requests: Observable<storageV1.ImportDiskRequest>,
    md: Metadata,
  ): Observable<storageV1.ImportDiskResponse> {
    this.identity.verify(md);
    return new Observable((subscriber) => {
      const abort = new AbortController();
      let staging: TempFile | undefined;
      let fd: number | undefined;
      let header: storageV1.ImportDiskHeader | undefined;
      let target: Located | undefined;
      let received = 0;
      const hash = createHash('sha256');
      const fail = (e: unknown) => {
        cleanup();
        subscriber.error(toDomainError(e));
      };
      const cleanup = () => {
        if (fd !== undefined) fs.closeSync(fd);
        fd = undefined;
        staging?.discard();
      };
      const sub = requests.subscribe({
        next: (req) => {
          if (subscriber.closed) return;
          try {
            if (!header) {
              if (!req.header) throw invalidArgument('header', 'the first message must be the header');
              header = req.header;
              target = this.locate(header.target, 'header.target');
              declaredFormat(header.format, 'header.format');
              if (
                !Number.isSafeInteger(header.sizeBytes) ||
                header.sizeBytes <= 0 ||
                header.sizeBytes > MAX_IMPORT_BYTES
              )
                throw invalidArgument(
                  'header.size_bytes',
                  'must be the exact number of bytes, 1 byte to 64 TiB',
                );
              if (header.sha256 && !/^[0-9a-f]{64}$/.test(header.sha256))
                throw invalidArgument('header.sha256', 'must be 64 lowercase hex digits');
              staging = tempFile(target.dir, `import.${target.file}`);
              fd = fs.openSync(staging.path, 'wx', 0o600);
              return;
            }
            if (req.header) throw invalidArgument('header', 'only the first message may be a header');
            const chunk = Buffer.from(req.chunk ?? []);
            received += chunk.length;
            if (received > header.sizeBytes)
              throw invalidArgument('chunk', `more bytes than header.size_bytes (${header.sizeBytes})`);
            hash.update(chunk);
            if (fd !== undefined) fs.writeSync(fd, chunk);
          } catch (e) {
            fail(e);
          }
        },
        error: (e: unknown) => fail(e),
        complete: () => {
          if (subscriber.closed) return;
          void (async () => {
            const [h, staged, at, written] = [header, staging, target, fd];
            if (!h || !staged || !at || written === undefined)
              throw invalidArgument('header', 'the stream carried no header');
            fs.fsyncSync(written);
            fs.closeSync(written);
            fd = undefined;
            if (received !== h.sizeBytes)
              throw invalidArgument(
                'header.size_bytes',
                `received ${received} bytes, the header announced ${h.sizeBytes}: the upload is incomplete`,
              );
            const sha256 = hash.digest('hex');
            if (h.sha256 && h.sha256 !== sha256)
              throw invalidArgument(
                'header.sha256',
                `the bytes received have SHA-256 ${sha256}: the upload is corrupt`,
              );
            const info = await this.serial(at, () =>
              this.disks.importStaged({
                dir: at.dir,
                staging: staged,
                format: declaredFormat(h.format, 'header.format'),
                file: at.file,
                signal: abort.signal,
              }),
            );
            subscriber.next({ info: toInfo(info), sha256 });
            subscriber.complete();
          })().catch(fail);
        },
      });
      return () => {
        abort.abort();
        sub.unsubscribe();
        // A cancelled upload leaves nothing (importStaged discards its staging itself once it runs).
        if (fd !== undefined) cleanup();
      };
    });
  }

  /**
   * Server stream: staging_progress while qemu-img writes the standalone image into a staging file of the
   * SR, then the header, chunks of at most 1 MiB read at the pace the client takes them, the SHA-256 last.
   * The staging file is removed when the stream ends, whatever ends it.
   */
  @GrpcMethod('StorageAgentService', 'ExportDisk')
  exportDisk(
    req: storageV1.ExportDiskRequest,
    md: Metadata,
    call?: NodeJS.WritableStream & { writableNeedDrain?: boolean },
  ): Observable<storageV1.ExportDiskResponse> {
    return this.stream(md, async (emit, signal) => {
      const at = this.locate(req.disk, 'disk');
      const format = copyFormat(req.format, 'format');
      if (req.compress && format !== 'qcow2')
        throw invalidArgument('compress', 'only QCOW2 exports are compressed');
      const purpose = req.stagingFile ? this.sibling(at, req.stagingFile, 'staging_file').file : undefined;
      let last = -1;
      const staged = await this.disks.stageExport({
        dir: at.dir,
        file: at.file,
        format,
        compress: req.compress,
        purpose,
        signal,
        onProgress: (fraction) => {
          if (fraction - last < PROGRESS_STEP && fraction < 1) return;
          last = fraction;
          emit({ stagingProgress: fraction });
        },
      });
      const fd = fs.openSync(staged.staging.path, 'r');
      try {
        emit({
          header: {
            format: req.format,
            sizeBytes: staged.sizeBytes,
            virtualSizeBytes: staged.virtualSizeBytes,
          },
        });
        const hash = createHash('sha256');
        for (let offset = 0; offset < staged.sizeBytes;) {
          if (signal.aborted) throw new DomainError(ErrorCode.Cancelled, 'export cancelled');
          const chunk = Buffer.allocUnsafe(Math.min(CHUNK_BYTES, staged.sizeBytes - offset));
          const n = fs.readSync(fd, chunk, 0, chunk.length, offset);
          if (n <= 0) throw new DomainError(ErrorCode.Internal, `staging file of ${at.file} ended early`);
          offset += n;
          const bytes = chunk.subarray(0, n);
          hash.update(bytes);
          emit({ chunk: bytes });
          // Read on only as fast as the client takes the stream.
          if (call?.writableNeedDrain) await Promise.race([once(call, 'drain'), once(signal, 'abort')]);
        }
        emit({ sha256: hash.digest('hex') });
      } finally {
        fs.closeSync(fd);
        staged.staging.discard();
      }
    });
  }

  // -------------------------------------------------------------------------------------------------------

  private locate(loc: storageV1.DiskLocation | undefined, field: string): Located {
    if (!loc) throw invalidArgument(field, 'is required');
    if (!loc.srId) throw invalidArgument(`${field}.sr_id`, 'is required');
    const full = this.srPaths.file(loc.srId, loc.srPath, loc.file, `${field}.file`, `${field}.sr_path`);
    return { dir: path.dirname(full), file: loc.file, path: full };
  }

  /** Another plain file name of the same (already checked) SR directory. */
  private sibling(at: Located, file: string, field: string): Located {
    if (!isPlainFileName(file))
      throw invalidArgument(
        field,
        `must be a plain file name (letters, digits, '.', '_', '-'; not starting with '.'), got ${JSON.stringify(file.slice(0, 80))}`,
      );
    return { dir: at.dir, file, path: path.join(at.dir, file) };
  }

  private serial<T>(at: Located, work: () => Promise<T>): Promise<T> {
    return this.perFile.run(at.path, work);
  }

  /** Running VMs of this host that have `file` open (any node of any chain). */
  private async vmsHolding(file: string): Promise<string[]> {
    const running = (await this.driver.list()).filter(
      (s) => s.powerState === 'RUNNING' || s.powerState === 'PAUSED',
    );
    const holders: string[] = [];
    for (const vm of running) {
      let open: string[];
      try {
        open = await this.driver.openDiskFiles(vm.vmId);
      } catch (e) {
        if (e instanceof DriverError && e.kind === 'not-found') continue;
        if (e instanceof DriverError && e.kind === 'unsupported')
          throw new DomainError(
            ErrorCode.FailedPrecondition,
            `cannot tell whether running VM ${vm.vmId} has ${path.basename(file)} open (${e.message}): stop the VM first`,
          );
        throw e;
      }
      if (open.includes(file)) holders.push(vm.vmId);
    }
    return holders;
  }

  /** The files a running VM has open, refused unless `at` is among them (or `alt`, a repeat's result). */
  private async assertOpenBy(vmId: string, at: Located, alt?: Located): Promise<string[]> {
    const status = await this.driver.status(vmId);
    if (!status || (status.powerState !== 'RUNNING' && status.powerState !== 'PAUSED'))
      throw new DomainError(
        ErrorCode.FailedPrecondition,
        `vm ${vmId} is not running on this host: repeat without vm_id to work on the file offline`,
        { field: 'vm_id' },
      );
    const open = await this.driver.openDiskFiles(vmId);
    if (!open.includes(at.path) && !(alt && open.includes(alt.path)))
      throw new DomainError(ErrorCode.FailedPrecondition, `vm ${vmId} does not have ${at.file} open`, {
        field: 'vm_id',
      });
    return open;
  }

  private async unary<T>(md: Metadata, work: () => Promise<T>): Promise<T> {
    this.identity.verify(md);
    try {
      return await work();
    } catch (e) {
      throw toDomainError(e);
    }
  }

  /** A server stream whose work emits messages; unsubscribing (client cancel) aborts the work. */
  private stream<T>(
    md: Metadata,
    work: (emit: (message: T) => void, signal: AbortSignal) => Promise<void>,
  ): Observable<T> {
    this.identity.verify(md);
    return new Observable<T>((subscriber) => {
      const abort = new AbortController();
      work((m) => subscriber.next(m), abort.signal).then(
        () => subscriber.complete(),
        (e: unknown) => subscriber.error(toDomainError(e)),
      );
      return () => abort.abort();
    });
  }
}

function toInfo(info: DiskFileInfo): storageV1.DiskInfo {
  return {
    file: info.file,
    format: protoFormat[info.format],
    virtualSizeBytes: info.virtualSizeBytes,
    physicalBytes: info.physicalBytes,
    backingFile: info.backingFile ?? '',
  };
}

function emptyInfo(file: string): storageV1.DiskInfo {
  return { file, format: F.DISK_FORMAT_UNSPECIFIED, virtualSizeBytes: 0, physicalBytes: 0, backingFile: '' };
}

const protoFormat: Record<DeclaredFormat, storageV1.DiskFormat> = {
  qcow2: F.DISK_FORMAT_QCOW2,
  raw: F.DISK_FORMAT_RAW,
  vmdk: F.DISK_FORMAT_VMDK,
  vhd: F.DISK_FORMAT_VHD,
};

function declaredFormat(format: storageV1.DiskFormat, field: string): DeclaredFormat {
  const found = (Object.keys(protoFormat) as DeclaredFormat[]).find((k) => protoFormat[k] === format);
  if (!found) throw invalidArgument(field, 'must be QCOW2, RAW, VMDK or VHD: the format is never guessed');
  return found;
}

function copyFormat(format: storageV1.DiskFormat, field: string): CopyFormat {
  if (format === F.DISK_FORMAT_UNSPECIFIED || format === F.DISK_FORMAT_QCOW2) return 'qcow2';
  if (format === F.DISK_FORMAT_RAW) return 'raw';
  if (format === F.DISK_FORMAT_VMDK) return 'vmdk';
  throw invalidArgument(field, 'must be QCOW2, RAW or VMDK (streamOptimized)');
}
