import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadOrCreateServiceToken, readAdminToken } from './secrets';
import { readyUrl } from './up';

// Real files in a temporary directory.
describe('service token', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-up-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('is generated once, readable by its owner only', () => {
    const token = loadOrCreateServiceToken(dir);
    expect(token.length).toBeGreaterThanOrEqual(32);
    expect(fs.statSync(path.join(dir, 'service-token')).mode & 0o777).toBe(0o600);
  });

  it('is reused by the next start', () => {
    expect(loadOrCreateServiceToken(dir)).toBe(loadOrCreateServiceToken(dir));
  });

  it('is replaced when the file holds something too short to be one', () => {
    fs.writeFileSync(path.join(dir, 'service-token'), 'short\n');
    expect(loadOrCreateServiceToken(dir)).not.toBe('short');
  });

  it('reads no admin token before the gateway wrote one', () => {
    expect(readAdminToken(path.join(dir, 'admin-token'))).toBeUndefined();
    fs.writeFileSync(path.join(dir, 'admin-token'), 'flt_abc\n');
    expect(readAdminToken(path.join(dir, 'admin-token'))).toBe('flt_abc');
  });
});

describe('embedded database ready line', () => {
  it('yields the URL of {"msg":"ready","url":…}', () => {
    expect(readyUrl('{"msg":"ready","url":"postgres://p@127.0.0.1:7490/postgres"}')).toBe(
      'postgres://p@127.0.0.1:7490/postgres',
    );
  });

  it.each(['{"level":30,"msg":"stopping"}', 'ready', '{"msg":"ready"}', '{oops'])('ignores %j', (line) => {
    expect(readyUrl(line)).toBeUndefined();
  });
});
