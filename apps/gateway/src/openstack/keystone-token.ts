import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * Keystone tokens, stateless: base64url(JSON payload) "." base64url(HMAC-SHA256(tokenKey, payload part)).
 * Nothing is stored, so tokens survive gateway restarts and need no cleanup; revocation works through the
 * credential (the front checks credentials.identityOf(credentialId) on every request). The nonce makes two
 * tokens issued in the same second differ (clients authenticate many times per command).
 */
export interface TokenPayload {
  /** The credential the token was issued from. */
  credentialId: string;
  /** Seconds since the epoch. */
  issuedAt: number;
  expiresAt: number;
  nonce: string;
}

export type TokenCheck =
  { ok: true; payload: TokenPayload } | { ok: false; reason: 'malformed' | 'signature' | 'expired' };

export function signToken(
  key: Buffer,
  o: { credentialId: string; nowMs: number; ttlSeconds: number },
): { token: string; payload: TokenPayload } {
  const issuedAt = Math.floor(o.nowMs / 1000);
  const payload: TokenPayload = {
    credentialId: o.credentialId,
    issuedAt,
    expiresAt: issuedAt + o.ttlSeconds,
    nonce: randomBytes(9).toString('base64url'),
  };
  const body = Buffer.from(
    JSON.stringify([payload.credentialId, payload.issuedAt, payload.expiresAt, payload.nonce]),
  ).toString('base64url');
  return { token: `${body}.${mac(key, body)}`, payload };
}

export function verifyToken(key: Buffer, token: string, nowMs: number): TokenCheck {
  const parts = token.split('.');
  if (parts.length !== 2 || token.length > 512) return { ok: false, reason: 'malformed' };
  const [body, signature] = parts;
  const expected = Buffer.from(mac(key, body));
  const given = Buffer.from(signature);
  if (given.length !== expected.length || !timingSafeEqual(given, expected))
    return { ok: false, reason: 'signature' };
  let fields: unknown;
  try {
    fields = JSON.parse(Buffer.from(body, 'base64url').toString('utf8'));
  } catch {
    return { ok: false, reason: 'malformed' };
  }
  if (
    !Array.isArray(fields) ||
    fields.length !== 4 ||
    typeof fields[0] !== 'string' ||
    typeof fields[1] !== 'number' ||
    typeof fields[2] !== 'number' ||
    typeof fields[3] !== 'string'
  )
    return { ok: false, reason: 'malformed' };
  const payload: TokenPayload = {
    credentialId: fields[0],
    issuedAt: fields[1],
    expiresAt: fields[2],
    nonce: fields[3],
  };
  if (payload.expiresAt * 1000 <= nowMs) return { ok: false, reason: 'expired' };
  return { ok: true, payload };
}

function mac(key: Buffer, body: string): string {
  return createHmac('sha256', key).update(body).digest('base64url');
}
