import type { IncomingHttpHeaders } from 'node:http';

/** An EC2 Query API request as received, before any decoding that would change what was signed. */
export interface SignedRequest {
  method: string;
  /** The path exactly as on the request line, e.g. "/services/compute/". */
  rawPath: string;
  /** The query string exactly as on the request line, without "?" ("" when none). */
  rawQuery: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** Query and (for form POSTs) body parameters, decoded, merged. */
  params: Map<string, string>;
}

/** A request whose signature checked out. */
export interface VerifiedSignature {
  accessKeyId: string;
  /** The signature as sent (hex for SigV4, base64 for SigV2): the replay guard's key. */
  signature: string;
  version: 2 | 4;
  /** Epoch ms until which the same signature would still be accepted (the end of its replay window). */
  validUntil: number;
}
