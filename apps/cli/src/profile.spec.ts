import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CliError } from './errors';
import { configPath, parseConfig, readConfig, resolveConnection, saveProfile, writeConfig } from './profile';

// Real files in a temporary directory; nothing is faked.
describe('profile file', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-profile-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('prefers $FLOTILLA_CONFIG, then $XDG_CONFIG_HOME, then ~/.config', () => {
    expect(configPath({ FLOTILLA_CONFIG: '/x/c.json', XDG_CONFIG_HOME: '/xdg' }, '/home/a')).toBe(
      '/x/c.json',
    );
    expect(configPath({ XDG_CONFIG_HOME: '/xdg' }, '/home/a')).toBe('/xdg/flotilla/config.json');
    expect(configPath({}, '/home/a')).toBe('/home/a/.config/flotilla/config.json');
  });

  it('reads a missing file as an empty config', () => {
    expect(readConfig(path.join(dir, 'none.json'))).toEqual({ profiles: {} });
  });

  it('writes the file readable by its owner only, creating its directory', () => {
    const file = path.join(dir, 'nested', 'config.json');
    writeConfig(file, { profiles: {} });
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
  });

  it('tightens the mode of an existing file when rewriting it', () => {
    const file = path.join(dir, 'config.json');
    fs.writeFileSync(file, '{"profiles":{}}', { mode: 0o644 });
    saveProfile(file, 'local', { endpoint: '127.0.0.1:7400', token: 'flt_a' }, { makeCurrent: true });
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
  });

  it('saves a profile next to the others and makes it current when asked', () => {
    const file = path.join(dir, 'config.json');
    saveProfile(file, 'prod', { endpoint: 'gw.example:7400', token: 'flt_p' }, { makeCurrent: true });
    saveProfile(file, 'local', { endpoint: '127.0.0.1:7400', token: 'flt_l' }, { makeCurrent: true });
    expect(readConfig(file)).toEqual({
      current: 'local',
      profiles: {
        prod: { endpoint: 'gw.example:7400', token: 'flt_p' },
        local: { endpoint: '127.0.0.1:7400', token: 'flt_l' },
      },
    });
  });

  it('keeps the current profile when not asked to switch', () => {
    const file = path.join(dir, 'config.json');
    saveProfile(file, 'prod', { endpoint: 'gw.example:7400' }, { makeCurrent: true });
    saveProfile(file, 'local', { endpoint: '127.0.0.1:7400' }, { makeCurrent: false });
    expect(readConfig(file).current).toBe('prod');
  });

  it('reports a malformed file as a usage error naming the file', () => {
    const file = path.join(dir, 'config.json');
    fs.writeFileSync(file, '{ nope');
    expect(() => readConfig(file)).toThrow(CliError);
    expect(() => readConfig(file)).toThrow(file);
  });

  it('refuses a profile without an endpoint', () => {
    expect(parseConfig('{"profiles":{"a":{"token":"t"}}}')).toBe('profile "a" needs an "endpoint" string');
  });

  it('keeps the image catalogue directory `up` writes, and refuses one that is not a string', () => {
    expect(parseConfig('{"profiles":{"local":{"endpoint":"e:1","imageDir":"/var/images"}}}')).toEqual({
      profiles: { local: { endpoint: 'e:1', imageDir: '/var/images' } },
    });
    expect(parseConfig('{"profiles":{"local":{"endpoint":"e:1","imageDir":7}}}')).toBe(
      'profile "local": "imageDir" must be a string',
    );
  });
});

describe('connection resolution', () => {
  const config = {
    current: 'local',
    profiles: {
      local: { endpoint: '127.0.0.1:7400', token: 'flt_l' },
      prod: { endpoint: 'gw:7400', token: 'flt_p' },
    },
  };

  it('uses the current profile when nothing else is given', () => {
    expect(resolveConnection({}, config, 'f')).toEqual({
      endpoint: '127.0.0.1:7400',
      token: 'flt_l',
      profile: 'local',
    });
  });

  it('uses the named profile over the current one', () => {
    expect(resolveConnection({ profile: 'prod' }, config, 'f')).toMatchObject({
      endpoint: 'gw:7400',
      token: 'flt_p',
    });
  });

  it('lets flags override the profile field by field', () => {
    expect(resolveConnection({ endpoint: 'other:1' }, config, 'f')).toEqual({
      endpoint: 'other:1',
      token: 'flt_l',
      profile: 'local',
    });
  });

  it('falls back to the default endpoint and no token without any profile', () => {
    expect(resolveConnection({}, { profiles: {} }, 'f')).toEqual({ endpoint: '127.0.0.1:7400' });
  });

  it('names the known profiles when asked for an unknown one', () => {
    expect(() => resolveConnection({ profile: 'staging' }, config, 'f')).toThrow('profiles: local, prod');
  });
});
