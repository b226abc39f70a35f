import type { IncomingMessage, ServerResponse } from 'node:http';

/** Bodies larger than this are refused before they are read in full (EC2 and OpenStack JSON/form bodies). */
export const defaultBodyLimitBytes = 1024 * 1024;

export class BodyTooLargeError extends Error {
  constructor(readonly limitBytes: number) {
    super(`the request body is larger than ${limitBytes} bytes`);
  }
}

/**
 * Reads a request body up to limitBytes. A declared Content-Length over the limit is refused before
 * reading; a body that grows past it is refused as soon as it does (the rest is not buffered).
 */
export function readBody(req: IncomingMessage, limitBytes = defaultBodyLimitBytes): Promise<Buffer> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > limitBytes) {
    req.resume();
    return Promise.reject(new BodyTooLargeError(limitBytes));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limitBytes) {
        req.removeAllListeners('data');
        req.resume();
        reject(new BodyTooLargeError(limitBytes));
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

/** Splits a request target into its raw path and raw query (no decoding: signatures need the raw bytes). */
export function splitTarget(url: string | undefined): { rawPath: string; rawQuery: string } {
  const target = url ?? '/';
  const q = target.indexOf('?');
  return q < 0
    ? { rawPath: target, rawQuery: '' }
    : { rawPath: target.slice(0, q), rawQuery: target.slice(q + 1) };
}

export function send(
  res: ServerResponse,
  status: number,
  body: string | Buffer,
  headers: Record<string, string | number> = {},
): void {
  const payload = typeof body === 'string' ? Buffer.from(body) : body;
  res.writeHead(status, { 'content-length': payload.length, ...headers });
  res.end(payload);
}
