import { ConfigError, parseConfig } from '@flotilla/platform';
import { agentConfigSpec, migrationHost } from './config';

// Pure: the agent's configuration parsed from an environment given to it.

describe('the migration host of an agent', () => {
  const parse = (env: Record<string, string>) =>
    parseConfig(agentConfigSpec, { FLOTILLA_SERVICE_TOKEN: 'a-service-token-of-some-length', ...env });

  it('defaults to the host part of the address compute reaches the agent on', () => {
    expect(migrationHost(parse({ FLOTILLA_AGENT_ADDRESS: '10.0.0.5:7410' }))).toBe('10.0.0.5');
    expect(
      migrationHost(
        parse({ FLOTILLA_AGENT_ADDRESS: '0.0.0.0:7410', FLOTILLA_AGENT_ADVERTISE_ADDRESS: 'host-1:7410' }),
      ),
    ).toBe('host-1');
    expect(migrationHost(parse({ FLOTILLA_AGENT_ADDRESS: '[::1]:7410' }))).toBe('[::1]');
  });

  it('takes FLOTILLA_MIGRATION_HOST when set', () => {
    expect(
      migrationHost(
        parse({ FLOTILLA_AGENT_ADDRESS: '10.0.0.5:7410', FLOTILLA_MIGRATION_HOST: '192.168.7.5' }),
      ),
    ).toBe('192.168.7.5');
  });

  it.each(['10.0.0.5:7411', 'host name', '::1'])(
    'refuses FLOTILLA_MIGRATION_HOST=%j at start, naming it',
    (value) => {
      expect(() => parse({ FLOTILLA_MIGRATION_HOST: value })).toThrow(ConfigError);
      expect(() => parse({ FLOTILLA_MIGRATION_HOST: value })).toThrow(
        /^FLOTILLA_MIGRATION_HOST=.* must be a host name or IP address/,
      );
    },
  );
});
