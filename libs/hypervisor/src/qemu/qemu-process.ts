import { ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import { DriverError } from '../driver';
import { VmDirectory } from './vm-directory';

export const QEMU_BINARY = 'qemu-system-x86_64';

/** How a QEMU we spawned ended (only known for our own children; a re-attached one just disappears). */
export interface QemuExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A running QEMU of one VM. `exited` resolves when it is gone. */
export interface QemuProcess {
  pid: number;
  /** Present when this agent spawned it: Node reaps it and tells how it ended. */
  child?: ChildProcess;
  exited: Promise<QemuExit | undefined>;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Alive and not a zombie (a killed QEMU whose parent has not reaped it yet is gone for us). */
export function isProcessAlive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 3, after the parenthesised command name (which may itself hold spaces or parentheses).
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

/** True when `pid` is a QEMU started for this VM: its command line carries `-uuid <uuid>` (guards pid reuse). */
export function isQemuOfVm(pid: number, uuid: string): boolean {
  let args: string[];
  try {
    args = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  } catch {
    return false;
  }
  const i = args.indexOf('-uuid');
  return i >= 0 && args[i + 1] === uuid && isProcessAlive(pid);
}

/** The pid of the VM's live QEMU, by pidfile and command line; undefined when none runs. */
export function findLiveQemu(dir: VmDirectory, uuid: string): number | undefined {
  const pid = dir.readPid();
  return pid !== undefined && isQemuOfVm(pid, uuid) ? pid : undefined;
}

/** Polls until the process is gone; true if it went within the deadline. */
export async function waitForProcessExit(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (isProcessAlive(pid)) {
    if (Date.now() >= deadline) return false;
    await sleep(20);
  }
  return true;
}

/**
 * A QEMU this agent did not spawn (found after a restart): its end is seen by polling /proc, on unref'd timers
 * so that watching a VM never keeps the agent process alive.
 */
export function adoptQemu(pid: number): QemuProcess {
  const exited = (async () => {
    while (isProcessAlive(pid)) await new Promise<void>((r) => setTimeout(r, 200).unref());
    return undefined;
  })();
  return { pid, exited };
}

/** The end of QEMU's own log: why it refused to start. */
export function qemuLogTail(dir: VmDirectory, maxBytes = 600): string {
  return tail(dir.qemuLog, maxBytes);
}

function tail(file: string, maxBytes: number): string {
  try {
    const data = fs.readFileSync(file);
    return data
      .subarray(Math.max(0, data.length - maxBytes))
      .toString('utf8')
      .trim();
  } catch {
    return '';
  }
}

async function canConnect(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createConnection(socketPath);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/**
 * Starts QEMU detached (its own process group, stdout/stderr to qemu.log, not a pipe) so it outlives the
 * agent, and resolves once its QMP socket accepts connections. Refuses if a live QEMU already runs this VM.
 */
export async function spawnQemu(options: {
  dir: VmDirectory;
  uuid: string;
  argv: string[];
  binary?: string;
  timeoutMs?: number;
}): Promise<QemuProcess> {
  const { dir, uuid } = options;
  const running = findLiveQemu(dir, uuid);
  if (running !== undefined)
    throw new DriverError(
      'invalid-state',
      `vm ${dir.vmId} already runs in QEMU pid ${running}: a VM never runs twice`,
    );
  // A killed QEMU leaves its sockets; QEMU would replace them anyway, but a stale qmp.sock must not be
  // mistaken for the new one while we wait. The pidfile stays: QEMU's lock on it is the last guard.
  dir.removeSockets();
  const log = fs.openSync(dir.qemuLog, 'a', 0o600);
  let child: ChildProcess;
  try {
    fs.writeSync(
      log,
      `--- ${new Date().toISOString()} ${options.binary ?? QEMU_BINARY} ${options.argv.join(' ')}\n`,
    );
    child = spawn(options.binary ?? QEMU_BINARY, options.argv, {
      detached: true,
      stdio: ['ignore', log, log],
      cwd: dir.dir,
    });
  } finally {
    fs.closeSync(log);
  }
  child.unref();
  let exit: QemuExit | undefined;
  let spawnError: Error | undefined;
  const exited = new Promise<QemuExit | undefined>((resolve) => {
    child.once('exit', (code, signal) => resolve((exit = { code, signal })));
    child.once('error', (e) => {
      spawnError = e;
      resolve((exit = { code: null, signal: null }));
    });
  });
  const deadline = Date.now() + (options.timeoutMs ?? 10_000);
  for (;;) {
    if (exit) {
      const why = spawnError ? spawnError.message : tail(dir.qemuLog, 600) || `exit code ${exit.code}`;
      throw new DriverError('failed', `QEMU for vm ${dir.vmId} exited at start: ${why}`);
    }
    if (fs.existsSync(dir.qmpSocket) && (await canConnect(dir.qmpSocket))) break;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new DriverError(
        'failed',
        `QEMU for vm ${dir.vmId} opened no QMP socket within ${options.timeoutMs ?? 10_000} ms`,
      );
    }
    await sleep(10);
  }
  if (child.pid === undefined) throw new DriverError('failed', `QEMU for vm ${dir.vmId} has no pid`);
  return { pid: child.pid, child, exited };
}

/** Sends a signal to the VM's QEMU only if `pid` is still that QEMU (never to a recycled pid). */
export function signalQemu(pid: number, uuid: string, signal: NodeJS.Signals): boolean {
  if (!isQemuOfVm(pid, uuid)) return false;
  try {
    process.kill(pid, signal);
    return true;
  } catch {
    return false;
  }
}
