import * as fs from 'node:fs';
import * as net from 'node:net';
import { pipeline } from 'node:stream/promises';
import { QmpClient } from './qmp-client';

/**
 * Suspend and resume move QEMU's migration stream between QEMU and a file in the VM directory. QEMU 7.2 has
 * no `file:` migration URI and the driver runs no shell (`exec:`), so the driver itself is the other end of
 * a `unix:` migration: it listens and writes what QEMU sends (save), or connects and feeds the file (restore).
 */

/** Far above any disk or memory speed: the guest is stopped, so there is no reason to throttle. */
const SAVE_BANDWIDTH_BYTES_PER_SEC = 64 * 1024 * 1024 * 1024;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function waitForMigration(qmp: QmpClient, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const m = await qmp.execute('query-migrate');
    if (m.status === 'completed') return;
    if (m.status === 'failed' || m.status === 'cancelled')
      throw new Error(`${what}: migration ${m.status}${m['error-desc'] ? `: ${m['error-desc']}` : ''}`);
    if (Date.now() > deadline)
      throw new Error(`${what}: not finished within ${timeoutMs} ms (status ${m.status})`);
    await sleep(50);
  }
}

/**
 * Saves a stopped VM's memory and device state into `file` (written as `file.partial`, renamed when complete
 * and synced, so an existing `file` is always a whole image). Returns its size in bytes.
 */
export async function saveVmState(options: {
  qmp: QmpClient;
  socketPath: string;
  file: string;
  timeoutMs: number;
}): Promise<number> {
  const { qmp, socketPath, file } = options;
  const partial = `${file}.partial`;
  fs.rmSync(socketPath, { force: true });
  const out = fs.createWriteStream(partial, { mode: 0o600 });
  let received: Promise<void> | undefined;
  const server = net.createServer((conn) => {
    // One stream only: QEMU opens a single connection for a precopy migration.
    server.close();
    received = pipeline(conn, out);
    received.catch(() => undefined); // awaited below; a failure must not go unhandled meanwhile
  });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(socketPath, resolve);
    });
    await qmp.execute('migrate-set-parameters', { 'max-bandwidth': SAVE_BANDWIDTH_BYTES_PER_SEC });
    await qmp.execute('migrate', { uri: `unix:${socketPath}` });
    await waitForMigration(qmp, options.timeoutMs, 'saving VM state');
    if (!received) throw new Error('saving VM state: QEMU never connected');
    await received;
    const fd = fs.openSync(partial, 'r');
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(partial, file);
    return fs.statSync(file).size;
  } catch (e) {
    out.destroy();
    fs.rmSync(partial, { force: true });
    throw e;
  } finally {
    server.close();
    fs.rmSync(socketPath, { force: true });
  }
}

/**
 * Feeds `file` to a QEMU started with `-incoming defer` and waits until it has loaded the state. The VM is
 * left paused (it was stopped when saved); the caller continues it.
 */
export async function restoreVmState(options: {
  qmp: QmpClient;
  socketPath: string;
  file: string;
  timeoutMs: number;
}): Promise<void> {
  const { qmp, socketPath, file } = options;
  fs.rmSync(socketPath, { force: true });
  // QEMU listens on the socket by the time migrate-incoming returns.
  await qmp.execute('migrate-incoming', { uri: `unix:${socketPath}` });
  const conn = net.createConnection(socketPath);
  await new Promise<void>((resolve, reject) => {
    conn.once('connect', resolve);
    conn.once('error', reject);
  });
  const sent = pipeline(fs.createReadStream(file), conn);
  sent.catch(() => undefined); // a failed send shows as a failed migration on QEMU's side
  try {
    // QEMU's word that it loaded the whole state is what counts: once it has, how our end of the socket
    // closed (it may see QEMU hang up first) does not matter.
    await waitForMigration(qmp, options.timeoutMs, 'restoring VM state');
  } finally {
    conn.destroy();
    fs.rmSync(socketPath, { force: true });
  }
}
