import { Ec2Error } from '../errors';

/**
 * The authentication errors of EC2 (CommonErrors), with the status AWS answers and a message saying what to
 * fix. One place, so SigV4 and SigV2 refuse alike.
 */
export const authErrors = {
  missing: () =>
    new Ec2Error(
      'MissingAuthenticationToken',
      'Request is missing Authentication Token: sign it with SigV4 (an Authorization header or a presigned ' +
        'X-Amz-* query) or SigV2 (AWSAccessKeyId, SignatureVersion=2, SignatureMethod, Timestamp, Signature).',
      403,
    ),
  incomplete: (what: string) => new Ec2Error('IncompleteSignature', what, 400),
  /** Worded as AWS words it: aws-cli and the SDKs print it as is. */
  unknownKey: () =>
    new Ec2Error('AuthFailure', 'AWS was not able to validate the provided access credentials', 401),
  scope: (what: string) => new Ec2Error('AuthFailure', what, 401),
  mismatch: (version: 2 | 4) =>
    new Ec2Error(
      'SignatureDoesNotMatch',
      'The request signature we calculated does not match the signature you provided. Check your AWS ' +
        `Secret Access Key and signing method (Signature Version ${version}); the request must reach the ` +
        'server exactly as it was signed (method, path, query, signed headers and body).',
      403,
    ),
  /** The body is not the one whose SHA-256 the client signed (x-amz-content-sha256): tampered in transit. */
  bodyMismatch: () =>
    new Ec2Error(
      'SignatureDoesNotMatch',
      'The x-amz-content-sha256 header does not match the SHA-256 of the request body: the body was ' +
        'changed after it was signed, or the signer hashed another body.',
      403,
    ),
  expired: (what: string) => new Ec2Error('RequestExpired', what, 400),
  parameter: (what: string) => new Ec2Error('InvalidParameterValue', what, 400),
  missingParameter: (what: string) => new Ec2Error('MissingParameter', what, 400),
};

/** Clock skew allowed between a client and Flotilla, both ways (AWS's 15 minutes). */
export const maxClockSkewMs = 15 * 60_000;

export const iso = (ms: number) => new Date(ms).toISOString();
