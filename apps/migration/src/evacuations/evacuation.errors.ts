import { commonV1 } from '@flotilla/contracts';
import { DomainError, ErrorCode, ErrorFields } from '@flotilla/domain';
import { grpcCodeOf, statusWithDetails, type GrpcStatusError } from '@flotilla/platform';

/** An evacuation refused at planning: the error, and one ErrorDetail per blocked VM for the trailer. */
export class EvacuationRefused extends DomainError {
  constructor(
    code: ErrorCode,
    message: string,
    readonly details: commonV1.ErrorDetail[],
    fields: ErrorFields = {},
  ) {
    super(code, message, fields);
  }
}

/** What a handler throws for `e`: a refusal carries its details; anything else goes to the error filter. */
export function withRefusalDetails(e: unknown): GrpcStatusError | unknown {
  return e instanceof EvacuationRefused ? statusWithDetails(e, e.details) : e;
}

/** A domain error as the contract's Status (a VM's error, an evacuation's error). */
export function statusOf(e: DomainError, details: commonV1.ErrorDetail[] = []): commonV1.Status {
  return { code: grpcCodeOf(e.code), message: e.message, details };
}
