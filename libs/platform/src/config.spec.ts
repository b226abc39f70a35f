import { z } from 'zod';
import {
  commonConfig,
  ConfigError,
  ConfigSpec,
  listenAddress,
  parseConfig,
  port,
  positiveMs,
} from './config';

// Pure: parseConfig against an environment object. The start-up path of a real service is tested in
// apps/compute/src/main.spec.ts.

const spec = {
  FLOTILLA_TEST_ADDRESS: {
    description: 'host:port to listen on',
    schema: listenAddress(),
    default: '127.0.0.1:7400',
  },
  FLOTILLA_TEST_PORT: { description: 'a port', schema: port(), default: 7480 },
  FLOTILLA_TEST_TIMEOUT_MS: { description: 'a timeout', schema: positiveMs(60_000), default: 1000 },
  FLOTILLA_TEST_SECRET: {
    description: 'a secret of 16 characters or more',
    schema: z.string().min(16, 'must be at least 16 characters'),
    sensitive: true,
  },
} satisfies ConfigSpec;

const valid = { FLOTILLA_TEST_SECRET: 'x'.repeat(16) };

const failure = (env: NodeJS.ProcessEnv): string => {
  try {
    parseConfig(spec, env);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as Error).message;
  }
  throw new Error('expected a ConfigError');
};

describe('parseConfig', () => {
  it('uses the defaults for unset and empty variables', () => {
    expect(parseConfig(spec, { ...valid, FLOTILLA_TEST_PORT: '' })).toEqual({
      FLOTILLA_TEST_ADDRESS: '127.0.0.1:7400',
      FLOTILLA_TEST_PORT: 7480,
      FLOTILLA_TEST_TIMEOUT_MS: 1000,
      FLOTILLA_TEST_SECRET: 'x'.repeat(16),
    });
  });

  it('coerces numbers from their text', () => {
    expect(parseConfig(spec, { ...valid, FLOTILLA_TEST_PORT: '9000' }).FLOTILLA_TEST_PORT).toBe(9000);
  });

  it('names the variable, shows the bad value and says what a good one looks like', () => {
    expect(failure({ ...valid, FLOTILLA_TEST_ADDRESS: 'nonsense' })).toBe(
      'FLOTILLA_TEST_ADDRESS="nonsense" must be host:port, e.g. 127.0.0.1:7401 (host:port to listen on)',
    );
  });

  it('names the bounds of a number out of range', () => {
    expect(failure({ ...valid, FLOTILLA_TEST_PORT: '70000' })).toMatch(
      /^FLOTILLA_TEST_PORT="70000" must be 1\.\.65535/,
    );
    expect(failure({ ...valid, FLOTILLA_TEST_TIMEOUT_MS: '0' })).toMatch(
      /^FLOTILLA_TEST_TIMEOUT_MS="0" must be 1\.\.60000 ms/,
    );
  });

  it('reports a missing required variable by name with what it is for', () => {
    expect(failure({})).toBe('FLOTILLA_TEST_SECRET is required: a secret of 16 characters or more');
  });

  it('never shows the value of a sensitive variable', () => {
    const message = failure({ FLOTILLA_TEST_SECRET: 'short-secret' });
    expect(message).toContain('FLOTILLA_TEST_SECRET=(hidden) must be at least 16 characters');
    expect(message).not.toContain('short-secret');
  });

  it('shortens a long bad value in the message', () => {
    const message = failure({ ...valid, FLOTILLA_TEST_ADDRESS: 'a'.repeat(500) });
    expect(message.length).toBeLessThan(200);
  });

  it('requires the service token shared by every service', () => {
    expect(() => parseConfig(commonConfig, {})).toThrow('FLOTILLA_SERVICE_TOKEN is required');
  });
});
