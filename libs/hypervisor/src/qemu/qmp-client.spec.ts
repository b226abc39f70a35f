import { spawn, ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { QmpClient, QmpConnectionError, QmpError } from './qmp-client';
import { describeWithRealQemu } from './real-qemu.testing';

// Real: a QEMU with no guest (-S) for the protocol, and tiny net.Servers for what QEMU never does on purpose
// (drop mid-command, stay silent, send garbage).

async function waitForSocket(p: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!fs.existsSync(p)) {
    if (Date.now() > deadline) throw new Error(`${p} did not appear`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('QMP client', () => {
  let dir: string;
  beforeAll(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-qmp-'))));
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  describeWithRealQemu('against a real QEMU', () => {
    let qemu: ChildProcess;
    let sock: string;
    beforeAll(async () => {
      sock = path.join(dir, 'qmp.sock');
      const log = fs.openSync(path.join(dir, 'qemu.log'), 'w');
      qemu = spawn(
        'qemu-system-x86_64',
        [
          '-S',
          '-display',
          'none',
          '-nodefaults',
          '-machine',
          'q35',
          '-accel',
          'tcg',
          '-qmp',
          `unix:${sock},server=on,wait=off`,
        ],
        { stdio: ['ignore', log, log] },
      );
      fs.closeSync(log);
      await waitForSocket(sock);
    });
    afterAll(() => {
      qemu.kill('SIGKILL');
    });

    it('reads the greeting, negotiates capabilities and answers typed commands', async () => {
      const qmp = await QmpClient.connect({ socketPath: sock });
      expect(qmp.version?.major).toBeGreaterThanOrEqual(7);
      expect(await qmp.execute('query-status')).toMatchObject({ status: 'prelaunch', running: false });
      qmp.close();
    });

    it('correlates several commands in flight by id', async () => {
      const qmp = await QmpClient.connect({ socketPath: sock });
      const [status, version, kvm] = await Promise.all([
        qmp.execute('query-status'),
        qmp.execute('query-version'),
        qmp.execute('query-kvm'),
      ]);
      expect(status.status).toBe('prelaunch');
      expect(version.qemu.major).toBeGreaterThanOrEqual(7);
      expect(kvm.enabled).toBe(false);
      qmp.close();
    });

    it("surfaces QEMU's error class and description", async () => {
      const qmp = await QmpClient.connect({ socketPath: sock });
      const error = await qmp.executeRaw('no-such-command').catch((e: unknown) => e);
      expect(error).toBeInstanceOf(QmpError);
      expect(error).toMatchObject({ errorClass: 'CommandNotFound', command: 'no-such-command' });
      expect((error as QmpError).desc).toContain('no-such-command');
      qmp.close();
    });

    it('delivers asynchronous events as typed events', async () => {
      const qmp = await QmpClient.connect({ socketPath: sock });
      const resumed = qmp.waitForEvent('RESUME', { timeoutMs: 5000 });
      const all: string[] = [];
      qmp.on('event', (e) => all.push(e.event));
      await qmp.execute('cont');
      const stopped = qmp.waitForEvent('STOP', { timeoutMs: 5000 });
      await qmp.execute('stop');
      expect((await resumed).event).toBe('RESUME');
      await stopped;
      expect(all).toEqual(expect.arrayContaining(['RESUME', 'STOP']));
      qmp.close();
    });

    it('fails pending commands with a specific error when QEMU exits', async () => {
      const qmp = await QmpClient.connect({ socketPath: sock });
      const shutdown = qmp.waitForEvent('SHUTDOWN', { timeoutMs: 5000 });
      await qmp.execute('quit');
      expect((await shutdown).data.reason).toBe('host-qmp-quit');
      const reason = await qmp.closed;
      expect(reason.kind).toBe('closed');
      await expect(qmp.execute('query-status')).rejects.toBeInstanceOf(QmpConnectionError);
    });
  });

  describe('against a misbehaving peer', () => {
    const servers: net.Server[] = [];
    afterAll(() => servers.forEach((s) => s.close()));

    function peer(name: string, onConnection: (socket: net.Socket) => void): Promise<string> {
      const p = path.join(dir, name);
      const server = net.createServer(onConnection);
      servers.push(server);
      return new Promise((resolve) => server.listen(p, () => resolve(p)));
    }
    const greeting =
      '{"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0}}, "capabilities": []}}\n';
    /** Answers qmp_capabilities, then hands each later command to `onCommand`. */
    function fakeQemu(socket: net.Socket, onCommand: (cmd: { execute: string; id: string }) => void): void {
      socket.write(greeting);
      let buf = '';
      socket.on('data', (d) => {
        buf += d.toString();
        let i: number;
        while ((i = buf.indexOf('\n')) >= 0) {
          const cmd = JSON.parse(buf.slice(0, i)) as { execute: string; id: string };
          buf = buf.slice(i + 1);
          if (cmd.execute === 'qmp_capabilities')
            socket.write(JSON.stringify({ return: {}, id: cmd.id }) + '\n');
          else onCommand(cmd);
        }
      });
    }

    it('rejects every pending command with a closed error when the socket drops mid-command', async () => {
      // Two commands in flight; the peer dies on the second one without answering either.
      const sock = await peer('drop.sock', (s) =>
        fakeQemu(s, (cmd) => {
          if (cmd.execute === 'query-version') s.destroy();
        }),
      );
      const qmp = await QmpClient.connect({ socketPath: sock });
      const [ra, rb] = await Promise.allSettled([qmp.execute('query-status'), qmp.execute('query-version')]);
      expect(ra).toMatchObject({ status: 'rejected', reason: { kind: 'closed' } });
      expect(rb).toMatchObject({ status: 'rejected', reason: { kind: 'closed' } });
      expect(((ra as PromiseRejectedResult).reason as Error).message).toContain('query-status');
      expect(((rb as PromiseRejectedResult).reason as Error).message).toContain('query-version');
    });

    it('ends a pending command when the peer closes the connection', async () => {
      const sock = await peer('close.sock', (s) => fakeQemu(s, () => s.end()));
      const qmp = await QmpClient.connect({ socketPath: sock });
      const error = await qmp.execute('query-status').catch((e: unknown) => e);
      expect(error).toBeInstanceOf(QmpConnectionError);
      expect(error).toMatchObject({ kind: 'closed' });
      expect((error as Error).message).toContain('query-status');
    });

    it('times out a command that gets no answer, and answers the next one', async () => {
      const sock = await peer('slow.sock', (s) =>
        fakeQemu(s, (cmd) => {
          if (cmd.execute === 'query-version')
            s.write(JSON.stringify({ return: { x: 1 }, id: cmd.id }) + '\n');
        }),
      );
      const qmp = await QmpClient.connect({ socketPath: sock });
      const error = await qmp.execute('query-status', undefined, { timeoutMs: 50 }).catch((e: unknown) => e);
      expect(error).toMatchObject({ kind: 'timeout' });
      expect(await qmp.execute('query-version')).toEqual({ x: 1 });
      qmp.close();
    });

    it('refuses a peer that sends no greeting', async () => {
      const sock = await peer('silent.sock', () => undefined);
      await expect(QmpClient.connect({ socketPath: sock, timeoutMs: 100 })).rejects.toMatchObject({
        kind: 'timeout',
      });
    });

    it('cuts off a peer that sends garbage, failing what was pending', async () => {
      const sock = await peer('garbage.sock', (s) => fakeQemu(s, () => s.write('this is not json\n')));
      const qmp = await QmpClient.connect({ socketPath: sock });
      await expect(qmp.execute('query-status')).rejects.toMatchObject({ kind: 'protocol' });
      expect(qmp.isClosed).toBe(true);
    });

    it('reports a missing socket as a connect error', async () => {
      await expect(QmpClient.connect({ socketPath: path.join(dir, 'absent.sock') })).rejects.toMatchObject({
        kind: 'connect',
      });
    });
  });
});
