import { commonV1 } from '@flotilla/contracts';
import { DomainError } from '@flotilla/domain';
import { GrpcStatusError, toGrpcStatus } from './status';

/**
 * The machine-readable details of an error status (one ErrorDetail per reason, as a migration's blockers),
 * carried in a binary trailer as the JSON of the flotilla.common.v1.Status (code, message, details): any
 * client reads them with errorDetailsOf, the gateway relays binary trailers unchanged, and the message
 * stays the human answer.
 */
export const errorDetailsTrailer = 'x-flotilla-error-details-bin';

/** The status a handler answers with for `e`, with `details` in the trailer. */
export function statusWithDetails(e: DomainError, details: commonV1.ErrorDetail[]): GrpcStatusError {
  const status = toGrpcStatus(e);
  const body: commonV1.Status = { code: status.code, message: status.details, details };
  status.metadata.set(errorDetailsTrailer, Buffer.from(JSON.stringify(body), 'utf8'));
  return status;
}

/** The details an error status carries; none when it carries none or they are unreadable. */
export function errorDetailsOf(e: unknown): commonV1.ErrorDetail[] {
  const raw = (e as Partial<GrpcStatusError>)?.metadata?.get?.(errorDetailsTrailer)?.[0];
  if (!Buffer.isBuffer(raw)) return [];
  try {
    const parsed = JSON.parse(raw.toString('utf8')) as Partial<commonV1.Status> | null;
    return Array.isArray(parsed?.details) ? parsed.details.filter(isErrorDetail) : [];
  } catch {
    return [];
  }
}

function isErrorDetail(d: unknown): d is commonV1.ErrorDetail {
  const o = d as Partial<commonV1.ErrorDetail> | null;
  return (
    typeof o?.reason === 'string' &&
    typeof o.field === 'string' &&
    typeof o.description === 'string' &&
    typeof o.metadata === 'object' &&
    o.metadata !== null
  );
}
