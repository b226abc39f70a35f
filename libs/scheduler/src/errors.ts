export enum SchedulerErrorCode {
  /** The host id is not in the scheduler (removed, or never upserted). */
  UnknownHost = 'UNKNOWN_HOST',
  /**
   * A host snapshot with a size that is not a whole number from 0 to 2^50, an overcommit ratio outside
   * 1/1024 to 1024, or an unknown state.
   */
  InvalidHost = 'INVALID_HOST',
  /** A reservation with a size that is not a whole number from 0 to 2^50, or one that would allocate more. */
  InvalidRequest = 'INVALID_REQUEST',
  /** A policy with an overcommit ratio outside 1/1024 to 1024, or an unknown weigher. */
  InvalidPolicy = 'INVALID_POLICY',
  /** A release larger than what the host has allocated. */
  ReleaseExceedsAllocation = 'RELEASE_EXCEEDS_ALLOCATION',
}

/**
 * A caller broke the scheduler's contract. The scheduler throws only from the methods that change its
 * index (constructor, upsertHost, reserve, release), before changing anything; `place` never throws.
 */
export class SchedulerError extends Error {
  override readonly name = 'SchedulerError';

  readonly code: SchedulerErrorCode;
  /** What was wrong, e.g. "host h1" or "host h1 memoryMib". */
  readonly resource: string;
  readonly expected: string;
  readonly actual: string;

  constructor(fields: {
    code: SchedulerErrorCode;
    resource: string;
    expected: string;
    actual: string;
    /** What the caller should do about it, as the end of the message. */
    action: string;
  }) {
    super(`${fields.resource}: expected ${fields.expected}, got ${fields.actual}; ${fields.action}`);
    this.code = fields.code;
    this.resource = fields.resource;
    this.expected = fields.expected;
    this.actual = fields.actual;
  }
}
