import type * as grpc from '@grpc/grpc-js';
import { createHash } from 'node:crypto';
import type { Readable, Writable } from 'node:stream';
import { storageV1 } from '@flotilla/contracts';
import { drained, type GrpcClient } from '@flotilla/platform';

/**
 * Image bytes between HTTP and VdiService's streams (as apps/cli/src/vdi-transfer.ts does between files and
 * them): ImportVdi takes a header then ≤ 1 MiB chunks; ExportVdi sends staging progress, a header, the
 * bytes and their SHA-256. Both follow backpressure, so an image of any size costs a few MiB.
 */
export const chunkBytes = 1024 * 1024;

type ExportMessage = storageV1.ExportVdiResponse & {
  part?: 'header' | 'chunk' | 'sha256' | 'stagingProgress';
};

/** Streams exactly header.sizeBytes bytes from `source` as one ImportVdi call. */
export async function importVdi(o: {
  vdis: GrpcClient<storageV1.VdiServiceClient>;
  metadata: grpc.Metadata;
  header: storageV1.ImportVdiHeader;
  source: Readable;
}): Promise<storageV1.ImportVdiResponse> {
  let settled = false;
  let call!: grpc.ClientWritableStream<storageV1.ImportVdiRequest>;
  const reply = new Promise<storageV1.ImportVdiResponse>((resolve, reject) => {
    call = o.vdis.clientStream<storageV1.ImportVdiRequest, storageV1.ImportVdiResponse>(
      'ImportVdi',
      (err, res) => {
        settled = true;
        if (err) reject(err);
        else if (res) resolve(res);
        else reject(new Error('ImportVdi ended without a response'));
      },
      { metadata: o.metadata },
    );
  });
  reply.catch(() => undefined);
  call.write({ header: o.header });
  let sent = 0;
  try {
    for await (const piece of o.source) {
      if (settled) break;
      let bytes = piece as Buffer;
      while (bytes.length > 0) {
        const chunk = bytes.subarray(0, chunkBytes);
        bytes = bytes.subarray(chunk.length);
        sent += chunk.length;
        if (sent > o.header.sizeBytes) break;
        if (!call.write({ chunk })) await Promise.race([drained(call), reply.catch(() => undefined)]);
      }
      if (sent > o.header.sizeBytes) break;
    }
  } catch (e) {
    call.cancel();
    throw e;
  }
  if (!settled && sent !== o.header.sizeBytes) {
    call.cancel();
    throw new SizeMismatchError(sent, o.header.sizeBytes);
  }
  if (!settled) call.end();
  return reply;
}

export class SizeMismatchError extends Error {
  constructor(
    readonly received: number,
    readonly expected: number,
  ) {
    super(
      `the upload carried ${received > expected ? 'more than ' : ''}${received} bytes, ${expected} were announced`,
    );
  }
}

/**
 * Streams one ExportVdi call into `sink`. `onHeader` runs once staging is done, before the first byte
 * (the HTTP status and Content-Length are sent there); an error before it is the caller's to answer.
 * A wrong byte count or SHA-256 after it destroys the sink, so the client sees a broken download.
 */
export async function exportVdi(o: {
  vdis: GrpcClient<storageV1.VdiServiceClient>;
  metadata: grpc.Metadata;
  request: storageV1.ExportVdiRequest;
  onHeader: (header: storageV1.ExportVdiHeader) => void;
  sink: Writable;
}): Promise<void> {
  const stream = o.vdis.stream<ExportMessage>('ExportVdi', o.request, { metadata: o.metadata });
  const closed = () => stream.cancel();
  o.sink.once('close', closed);
  try {
    const hash = createHash('sha256');
    let header: storageV1.ExportVdiHeader | undefined;
    let bytes = 0;
    let serverSha256 = '';
    for await (const m of stream) {
      const part = m.part ?? (m.header ? 'header' : m.chunk ? 'chunk' : m.sha256 ? 'sha256' : undefined);
      if (part === 'header' && m.header) {
        header = m.header;
        o.onHeader(header);
      } else if (part === 'chunk') {
        if (!header) throw new Error('the export sent bytes before its header');
        const chunk = Buffer.from(m.chunk ?? []);
        hash.update(chunk);
        bytes += chunk.length;
        if (!o.sink.write(chunk)) await drained(o.sink);
      } else if (part === 'sha256') serverSha256 = m.sha256 ?? '';
    }
    if (!header) throw new Error('the export ended without a header');
    if (bytes !== Number(header.sizeBytes) || serverSha256 !== hash.digest('hex'))
      throw new Error(
        `the export was broken (${bytes} of ${header.sizeBytes} bytes, SHA-256 mismatch or missing)`,
      );
  } finally {
    o.sink.off('close', closed);
  }
}
