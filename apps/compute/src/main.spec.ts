import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

// Real: the built compute service (dist/, from tools/build.mjs) as a child process. Bad configuration must
// stop it before it touches a database or a port.

const main = path.join(__dirname, '../../../dist/apps/compute/src/main.js');

function run(env: Record<string, string>): Promise<{ code: number | null; stderr: string; stdout: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [main],
      { env: { PATH: process.env.PATH ?? '', ...env }, timeout: 20_000 },
      (error, stdout, stderr) =>
        resolve({ code: error ? ((error as { code?: number }).code ?? null) : 0, stdout, stderr }),
    );
  });
}

describe('compute start-up with bad configuration', () => {
  beforeAll(() => {
    if (!fs.existsSync(main)) throw new Error(`${main} is missing: run node tools/build.mjs first`);
  });

  it('exits non-zero with one line naming FLOTILLA_COMPUTE_ADDRESS when the address is nonsense', async () => {
    const { code, stderr } = await run({
      FLOTILLA_SERVICE_TOKEN: 'a-service-token-of-some-length',
      FLOTILLA_COMPUTE_ADDRESS: 'nonsense',
    });
    expect(code).not.toBe(0);
    const lines = stderr.trimEnd().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain('FLOTILLA_COMPUTE_ADDRESS="nonsense" must be host:port');
  });

  it('exits non-zero with one line naming the missing service token', async () => {
    const { code, stderr } = await run({});
    expect(code).not.toBe(0);
    expect(stderr.trimEnd().split('\n')).toEqual([
      expect.stringContaining('FLOTILLA_SERVICE_TOKEN is required'),
    ]);
  });
});
