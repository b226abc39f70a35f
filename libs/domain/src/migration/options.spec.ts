import { ErrorCode } from '../errors';
import { resolveMigrationOptions } from './options';

const live = { mode: 'LIVE' as const, poolBandwidthBytesPerSec: 1_000_000_000 };

describe('migration options', () => {
  it('applies the documented defaults to unset (zero) options', () => {
    expect(resolveMigrationOptions({}, live)).toEqual({
      downtimeLimitMs: 300,
      bandwidthBytesPerSec: 1_000_000_000,
      autoConverge: false,
      postCopy: false,
      postCopyAfterRounds: 3,
      timeoutMs: 3_600_000,
      shutdownTimeoutMs: 60_000,
    });
  });

  it('keeps values inside their ranges as given', () => {
    const options = resolveMigrationOptions(
      {
        downtimeLimitMs: 50,
        bandwidthBytesPerSec: 4 * 1024 ** 3,
        autoConverge: true,
        postCopy: true,
        postCopyAfterRounds: 100,
        timeoutMs: 1000,
        shutdownTimeoutMs: 5000,
      },
      live,
    );
    expect(options).toMatchObject({
      downtimeLimitMs: 50,
      bandwidthBytesPerSec: 4 * 1024 ** 3,
      postCopyAfterRounds: 100,
      timeoutMs: 1000,
    });
  });

  it.each([
    ['downtimeLimitMs', 60_001, 'spec.options.downtime_limit_ms', '1..60000'],
    ['downtimeLimitMs', -1, 'spec.options.downtime_limit_ms', '1..60000'],
    ['postCopyAfterRounds', 101, 'spec.options.post_copy_after_rounds', '1..100'],
    ['timeoutMs', 999, 'spec.options.timeout_ms', '1000..86400000'],
    ['shutdownTimeoutMs', -5, 'spec.options.shutdown_timeout_ms', '1..86400000'],
  ])('refuses %s = %d naming %s and the range %s', (key, value, field, range) => {
    const attempt = () => resolveMigrationOptions({ [key]: value }, live);
    expect(attempt).toThrow(expect.objectContaining({ code: ErrorCode.InvalidArgument, fields: { field } }));
    expect(attempt).toThrow(range);
  });

  it('refuses a negative bandwidth naming the field', () => {
    expect(() => resolveMigrationOptions({ bandwidthBytesPerSec: -1 }, live)).toThrow(
      'spec.options.bandwidth_bytes_per_sec: -1 is not allowed',
    );
  });

  it('refuses post-copy for an OFFLINE migration', () => {
    expect(() => resolveMigrationOptions({ postCopy: true }, { ...live, mode: 'OFFLINE' })).toThrow(
      'spec.options.post_copy: post-copy applies to LIVE migrations only',
    );
  });

  it('names fields under the prefix the request uses', () => {
    expect(() =>
      resolveMigrationOptions({ timeoutMs: 1 }, { ...live, fieldPrefix: 'migration_options' }),
    ).toThrow('migration_options.timeout_ms');
  });
});
