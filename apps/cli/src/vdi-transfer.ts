import type * as grpc from '@grpc/grpc-js';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { storageV1 } from '@flotilla/contracts';
import { drained } from '@flotilla/platform';
import { CliError, ExitCode } from './errors';

/**
 * Disk images to and from VdiService's streams: ImportVdi (client stream: a header, then the bytes) and
 * ExportVdi (server stream: staging progress, a header, the bytes, their SHA-256). Both move 1 MiB
 * messages with flow control — a file is read only as fast as the call takes it, and a download is
 * written as it comes — so an image of any size costs a few MiB of memory.
 */

/** The image bytes per message; ImportVdi takes at most 1 MiB. */
export const chunkBytes = 1024 * 1024;

type Callback<R> = (err: grpc.ServiceError | null, reply?: R) => void;
/** The VdiService methods of a grpc-js generic client (makeGenericClientConstructor). */
interface VdiStreams {
  ImportVdi(
    metadata: grpc.Metadata,
    options: grpc.CallOptions,
    callback: Callback<storageV1.ImportVdiResponse>,
  ): grpc.ClientWritableStream<storageV1.ImportVdiRequest>;
  ExportVdi(
    request: storageV1.ExportVdiRequest,
    metadata: grpc.Metadata,
    options: grpc.CallOptions,
  ): grpc.ClientReadableStream<ExportMessage>;
}

/** ExportVdiResponse as proto-loader decodes it: the oneof's member name in `part`. */
type ExportMessage = storageV1.ExportVdiResponse & {
  part?: 'header' | 'chunk' | 'sha256' | 'stagingProgress';
};

/** Lowercase hex SHA-256 of a file, reading it once; progress in bytes read. */
export async function sha256OfFile(
  file: string,
  o: { onProgress?: (bytes: number) => void; signal?: AbortSignal } = {},
): Promise<string> {
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const chunk of fs.createReadStream(file, { highWaterMark: chunkBytes, signal: o.signal })) {
    hash.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
    o.onProgress?.(bytes);
  }
  return hash.digest('hex');
}

export interface UploadOptions {
  client: grpc.Client;
  metadata: grpc.Metadata;
  /** size_bytes must be the file's size: the server checks it against the bytes it receives. */
  header: storageV1.ImportVdiHeader;
  file: string;
  onProgress?: (sentBytes: number) => void;
  signal?: AbortSignal;
}

/**
 * Streams `file` as one ImportVdi call and resolves with the response (sent once every byte is in; the
 * operation then goes on with inspection and conversion). An error from the server ends the upload at once;
 * an abort cancels the call, and the server removes the half-made VDI. A file that changes size while it
 * is sent is refused here before the server sees a wrong count.
 */
export async function uploadImage(o: UploadOptions): Promise<storageV1.ImportVdiResponse> {
  const client = o.client as unknown as VdiStreams;
  let settled = false;
  let call!: grpc.ClientWritableStream<storageV1.ImportVdiRequest>;
  const reply = new Promise<storageV1.ImportVdiResponse>((resolve, reject) => {
    call = client.ImportVdi.call(o.client, o.metadata, {}, (err, res) => {
      settled = true;
      if (err) reject(err);
      else resolve(res as storageV1.ImportVdiResponse);
    });
  });
  // Settles as soon as the server answers, even while the file is still being read.
  reply.catch(() => undefined);
  const abort = () => call.cancel();
  o.signal?.addEventListener('abort', abort, { once: true });
  const file = fs.createReadStream(o.file, { highWaterMark: chunkBytes });
  try {
    call.write({ header: o.header });
    let sent = 0;
    for await (const chunk of file) {
      if (settled) break;
      const bytes = chunk as Buffer;
      sent += bytes.length;
      if (sent > o.header.sizeBytes) break;
      if (!call.write({ chunk: bytes })) await Promise.race([drained(call), reply.catch(() => undefined)]);
      o.onProgress?.(sent);
    }
    if (!settled && sent !== o.header.sizeBytes) {
      call.cancel();
      throw new CliError(
        `${o.file} changed while it was sent (${sent} bytes read, ${o.header.sizeBytes} expected): nothing was imported`,
        ExitCode.Other,
      );
    }
    if (!settled) call.end();
    return await reply;
  } catch (e) {
    if (o.signal?.aborted) throw new CliError('upload cancelled: nothing was imported', ExitCode.Interrupted);
    throw e;
  } finally {
    file.destroy();
    o.signal?.removeEventListener('abort', abort);
  }
}

export interface DownloadOptions {
  client: grpc.Client;
  metadata: grpc.Metadata;
  request: storageV1.ExportVdiRequest;
  /** Where the image goes; written to a temporary file beside it and renamed once verified. */
  out: string;
  /** Replace `out` if it exists. */
  overwrite: boolean;
  onStaging?: (fraction: number) => void;
  onHeader?: (header: storageV1.ExportVdiHeader) => void;
  onProgress?: (receivedBytes: number) => void;
  signal?: AbortSignal;
}

export interface Downloaded {
  path: string;
  bytes: number;
  sha256: string;
  header: storageV1.ExportVdiHeader;
}

/**
 * Streams one ExportVdi call into `out`, atomically: the bytes go to a temporary file in the same directory
 * (mode 0600: a disk may hold secrets), which is synced and renamed over `out` only when the byte count
 * matches the header and the SHA-256 the server sent last matches the bytes received. Anything else —
 * an error, a mismatch, an abort — removes the temporary file and leaves `out` as it was.
 */
export async function downloadImage(o: DownloadOptions): Promise<Downloaded> {
  const target = path.resolve(o.out);
  if (!o.overwrite && fs.existsSync(target))
    throw new CliError(
      `${target} exists: choose another -o or pass --force to replace it`,
      ExitCode.Conflict,
    );
  const temp = path.join(
    path.dirname(target),
    `.${path.basename(target)}.${randomBytes(4).toString('hex')}.part`,
  );
  const fh = await fs.promises.open(temp, 'wx', 0o600);
  let closed = false;
  const client = o.client as unknown as VdiStreams;
  const stream = client.ExportVdi.call(o.client, o.request, o.metadata, {});
  const abort = () => stream.cancel();
  o.signal?.addEventListener('abort', abort, { once: true });
  try {
    const hash = createHash('sha256');
    let header: storageV1.ExportVdiHeader | undefined;
    let serverSha256: string | undefined;
    let bytes = 0;
    for await (const m of stream as AsyncIterable<ExportMessage>) {
      const part = m.part ?? partOf(m);
      if (part === 'stagingProgress') o.onStaging?.(m.stagingProgress ?? 0);
      else if (part === 'header') {
        header = m.header;
        if (header) o.onHeader?.(header);
      } else if (part === 'chunk') {
        if (!header) throw protocolError('image bytes came before the header');
        const chunk = Buffer.from(m.chunk ?? []);
        hash.update(chunk);
        bytes += chunk.length;
        if (bytes > header.sizeBytes)
          throw protocolError(`more than the ${header.sizeBytes} bytes announced`);
        await fh.write(chunk);
        o.onProgress?.(bytes);
      } else if (part === 'sha256') serverSha256 = m.sha256;
    }
    if (!header) throw protocolError('the export ended without a header');
    if (bytes !== header.sizeBytes)
      throw protocolError(`${bytes} bytes received, ${header.sizeBytes} announced`);
    const sha256 = hash.digest('hex');
    if (!serverSha256) throw protocolError('the export ended without its SHA-256');
    if (serverSha256 !== sha256)
      throw new CliError(
        `the export's SHA-256 does not match its bytes (server ${serverSha256}, received ${sha256}): ${target} was not written`,
        ExitCode.Other,
      );
    await fh.sync();
    await fh.close();
    closed = true;
    await fs.promises.rename(temp, target);
    await syncDirectory(path.dirname(target));
    return { path: target, bytes, sha256, header };
  } catch (e) {
    if (o.signal?.aborted)
      throw new CliError(`export cancelled: ${target} was not written`, ExitCode.Interrupted);
    throw e;
  } finally {
    o.signal?.removeEventListener('abort', abort);
    if (!closed) {
      stream.cancel();
      await fh.close().catch(() => undefined);
      await fs.promises.rm(temp, { force: true });
    }
  }
}

function partOf(m: storageV1.ExportVdiResponse): ExportMessage['part'] {
  if (m.header) return 'header';
  if (m.chunk) return 'chunk';
  if (m.sha256) return 'sha256';
  if (m.stagingProgress !== undefined) return 'stagingProgress';
  return undefined;
}

function protocolError(what: string): CliError {
  return new CliError(`the export stream is broken: ${what}; nothing was written`, ExitCode.Other);
}

/** Makes a rename durable: the directory entry is synced too (not possible on every platform). */
async function syncDirectory(dir: string): Promise<void> {
  const d = await fs.promises.open(dir, 'r').catch(() => undefined);
  if (!d) return;
  try {
    await d.sync();
  } catch {
    // Some file systems refuse fsync on directories; the rename itself is still atomic.
  } finally {
    await d.close();
  }
}

/** The image format flag values, as the CLI takes them. */
export const formatNames = {
  raw: 'DISK_FORMAT_RAW',
  qcow2: 'DISK_FORMAT_QCOW2',
  vmdk: 'DISK_FORMAT_VMDK',
  vhd: 'DISK_FORMAT_VHD',
} as const;
export type FormatName = keyof typeof formatNames;

export function diskFormat(name: FormatName): storageV1.DiskFormat {
  return storageV1.DiskFormat[formatNames[name]];
}

/** The file name an export gets by default: "<vdi name>.<format>" with anything odd replaced by '_'. */
export function defaultExportName(vdiName: string, format: FormatName): string {
  const base = vdiName.replace(/[^A-Za-z0-9._-]/g, '_').replace(/^\.+/, '_') || 'disk';
  return `${base}.${format === 'raw' ? 'img' : format}`;
}
