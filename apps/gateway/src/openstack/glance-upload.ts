import type { IncomingMessage } from 'node:http';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Metadata } from '@grpc/grpc-js';
import { commonV1, storageV1 } from '@flotilla/contracts';
import type { Logger } from '@flotilla/platform';
import type { PoolApi } from '../compat/pool-api';
import { fromGrpc, OpenStackError } from './errors';
import { importFormats, QueuedImage } from './glance-documents';
import { diskFormatLabel, glanceIdLabel, isTerminal, sizeLabel } from './pool-lists';
import { header } from './request';
import { importVdi, SizeMismatchError } from './vdi-streams';

/** The SR labelled flotilla.default=true, else the one named "local" (as `flotilla up` makes it). */
const defaultSrLabel = 'flotilla.default';
const defaultSrName = 'local';
const operationWaitMs = 60_000;
const defaultSpoolLimitBytes = 8 * 2 ** 30;

interface Upload {
  pool: PoolApi;
  call: { metadata: Metadata };
  logger: Logger;
  image: QueuedImage & { diskFormat: string };
  req: IncomingMessage;
  spoolLimitBytes?: number;
}

/**
 * Stores a Glance upload as the CLI's `vdi import` + `image register` do: the bytes go to the default SR
 * through ImportVdi (a chunked upload is spooled to a temporary file first: ImportVdi needs the size),
 * the VDI is registered as a DISK image labelled with the Glance id, format and size, and the imported VDI
 * is destroyed (the image keeps its own base copy). Resolves once the image is AVAILABLE.
 */
export async function storeImageData(o: Upload): Promise<void> {
  const { image, req } = o;
  const id = image.id;
  const sr = await defaultSr(o);
  let spooled: string | undefined;
  try {
    let source: Readable = req;
    let size = Number(header(req, 'content-length') ?? NaN);
    if (!Number.isSafeInteger(size) || size < 0) {
      spooled = await spool(req, o.spoolLimitBytes ?? defaultSpoolLimitBytes);
      size = (await fs.promises.stat(spooled)).size;
      source = fs.createReadStream(spooled, { highWaterMark: 1024 * 1024 });
    }
    if (size === 0) throw new OpenStackError(400, 'The image data is empty.');
    const call = o.call;
    const imported = await importVdi({
      vdis: o.pool.vdis,
      metadata: call.metadata,
      header: {
        requestId: '',
        srId: sr.id,
        name: `glance ${image.name} (upload)`,
        description: `data uploaded to Glance image ${id}; destroyed once the image is registered`,
        labels: { [glanceIdLabel]: id },
        format: importFormats[image.diskFormat],
        sizeBytes: size,
        sha256: '',
        sourceUrl: '',
        sharable: false,
      },
      source,
    }).catch((e) => {
      if (e instanceof SizeMismatchError)
        throw new OpenStackError(400, `Corrupt image upload: ${e.message}.`);
      throw e;
    });
    const vdiId = imported.vdi?.id ?? '';
    try {
      await settle(o, imported.operation);
      const registered = await o.pool.images.call.registerImage(
        {
          requestId: '',
          name: image.name,
          description: '',
          labels: { [glanceIdLabel]: id, [diskFormatLabel]: image.diskFormat, [sizeLabel]: String(size) },
          visibility:
            image.visibility === 'public'
              ? storageV1.ImageVisibility.IMAGE_VISIBILITY_PUBLIC
              : storageV1.ImageVisibility.IMAGE_VISIBILITY_PRIVATE,
          osType: '',
          architecture: '',
          minDiskBytes: image.minDisk * 2 ** 30,
          minMemoryMib: image.minRam,
          sha256: '',
          srId: sr.id,
          vdiId,
        },
        call,
      );
      await settle(o, registered.operation);
    } finally {
      // The image holds its own base copy: the imported source would only take space.
      await o.pool.vdis.call
        .destroyVdi({ id: vdiId, requestId: '', etag: '' }, call)
        .catch((e) => o.logger.warn({ err: e, vdiId }, 'could not destroy the VDI of a Glance upload'));
    }
  } finally {
    if (spooled) await fs.promises.rm(path.dirname(spooled), { recursive: true, force: true });
  }
}

/** A chunked upload (no Content-Length) goes to a temporary file first: ImportVdi needs the size. */
async function spool(req: IncomingMessage, limit: number): Promise<string> {
  const dir = await fs.promises.mkdtemp(path.join(os.tmpdir(), 'flotilla-glance-'));
  const file = path.join(dir, 'upload');
  let size = 0;
  await pipeline(
    req,
    async function* (chunks: AsyncIterable<Buffer>) {
      for await (const chunk of chunks) {
        size += chunk.length;
        if (size > limit)
          throw new OpenStackError(
            413,
            `Image data too large: a chunked upload may carry at most ${limit} bytes.`,
          );
        yield chunk;
      }
    },
    fs.createWriteStream(file, { mode: 0o600 }),
  ).catch(async (e) => {
    await fs.promises.rm(dir, { recursive: true, force: true });
    throw e;
  });
  return file;
}

async function defaultSr(o: Pick<Upload, 'pool' | 'call'>): Promise<storageV1.Sr> {
  const { srs } = await o.pool.srs.call.listSrs(
    { page: { pageSize: 1000, pageToken: '', filter: '' } },
    o.call,
  );
  const sr =
    srs.find((s) => s.labels?.[defaultSrLabel] === 'true') ?? srs.find((s) => s.name === defaultSrName);
  if (!sr)
    throw new OpenStackError(
      503,
      `No default SR to store image data in: label one ${defaultSrLabel}=true (\`flotilla up\` creates "${defaultSrName}").`,
    );
  return sr;
}

/** Waits for a storage operation; its failure becomes the answer. */
async function settle(o: Pick<Upload, 'pool' | 'call'>, op: commonV1.Operation | undefined): Promise<void> {
  if (!op) return;
  let current = op;
  while (!isTerminal(current)) {
    const waited = await o.pool.storageOperations.call.waitOperation(
      { id: current.id, timeoutMs: operationWaitMs },
      { ...o.call, deadlineMs: operationWaitMs + 10_000 },
    );
    if (!waited.operation) throw new OpenStackError(500, `Operation ${current.id} disappeared.`);
    current = waited.operation;
  }
  if (current.state !== commonV1.OperationState.OPERATION_STATE_SUCCEEDED)
    throw (
      fromGrpc({ code: current.error?.code, details: current.error?.message }) ??
      new OpenStackError(
        500,
        `The ${current.kind} operation ${current.id} failed: ${current.error?.message ?? 'unknown error'}`,
      )
    );
}
