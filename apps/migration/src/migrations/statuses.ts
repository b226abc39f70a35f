import { commonV1, migrationV1 } from '@flotilla/contracts';
import { DomainError, ErrorCode } from '@flotilla/domain';
import { grpcCodeOf, GrpcStatusError, statusWithDetails } from '@flotilla/platform';
import { refusalCode } from './run-plan';

/** A flotilla.common.v1.Status as a migration records it (FAILED or CANCELLED). */
export type RunStatus = commonV1.Status;

export const blockerKindName = (kind: migrationV1.BlockerKind | string): string =>
  String(kind).replace('BLOCKER_KIND_', '');

/** One ErrorDetail per blocker: reason the BlockerKind name, metadata resource_kind and resource_id. */
export function blockerDetails(blockers: readonly migrationV1.Blocker[]): commonV1.ErrorDetail[] {
  return blockers.map((b) => ({
    reason: blockerKindName(b.kind),
    field: '',
    description: b.message,
    metadata: { resource_kind: b.resource?.kind ?? '', resource_id: b.resource?.id ?? '' },
  }));
}

/** The status of a refusal by blockers: RESOURCE_EXHAUSTED when all are about capacity, else FAILED_PRECONDITION. */
export function blockersStatus(blockers: readonly migrationV1.Blocker[]): RunStatus {
  const code = refusalCode(blockers.map((b) => blockerKindName(b.kind)));
  return {
    code: code === 'RESOURCE_EXHAUSTED' ? 8 : 9,
    message: `the migration cannot start: ${blockers.map((b) => `${blockerKindName(b.kind)}: ${b.message}`).join('; ')}`,
    details: blockerDetails(blockers),
  };
}

export function statusOf(e: DomainError): RunStatus {
  return {
    code: grpcCodeOf(e.code),
    message: e.message,
    details: e.fields.field
      ? [{ reason: 'FIELD_INVALID', field: e.fields.field, description: e.message, metadata: {} }]
      : [],
  };
}

/** The gRPC error for a refusal by blockers (blockersStatus): its message, its details in the trailer. */
export function grpcErrorOf(s: RunStatus): GrpcStatusError {
  const code = s.code === 8 ? ErrorCode.ResourceExhausted : ErrorCode.FailedPrecondition;
  return statusWithDetails(new DomainError(code, s.message), s.details);
}
