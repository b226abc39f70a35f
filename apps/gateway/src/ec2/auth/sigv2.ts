import { createHmac, timingSafeEqual } from 'node:crypto';
import type { SignedRequest, VerifiedSignature } from './signed-request';
import { authErrors, iso, maxClockSkewMs } from './auth-errors';
import { canonicalQuery, isoTimestampMs, QueryPair } from './canonical';
import { maxPresignedExpiresSec } from './sigv4';

const hmacOf = { HmacSHA256: 'sha256', HmacSHA1: 'sha1' } as const;

/**
 * Verifies a SigV2 request (Eucalyptus-style clients, some libraries' default): every parameter, the
 * signature's included, is in the query or the form body (req.params). Throws Ec2Error on any failure.
 *
 *   StringToSign = METHOD \n lowercase(Host as received, ":port" included) \n path \n sorted RFC 3986 params
 *   Signature    = base64(HMAC-SHA256 or HMAC-SHA1(secret, StringToSign))
 */
export async function verifySigV2(
  req: SignedRequest,
  secretOf: (accessKeyId: string) => Promise<string | undefined>,
  now: number,
): Promise<VerifiedSignature> {
  const p = req.params;
  const required = ['AWSAccessKeyId', 'Signature', 'SignatureMethod'].filter((k) => !p.get(k));
  if (required.length) {
    throw authErrors.missingParameter(
      `A Signature Version 2 request requires the parameter(s) ${required.join(', ')}.`,
    );
  }
  if (p.get('SignatureVersion') !== '2') {
    throw authErrors.parameter(
      `SignatureVersion '${p.get('SignatureVersion') ?? ''}' is not supported: sign with SignatureVersion=2 or with SigV4.`,
    );
  }
  const method = p.get('SignatureMethod') as string;
  if (!(method in hmacOf)) {
    throw authErrors.parameter(`SignatureMethod must be HmacSHA256 or HmacSHA1, not '${method}'.`);
  }
  const validUntil = checkTime(p.get('Timestamp'), p.get('Expires'), now);
  const accessKeyId = p.get('AWSAccessKeyId') as string;
  const secret = await secretOf(accessKeyId);
  if (secret === undefined) throw authErrors.unknownKey();

  const expected = createHmac(hmacOf[method as keyof typeof hmacOf], secret)
    .update(stringToSignV2(req))
    .digest();
  const sent = Buffer.from(p.get('Signature') as string, 'base64');
  if (sent.length !== expected.length || !timingSafeEqual(sent, expected)) throw authErrors.mismatch(2);
  // The canonical base64 of the MAC, not the text sent: a re-padded copy must hit the replay guard too.
  return { accessKeyId, signature: expected.toString('base64'), version: 2, validUntil };
}

export function stringToSignV2(req: SignedRequest): string {
  const host = req.headers.host ?? '';
  const pairs: QueryPair[] = [];
  for (const [key, value] of req.params) pairs.push({ key, value });
  return `${req.method}\n${host.toLowerCase()}\n${req.rawPath || '/'}\n${canonicalQuery(pairs, 'Signature')}`;
}

/** Timestamp: within 15 minutes of now; Expires: not past (and at most 7 days ahead). Returns validUntil. */
function checkTime(timestamp: string | undefined, expires: string | undefined, now: number): number {
  if (timestamp !== undefined && expires !== undefined) {
    throw authErrors.parameter('A request may carry Timestamp or Expires, not both: send one.');
  }
  if (timestamp === undefined && expires === undefined) {
    throw authErrors.missingParameter(
      'A Signature Version 2 request requires the parameter Timestamp (or Expires), e.g. Timestamp=2011-10-03T15:19:30Z.',
    );
  }
  const name = timestamp !== undefined ? 'Timestamp' : 'Expires';
  const text = (timestamp ?? expires) as string;
  const at = isoTimestampMs(text);
  if (at === undefined) {
    throw authErrors.parameter(`${name} '${text}' is not an ISO 8601 date-time like 2011-10-03T15:19:30Z.`);
  }
  if (timestamp !== undefined) {
    if (Math.abs(now - at) > maxClockSkewMs) {
      throw authErrors.expired(
        `Request has expired: Timestamp ${iso(at)} is more than 15 minutes from the server's ${iso(now)}. Re-sign it (and check the client's clock).`,
      );
    }
    return at + maxClockSkewMs;
  }
  if (now > at) {
    throw authErrors.expired(`Request has expired: Expires ${iso(at)} is before the server's ${iso(now)}.`);
  }
  if (at - now > maxPresignedExpiresSec * 1000) {
    throw authErrors.parameter(`Expires ${iso(at)} is more than 7 days ahead: sign for a shorter time.`);
  }
  return at;
}
