import { createHash, createHmac, hash, timingSafeEqual } from 'node:crypto';
import type { SignedRequest, VerifiedSignature } from './signed-request';
import { authErrors, iso, maxClockSkewMs } from './auth-errors';
import {
  amzDateMs,
  amzDateOfHttpDate,
  canonicalHeaderValue,
  canonicalQuery,
  canonicalUri,
  queryPairs,
  QueryPair,
} from './canonical';
import { SigningKeyCache } from './signing-key-cache';

export const sigV4Algorithm = 'AWS4-HMAC-SHA256';
const unsignedPayload = 'UNSIGNED-PAYLOAD';
/** The longest a presigned URL may live (AWS's 7 days). */
export const maxPresignedExpiresSec = 604_800;

/** What the signer declared (Authorization header or presigned query), before any secret is involved. */
export interface SigV4Claim {
  accessKeyId: string;
  scopeDate: string;
  region: string;
  service: string;
  /** As listed by the client ("content-type;host;x-amz-date"): the canonical request repeats it verbatim. */
  signedHeaders: string;
  signature: string;
  amzDate: string;
  /** Presigned query form: its lifetime, and the query pairs without X-Amz-Signature. */
  presigned?: { expiresSec: number | undefined };
  pairs: QueryPair[];
}

export interface SigV4Options {
  regions: readonly string[];
  now: number;
  keys: SigningKeyCache;
}

/** Verifies a SigV4 request (header or presigned form); throws Ec2Error on any failure. */
export async function verifySigV4(
  req: SignedRequest,
  secretOf: (accessKeyId: string) => Promise<string | undefined>,
  options: SigV4Options,
): Promise<VerifiedSignature> {
  const claim = parseClaim(req);
  checkScope(claim, options.regions);
  const validUntil = checkWindow(claim, options.now);
  const secret = await secretOf(claim.accessKeyId);
  if (secret === undefined) throw authErrors.unknownKey();

  const declaredHash = headerString(req, 'x-amz-content-sha256');
  const bodyHash = declaredHash === unsignedPayload ? undefined : sha256Hex(req.body);
  const canonicalRequest = buildCanonicalRequest(req, claim, declaredHash ?? (bodyHash as string));
  const scope = `${claim.scopeDate}/${claim.region}/${claim.service}/aws4_request`;
  const stringToSign = `${sigV4Algorithm}\n${claim.amzDate}\n${scope}\n${sha256Hex(canonicalRequest)}`;
  const key = options.keys.get(secret, claim.scopeDate, claim.region, claim.service);
  const expected = createHmac('sha256', key).update(stringToSign).digest();
  if (!sameSignature(expected, claim.signature)) throw authErrors.mismatch(4);

  // The signature covers the declared hash; the body must then be the one that hash names.
  if (declaredHash !== undefined && declaredHash !== unsignedPayload && declaredHash !== bodyHash) {
    throw authErrors.bodyMismatch();
  }
  if (declaredHash === unsignedPayload && req.body.length > 0) {
    // EC2 parameters travel in the body: an unsigned body would let anyone on the path rewrite the action.
    throw authErrors.incomplete(
      'x-amz-content-sha256 is UNSIGNED-PAYLOAD but the request has a body: EC2 requests must sign their body (send its SHA-256, or none to let the server hash it).',
    );
  }
  return { accessKeyId: claim.accessKeyId, signature: expected.toString('hex'), version: 4, validUntil };
}

/**
 * SHA-256 in hex. Node's one-shot crypto.hash (20.12 and later) allocates no Hash object: about a third of a
 * verification's hashing cost on small inputs.
 */
export const sha256Hex: (data: string | Buffer) => string =
  typeof hash === 'function'
    ? (data) => hash('sha256', data, 'hex')
    : (data) => createHash('sha256').update(data).digest('hex');

/** The canonical request of SigV4, over exactly the headers the client listed. */
export function buildCanonicalRequest(req: SignedRequest, claim: SigV4Claim, payloadHash: string): string {
  let headers = '';
  for (const name of claim.signedHeaders.split(';')) {
    headers += `${name}:${canonicalHeaderValue(req.headers[name.toLowerCase()])}\n`;
  }
  const query = canonicalQuery(claim.pairs, claim.presigned ? 'X-Amz-Signature' : undefined);
  return `${req.method}\n${canonicalUri(req.rawPath)}\n${query}\n${headers}\n${claim.signedHeaders}\n${payloadHash}`;
}

function parseClaim(req: SignedRequest): SigV4Claim {
  const pairs = queryPairs(req.rawQuery);
  const authorization = headerString(req, 'authorization');
  const presigned = pairs.some((p) => p.key === 'X-Amz-Algorithm');
  if (authorization !== undefined && presigned) {
    throw authErrors.incomplete(
      'The request carries both an Authorization header and presigned X-Amz-* query parameters: use one.',
    );
  }
  return authorization !== undefined ? parseHeader(req, authorization, pairs) : parsePresigned(pairs);
}

/** "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/ec2/aws4_request, SignedHeaders=…, Signature=…". */
function parseHeader(req: SignedRequest, authorization: string, pairs: QueryPair[]): SigV4Claim {
  const space = authorization.indexOf(' ');
  const algorithm = space < 0 ? authorization : authorization.slice(0, space);
  if (algorithm !== sigV4Algorithm) {
    throw authErrors.incomplete(
      `Unsupported Authorization type '${algorithm}': sign with ${sigV4Algorithm} (SigV4), or SigV2 in the query.`,
    );
  }
  const fields = authorizationFields(authorization.slice(space + 1));
  const missing = (['Credential', 'SignedHeaders', 'Signature'] as const).filter((f) => !fields[f]);
  if (missing.length) {
    throw authErrors.incomplete(
      `Authorization header requires ${missing.map((m) => `'${m}'`).join(', ')} parameter${missing.length > 1 ? 's' : ''}: expected "${sigV4Algorithm} Credential=<access key>/<yyyymmdd>/<region>/ec2/aws4_request, SignedHeaders=<h1;h2>, Signature=<64 hex>".`,
    );
  }
  let amzDate = headerString(req, 'x-amz-date');
  if (amzDate === undefined) {
    const date = headerString(req, 'date');
    amzDate = date === undefined ? undefined : amzDateOfHttpDate(date);
  }
  if (amzDate === undefined) {
    throw authErrors.incomplete(
      "Authorization header requires existence of either an 'X-Amz-Date' or a 'Date' header.",
    );
  }
  return {
    ...parseCredential(fields.Credential as string, 'Authorization Credential'),
    signedHeaders: checkSignedHeaders(fields.SignedHeaders as string),
    signature: fields.Signature as string,
    amzDate,
    pairs,
  };
}

type AuthorizationFields = Partial<Record<'Credential' | 'SignedHeaders' | 'Signature', string>>;

/** "Credential=…, SignedHeaders=…, Signature=…": the three fields SigV4 reads (others ignored; the last wins). */
function authorizationFields(list: string): AuthorizationFields {
  const fields: AuthorizationFields = {};
  let start = 0;
  while (start <= list.length) {
    let end = list.indexOf(',', start);
    if (end < 0) end = list.length;
    const eq = list.indexOf('=', start);
    if (eq > start && eq < end) {
      const name = list.slice(start, eq).trim();
      if (name === 'Credential' || name === 'SignedHeaders' || name === 'Signature')
        fields[name] = list.slice(eq + 1, end).trim();
    }
    start = end + 1;
  }
  return fields;
}

function parsePresigned(pairs: QueryPair[]): SigV4Claim {
  const value = (key: string) => pairs.find((p) => p.key === key)?.value;
  const algorithm = value('X-Amz-Algorithm');
  if (algorithm !== sigV4Algorithm) {
    throw authErrors.incomplete(`X-Amz-Algorithm must be ${sigV4Algorithm}, not '${algorithm}'.`);
  }
  const required = ['X-Amz-Credential', 'X-Amz-Date', 'X-Amz-SignedHeaders', 'X-Amz-Signature'];
  const missing = required.filter((k) => !value(k));
  if (missing.length) {
    throw authErrors.incomplete(`A presigned request requires the query parameter(s) ${missing.join(', ')}.`);
  }
  const expires = value('X-Amz-Expires');
  let expiresSec: number | undefined;
  if (expires !== undefined) {
    expiresSec = /^\d{1,7}$/.test(expires) ? Number(expires) : NaN;
    if (!(expiresSec >= 1 && expiresSec <= maxPresignedExpiresSec)) {
      throw authErrors.parameter(
        `X-Amz-Expires must be a whole number of seconds from 1 to ${maxPresignedExpiresSec} (7 days), not '${expires}'.`,
      );
    }
  }
  return {
    ...parseCredential(value('X-Amz-Credential') as string, 'X-Amz-Credential'),
    signedHeaders: checkSignedHeaders(value('X-Amz-SignedHeaders') as string),
    signature: value('X-Amz-Signature') as string,
    amzDate: value('X-Amz-Date') as string,
    presigned: { expiresSec },
    pairs,
  };
}

function parseCredential(
  credential: string,
  where: string,
): Pick<SigV4Claim, 'accessKeyId' | 'scopeDate' | 'region' | 'service'> {
  const parts = credential.split('/');
  if (parts.length !== 5 || parts.some((p) => !p) || parts[4] !== 'aws4_request') {
    throw authErrors.incomplete(
      `${where} '${credential}' is malformed: expected <access key>/<yyyymmdd>/<region>/ec2/aws4_request.`,
    );
  }
  return { accessKeyId: parts[0], scopeDate: parts[1], region: parts[2], service: parts[3] };
}

function checkSignedHeaders(signedHeaders: string): string {
  if (!signedHeaders.split(';').some((h) => h.toLowerCase() === 'host')) {
    throw authErrors.incomplete(
      `'host' must be among the SignedHeaders ('${signedHeaders}'): sign the Host header.`,
    );
  }
  return signedHeaders;
}

function checkScope(claim: SigV4Claim, regions: readonly string[]): void {
  if (claim.service !== 'ec2') {
    throw authErrors.scope(`Credential should be scoped to correct service: 'ec2', not '${claim.service}'.`);
  }
  if (!regions.includes(claim.region)) {
    throw authErrors.scope(
      `Credential should be scoped to a valid region, not '${claim.region}': this endpoint serves ${regions.map((r) => `'${r}'`).join(', ')}; set the client's region (AWS_DEFAULT_REGION, --region) to it.`,
    );
  }
  if (amzDateMs(claim.amzDate) === undefined) {
    throw authErrors.incomplete(
      `X-Amz-Date '${claim.amzDate}' is not an ISO 8601 basic date-time like 20150830T123600Z.`,
    );
  }
  if (claim.amzDate.slice(0, 8) !== claim.scopeDate) {
    throw authErrors.scope(
      `Credential should be scoped to the date of X-Amz-Date: '${claim.scopeDate}' != '${claim.amzDate.slice(0, 8)}'.`,
    );
  }
}

/** Checks the request's time against now; returns the end of its replay window. */
function checkWindow(claim: SigV4Claim, now: number): number {
  const signedAt = amzDateMs(claim.amzDate) as number;
  if (signedAt - now > maxClockSkewMs) {
    throw authErrors.expired(
      `Request is not yet valid: signed at ${iso(signedAt)}, more than 15 minutes ahead of the server's ${iso(now)}. Fix the client's clock.`,
    );
  }
  const expiresSec = claim.presigned?.expiresSec;
  const validUntil = signedAt + (expiresSec === undefined ? maxClockSkewMs : expiresSec * 1000);
  if (now > validUntil) {
    throw authErrors.expired(
      expiresSec === undefined
        ? `Request has expired: signed at ${iso(signedAt)}, more than 15 minutes before the server's ${iso(now)}. Re-sign it (and check the client's clock).`
        : `Request has expired: the presigned URL signed at ${iso(signedAt)} was valid for ${expiresSec} s, until ${iso(validUntil)}. Presign a new one.`,
    );
  }
  return validUntil;
}

function headerString(req: SignedRequest, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value.join(',') : value;
}

/** Constant-time compare of the computed MAC with the hex signature sent (any other text never matches). */
function sameSignature(expected: Buffer, sentHex: string): boolean {
  if (!/^[0-9a-f]{64}$/.test(sentHex)) return false;
  return timingSafeEqual(expected, Buffer.from(sentHex, 'hex'));
}
