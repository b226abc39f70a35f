import { Metadata } from '@grpc/grpc-js';
import { commonV1, migrationV1 } from '@flotilla/contracts';
import { DomainError, ErrorCode } from '@flotilla/domain';
import { grpcCodeOf, GrpcStatusError, toGrpcStatus } from '@flotilla/platform';
import { refusalCode } from './run-plan';

/** A flotilla.common.v1.Status as a migration records it (FAILED or CANCELLED). */
export type RunStatus = commonV1.Status;

/**
 * Trailing metadata key carrying a refusal's ErrorDetails: the flotilla.common.v1.Status as JSON (UTF-8,
 * binary header); the message lists every blocker too, for clients that do not read it.
 */
export const errorDetailsKey = 'x-flotilla-error-details-bin';

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

/** The gRPC error for a status with details: the message, and the details in trailing metadata. */
export function grpcErrorOf(s: RunStatus): GrpcStatusError {
  const metadata = new Metadata();
  metadata.set(errorDetailsKey, Buffer.from(JSON.stringify(s), 'utf8'));
  const base = toGrpcStatus(new DomainError(ErrorCode.FailedPrecondition, s.message));
  return Object.assign(base, { code: s.code, metadata });
}

/** Reads the details a refusal carried (for clients and tests). */
export function detailsOfError(e: { metadata?: Metadata }): commonV1.ErrorDetail[] {
  const raw = e.metadata?.get(errorDetailsKey)[0];
  if (!raw || typeof raw === 'string') return [];
  return (JSON.parse(raw.toString('utf8')) as RunStatus).details;
}
