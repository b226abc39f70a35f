import { invalidArgument } from '../errors';

/** MigrationOptions as a request gives them (proto3: an unset number is 0, an unset bool false). */
export interface MigrationOptionsInput {
  downtimeLimitMs?: number;
  bandwidthBytesPerSec?: number;
  autoConverge?: boolean;
  postCopy?: boolean;
  postCopyAfterRounds?: number;
  timeoutMs?: number;
  shutdownTimeoutMs?: number;
}

/** Every option with its default applied: what the migration runs with and records. */
export interface MigrationOptions {
  downtimeLimitMs: number;
  bandwidthBytesPerSec: number;
  autoConverge: boolean;
  postCopy: boolean;
  postCopyAfterRounds: number;
  timeoutMs: number;
  shutdownTimeoutMs: number;
}

export type MigrationModeName = 'LIVE' | 'OFFLINE';

/** Bounds and defaults as proto/flotilla/migration/v1/migration.proto documents them (0 = the default). */
export const MIGRATION_OPTION_LIMITS = {
  downtimeLimitMs: { min: 1, max: 60_000, default: 300 },
  postCopyAfterRounds: { min: 1, max: 100, default: 3 },
  timeoutMs: { min: 1_000, max: 86_400_000, default: 3_600_000 },
  // The proto names no ceiling; a day, like timeout_ms, keeps a typo from parking a VM for weeks.
  shutdownTimeoutMs: { min: 1, max: 86_400_000, default: 60_000 },
} as const;

export interface ResolveMigrationOptionsContext {
  mode: MigrationModeName;
  /** The pool's default migration bandwidth, used when the request says 0; > 0. */
  poolBandwidthBytesPerSec: number;
  /** Where the options sit in the request, for error fields: "spec.options", "migration_options". */
  fieldPrefix?: string;
}

/**
 * The options with defaults applied, or INVALID_ARGUMENT naming the first field out of range and the
 * allowed range. Pure: the pool default comes in with the context.
 */
export function resolveMigrationOptions(
  input: MigrationOptionsInput | undefined,
  context: ResolveMigrationOptionsContext,
): MigrationOptions {
  const prefix = context.fieldPrefix ?? 'spec.options';
  const field = (name: string) => `${prefix}.${name}`;
  const given = input ?? {};
  const ranged = (
    name: string,
    value: number | undefined,
    limits: { min: number; max: number; default: number },
  ) => resolveRanged(field(name), value ?? 0, limits);

  const bandwidth = given.bandwidthBytesPerSec ?? 0;
  if (!Number.isSafeInteger(bandwidth) || bandwidth < 0)
    throw invalidArgument(
      field('bandwidth_bytes_per_sec'),
      `${bandwidth} is not allowed: give bytes per second >= 0 (0 means the pool's default of ${context.poolBandwidthBytesPerSec})`,
    );
  const postCopy = given.postCopy ?? false;
  if (postCopy && context.mode === 'OFFLINE')
    throw invalidArgument(
      field('post_copy'),
      'post-copy applies to LIVE migrations only: unset post_copy or use mode LIVE',
    );
  return {
    downtimeLimitMs: ranged(
      'downtime_limit_ms',
      given.downtimeLimitMs,
      MIGRATION_OPTION_LIMITS.downtimeLimitMs,
    ),
    bandwidthBytesPerSec: bandwidth === 0 ? context.poolBandwidthBytesPerSec : bandwidth,
    autoConverge: given.autoConverge ?? false,
    postCopy,
    postCopyAfterRounds: ranged(
      'post_copy_after_rounds',
      given.postCopyAfterRounds,
      MIGRATION_OPTION_LIMITS.postCopyAfterRounds,
    ),
    timeoutMs: ranged('timeout_ms', given.timeoutMs, MIGRATION_OPTION_LIMITS.timeoutMs),
    shutdownTimeoutMs: ranged(
      'shutdown_timeout_ms',
      given.shutdownTimeoutMs,
      MIGRATION_OPTION_LIMITS.shutdownTimeoutMs,
    ),
  };
}

function resolveRanged(
  field: string,
  value: number,
  limits: { min: number; max: number; default: number },
): number {
  if (value === 0) return limits.default;
  if (!Number.isInteger(value) || value < limits.min || value > limits.max)
    throw invalidArgument(
      field,
      `${value} is out of range: allowed ${limits.min}..${limits.max}, or 0 for the default ${limits.default}`,
    );
  return value;
}
