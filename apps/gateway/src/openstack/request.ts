import type { IncomingMessage, ServerResponse } from 'node:http';
import { BodyTooLargeError, readBody } from '../compat/http';
import type { OpenStackIdentity } from '../credentials/credential-store';
import { OpenStackError } from './errors';

/** One request as the OpenStack handlers see it, after routing (and, outside version documents, auth). */
export interface Ctx {
  req: IncomingMessage;
  res: ServerResponse;
  method: string;
  /** Path segments after the service's prefix (and API version), decoded. */
  segments: string[];
  query: URLSearchParams;
  requestId: string;
}

/** A request whose X-Auth-Token was checked: everything but version documents and Keystone itself. */
export interface AuthedCtx extends Ctx {
  identity: OpenStackIdentity;
}

/** A JSON answer; `body` undefined means none (204, HEAD). */
export interface Reply {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
}

export const json = (status: number, body?: unknown, headers?: Record<string, string>): Reply => ({
  status,
  body,
  headers,
});

/** The request's JSON body; 400 naming the problem when it is not JSON, 413 over the limit. */
export async function readJson(req: IncomingMessage, limitBytes?: number): Promise<unknown> {
  let raw: Buffer;
  try {
    raw = await readBody(req, limitBytes);
  } catch (e) {
    if (e instanceof BodyTooLargeError)
      throw new OpenStackError(413, `Request is too large: the body must be at most ${e.limitBytes} bytes.`);
    throw e;
  }
  if (raw.length === 0) throw new OpenStackError(400, 'The request body is empty: send a JSON object.');
  try {
    return JSON.parse(raw.toString('utf8')) as unknown;
  } catch (e) {
    throw new OpenStackError(400, `Malformed request body: ${(e as Error).message}`);
  }
}

export const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/** The object at `key` of a JSON body, or 400 naming it. */
export function objectAt(body: unknown, key: string, path = key): Record<string, unknown> {
  const v = isObject(body) ? body[key] : undefined;
  if (!isObject(v)) throw new OpenStackError(400, `Invalid input: '${path}' is a required object.`);
  return v;
}

export function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

const uuidPattern = /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i;
export const isUuid = (s: string): boolean => uuidPattern.test(s);
