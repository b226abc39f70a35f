import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { SerialConsoleHub, tailFile, trimLogFile } from './serial-console';

// Real sockets and files; the peer is a net.Server standing in for QEMU's console chardev, which, like it,
// serves one client. The driver tests attach to a real guest's console.

describe('serial console', () => {
  let dir: string;
  beforeEach(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-console-'))));
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('shares one connection among consoles: output fans out, writes reach the guest, a closed VM ends them', async () => {
    const sock = path.join(dir, 'console.sock');
    const connections: net.Socket[] = [];
    const typed: string[] = [];
    const server = net.createServer((c) => {
      connections.push(c);
      c.on('data', (d) => typed.push(d.toString()));
    });
    await new Promise<void>((r) => server.listen(sock, r));
    try {
      const hub = new SerialConsoleHub(sock);
      const a = await hub.attach();
      const b = await hub.attach();
      expect(connections).toHaveLength(1);
      const ia = a.output[Symbol.asyncIterator]();
      const ib = b.output[Symbol.asyncIterator]();
      connections[0].write('TICK 7\n');
      expect((await ia.next()).value?.toString()).toBe('TICK 7\n');
      expect((await ib.next()).value?.toString()).toBe('TICK 7\n');
      a.write(Buffer.from('ls\n'));
      b.write(Buffer.from('pwd\n'));
      await new Promise((r) => setTimeout(r, 50));
      expect(typed.join('')).toBe('ls\npwd\n');
      connections[0].destroy(); // QEMU went away
      expect(await ia.next()).toEqual({ value: undefined, done: true });
      expect(await ib.next()).toEqual({ value: undefined, done: true });
    } finally {
      server.close();
    }
  });

  it('reads the tail of a log, and trims a log that grew too big', () => {
    const log = path.join(dir, 'serial.log');
    expect(tailFile(log, 10)).toEqual(Buffer.alloc(0));
    fs.writeFileSync(log, 'abcdefghij');
    expect(tailFile(log, 4).toString()).toBe('ghij');
    expect(tailFile(log, 100).toString()).toBe('abcdefghij');
    trimLogFile(log, 20, 3);
    expect(fs.readFileSync(log, 'utf8')).toBe('abcdefghij');
    trimLogFile(log, 5, 3);
    expect(fs.readFileSync(log, 'utf8')).toBe('hij');
  });
});
