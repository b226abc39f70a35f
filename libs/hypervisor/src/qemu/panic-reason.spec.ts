import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { panicReason } from './qemu-driver';

describe('panicReason', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'panic-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it("carries the console's last panic line, terminal escapes removed", () => {
    const log = path.join(dir, 'serial.log');
    fs.writeFileSync(
      log,
      'TICK 41\r\n[   12.5] Kernel panic - not syncing: Attempted to kill init! exitcode=0x0000000b\x1b[0m\r\n' +
        '[   12.5] CPU: 0 PID: 1 Comm: sh\r\n',
    );
    expect(panicReason(log)).toBe(
      'guest crashed (kernel panic): Kernel panic - not syncing: Attempted to kill init! exitcode=0x0000000b',
    );
  });

  it('says only that the guest crashed when the console has no panic line or no file', () => {
    const log = path.join(dir, 'serial.log');
    fs.writeFileSync(log, 'TICK 1\r\n');
    expect(panicReason(log)).toBe('guest crashed (kernel panic)');
    expect(panicReason(path.join(dir, 'missing.log'))).toBe('guest crashed (kernel panic)');
  });
});
