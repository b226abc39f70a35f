import type { SignedRequest, VerifiedSignature } from './signed-request';
import { authErrors } from './auth-errors';
import { SigningKeyCache } from './signing-key-cache';
import { verifySigV2 } from './sigv2';
import { verifySigV4 } from './sigv4';

/** One cache per process: signing keys depend only on (secret, date, region, service), never on a request. */
const signingKeys = new SigningKeyCache();

/**
 * Authenticates an EC2 Query API request (interop.md §2.2): SigV4 in an Authorization header or a presigned
 * query, else SigV2 in the parameters. Throws Ec2Error with EC2's code and status on any failure:
 * MissingAuthenticationToken 403 (no signature at all), IncompleteSignature 400 (malformed; also a body sent
 * as UNSIGNED-PAYLOAD), AuthFailure 401 (unknown key; wrong service, region or scope date), RequestExpired 400
 * (clock skew over 15 minutes, presigned URL or Expires past), SignatureDoesNotMatch 403 (wrong signature, or
 * a body that is not the one x-amz-content-sha256 declares), MissingParameter/InvalidParameterValue 400
 * (SigV2 parameters, X-Amz-Expires). The checks that need no secret come first; the HMAC compare is
 * constant-time. The result's `signature` is the replay guard's key; `validUntil` ends its window.
 *
 * `secretOf` answers the secret access key of an access key id (undefined when unknown, revoked or expired);
 * `regions` are the region names this endpoint serves; `now` (epoch ms) is for tests.
 */
export async function verifyEc2Request(
  req: SignedRequest,
  secretOf: (accessKeyId: string) => Promise<string | undefined>,
  options: { regions: readonly string[]; now?: number },
): Promise<VerifiedSignature> {
  const now = options.now ?? Date.now();
  if (req.headers.authorization !== undefined || /(^|&)X-Amz-Algorithm=/.test(req.rawQuery)) {
    return verifySigV4(req, secretOf, { regions: options.regions, now, keys: signingKeys });
  }
  if (req.params.has('Signature') || req.params.has('AWSAccessKeyId') || req.params.has('SignatureVersion')) {
    return verifySigV2(req, secretOf, now);
  }
  throw authErrors.missing();
}
