import { randomUUID } from 'node:crypto';
import { defaultNetwork } from './neutron-documents';
import { actionOf } from './nova-actions';
import { parseCreateServer } from './nova-create-request';

// Pure: POST /servers and server action bodies as Nova validates them.

const v = (minor: number) => ({ version: { major: 2, minor }, zone: 'dc1' });
const server = (fields: Record<string, unknown>) => ({
  server: { name: 'web', imageRef: 'img-1', flavorRef: 'f-1', ...fields },
});

describe('POST /servers validation', () => {
  it('takes a headerless 2.1 create without networks as one NIC, with empty personality', () => {
    expect(parseCreateServer(server({ metadata: {}, personality: [] }), v(1))).toEqual({
      name: 'web',
      imageRef: 'img-1',
      flavorRef: 'f-1',
      minCount: 1,
      maxCount: 1,
      metadata: {},
      nicCount: 1,
    });
  });

  it('takes image and flavor references given as URLs', () => {
    const spec = parseCreateServer(
      server({ imageRef: 'http://h/image/v2/images/img-9', flavorRef: 'http://h/compute/flavors/f-9/' }),
      v(1),
    );
    expect([spec.imageRef, spec.flavorRef]).toEqual(['img-9', 'f-9']);
  });

  it('requires networks from 2.37 and takes "auto" or the default network, once per NIC', () => {
    expect(() => parseCreateServer(server({}), v(37))).toThrow(
      /'networks' is required from microversion 2.37/,
    );
    expect(parseCreateServer(server({ networks: 'auto' }), v(37)).nicCount).toBe(1);
    const two = [{ uuid: defaultNetwork.id }, { uuid: defaultNetwork.id }];
    expect(parseCreateServer(server({ networks: two }), v(37)).nicCount).toBe(2);
  });

  it('refuses networks "none", an unknown network and ports, naming them', () => {
    expect(() => parseCreateServer(server({ networks: 'none' }), v(37))).toThrow(/'none' is not supported/);
    const unknown = randomUUID();
    expect(() => parseCreateServer(server({ networks: [{ uuid: unknown }] }), v(1))).toThrow(
      `Network ${unknown} could not be found.`,
    );
    expect(() => parseCreateServer(server({ networks: [{ port: 'p' }] }), v(1))).toThrow(/'port'/);
  });

  it('checks min_count and max_count', () => {
    expect(parseCreateServer(server({ min_count: 2, max_count: 3 }), v(1))).toMatchObject({
      minCount: 2,
      maxCount: 3,
    });
    expect(parseCreateServer(server({ min_count: 2 }), v(1)).maxCount).toBe(2);
    expect(() => parseCreateServer(server({ min_count: 3, max_count: 2 }), v(1))).toThrow(/min_count/);
    expect(() => parseCreateServer(server({ max_count: 0 }), v(1))).toThrow(/max_count/);
  });

  it.each([
    ['user_data', { user_data: 'ZWNobw==' }, /user_data/],
    ['key_name', { key_name: 'k' }, /key_name/],
    ['personality with files', { personality: [{ path: '/etc/x', contents: '' }] }, /personality/],
    ['personality at 2.57', { personality: [] }, /removed in microversion 2.57/],
    ['another zone', { availability_zone: 'nova' }, /availability zone/],
    ['a missing name', { name: '' }, /'name' is a required string/],
    ['a missing imageRef', { imageRef: undefined }, /imageRef/],
    ['non-string metadata', { metadata: { a: 1 } }, /metadata/],
  ])('refuses %s with 400 naming it', (_what, fields, message) => {
    expect(() => parseCreateServer(server({ ...fields, networks: 'auto' }), v(57))).toThrow(message);
  });
});

describe('server action bodies', () => {
  it('names the action and its argument', () => {
    expect(actionOf({ 'os-stop': null })).toMatchObject({ action: { verb: 'stop' }, arg: null });
    expect(actionOf({ reboot: { type: 'HARD' } }).action.verb).toBe('reboot');
  });

  it('refuses an unknown action, several at once, and a reboot without a valid type', () => {
    expect(() => actionOf({ shelve: null })).toThrow('There is no such action: shelve');
    expect(() => actionOf({ 'os-stop': null, 'os-start': null })).toThrow(/exactly one key/);
    const { action, arg } = actionOf({ reboot: { type: 'SOFTLY' } });
    expect(() => action.operation(arg)).toThrow(/SOFT or HARD/);
  });
});
