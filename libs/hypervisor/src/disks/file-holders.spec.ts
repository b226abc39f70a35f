import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describeHolders, fileHolders } from './file-holders';

describe('fileHolders', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'holders-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('finds this process holding a file it opened, and nobody once it is closed', () => {
    const file = path.join(dir, 'disk.qcow2');
    fs.writeFileSync(file, 'x');
    const fd = fs.openSync(file, 'r');
    try {
      expect(fileHolders(file).map((h) => h.pid)).toContain(process.pid);
    } finally {
      fs.closeSync(fd);
    }
    expect(fileHolders(file).map((h) => h.pid)).not.toContain(process.pid);
  });

  it("names QEMU's guest from its -name argument", () => {
    const file = path.join(dir, 'disk.qcow2');
    fs.writeFileSync(file, 'x');
    const proc = path.join(dir, 'proc');
    for (const [pid, argv] of [
      ['41', ['/usr/bin/qemu-system-x86_64', '-name', 'guest=web,,1', '-m', '256']],
      ['42', ['/usr/bin/qemu-img', 'convert']],
      ['43', ['/bin/cat']],
    ] as const) {
      fs.mkdirSync(path.join(proc, pid, 'fd'), { recursive: true });
      fs.writeFileSync(path.join(proc, pid, 'cmdline'), argv.join('\0') + '\0');
      fs.symlinkSync(pid === '43' ? path.join(dir, 'other') : file, path.join(proc, pid, 'fd', '3'));
    }
    fs.mkdirSync(path.join(proc, 'self'));
    const holders = fileHolders(file, proc).sort((a, b) => a.pid - b.pid);
    expect(describeHolders(holders)).toBe('pid 41 (qemu-system-x86_64, guest web,1), pid 42 (qemu-img)');
  });

  it('answers nobody for a file that does not exist', () => {
    expect(fileHolders(path.join(dir, 'missing'))).toEqual([]);
  });
});
