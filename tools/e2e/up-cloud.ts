/**
 * A local cloud started as an operator starts it, for end-to-end suites: `flotilla up` (every service and
 * host agent its own supervised process, the embedded PGlite) in a temporary directory with its own ports,
 * the CLI run as a child process with the profile `up` wrote, and the demo appliance registered.
 */
import { ChildProcessByStdio, execFile, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Readable } from 'node:stream';
import { computeV1 } from '@flotilla/contracts';
import { demoImageForTests } from '@flotilla/hypervisor';
import { cloudClients, CloudClients, upBasePort, waitFor } from '@flotilla/platform';
import { portsFor } from '../../apps/cli/src/up/services';

const root = path.resolve(__dirname, '../..');
const bin = path.join(root, 'bin/flotilla.js');

/** Where `flotilla up --agents N` listens, relative to its base port (its own port plan). */
export function upPortOffsets(agents: number): number[] {
  const ports = portsFor({ basePort: 0, agents });
  return Object.values(ports).flat();
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Polls probe until it returns something other than undefined (a throw counts as "not yet"); `context` adds
 * to the timeout error (up's last lines). Unlike waitFor, whose loop it uses, false and 0 are answers too.
 */
export async function until<T>(
  what: string,
  probe: () => Promise<T | undefined> | T | undefined,
  o: { timeoutMs?: number; everyMs?: number; context?: () => string } = {},
): Promise<T> {
  try {
    const answer = await waitFor(
      what,
      async () => {
        const v = await probe();
        return v === undefined ? undefined : { v };
      },
      { timeoutMs: o.timeoutMs ?? 120_000, intervalMs: o.everyMs ?? 200 },
    );
    return answer.v;
  } catch (e) {
    if (!o.context) throw e;
    throw new Error(`${e instanceof Error ? e.message : String(e)}\n${o.context()}`);
  }
}

/** The contents of /proc/<pid>/<file>, or '' once the process is gone (or not readable). */
export function procFile(pid: string | number, file: string): string {
  try {
    return fs.readFileSync(`/proc/${pid}/${file}`, 'utf8');
  } catch {
    return '';
  }
}

export interface UpCloud {
  dir: string;
  /** The gateway's gRPC port; the others keep their distance from it (EC2 +1373, OpenStack +1374). */
  basePort: number;
  /** The environment the CLI runs with (HOME and FLOTILLA_CONFIG inside dir). */
  env: NodeJS.ProcessEnv;
  admin: CloudClients;
  adminToken: string;
  /** The ENABLED hosts, by name. */
  hosts: computeV1.Host[];
  cli(...args: string[]): Promise<CliResult>;
  /** Runs the CLI and returns its stdout; a non-zero exit throws with what it printed. */
  cliOk(...args: string[]): Promise<string>;
  /** Polls probe until it returns something other than undefined; the timeout error shows up's last lines. */
  until<T>(
    what: string,
    probe: () => Promise<T | undefined> | T | undefined,
    timeoutMs?: number,
    everyMs?: number,
  ): Promise<T>;
  output(): string;
  stop(): Promise<void>;
}

export async function startUpCloud(options: {
  driver: 'qemu' | 'sim';
  /** Host agents (1 unless said). */
  agents?: number;
  /** Registers the demo appliance (`image build-demo`) once the hosts are up. */
  demoImage?: boolean;
  /** The gateway's port; by default this jest worker's (upBasePort: suites running together pick apart). */
  basePort?: number;
  /** Names the temporary directory (default "flotilla-e2e-"). */
  dirPrefix?: string;
}): Promise<UpCloud> {
  const agents = options.agents ?? 1;
  const basePort = options.basePort ?? (await upBasePort(upPortOffsets(agents)));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), options.dirPrefix ?? 'flotilla-e2e-'));
  const profile = path.join(dir, 'config.json');
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: dir,
    FLOTILLA_CONFIG: profile,
    FLOTILLA_LOG_LEVEL: 'info',
  };
  let upOutput = '';
  // Typed by its stdio: both output streams are pipes.
  const up: ChildProcessByStdio<null, Readable, Readable> = spawn(
    process.execPath,
    [
      bin,
      'up',
      '--data-dir',
      path.join(dir, 'var'),
      '--base-port',
      String(basePort),
      '--driver',
      options.driver,
      '--agents',
      String(agents),
    ],
    { env, cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const keep = (d: Buffer) => (upOutput = (upOutput + d.toString()).slice(-200_000));
  up.stdout.on('data', keep);
  up.stderr.on('data', keep);

  const cli = (...args: string[]): Promise<CliResult> =>
    new Promise((resolve) =>
      execFile(process.execPath, [bin, ...args], { env, timeout: 300_000 }, (err, stdout, stderr) =>
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
      ),
    );
  const cliOk = async (...args: string[]): Promise<string> => {
    const r = await cli(...args);
    if (r.code !== 0) throw new Error(`flotilla ${args.join(' ')} exited ${r.code}: ${r.stderr}${r.stdout}`);
    return r.stdout;
  };
  const upUntil = <T>(
    what: string,
    probe: () => Promise<T | undefined> | T | undefined,
    timeoutMs?: number,
    everyMs?: number,
  ): Promise<T> =>
    until(what, probe, {
      timeoutMs,
      everyMs,
      context: () => `--- flotilla up (last lines) ---\n${upOutput.slice(-5000)}`,
    });

  let admin: CloudClients | undefined;
  const stop = async () => {
    if (admin) for (const c of Object.values(admin)) c.close();
    if (up.exitCode === null) {
      const exited = new Promise((r) => up.once('exit', r));
      up.kill('SIGINT');
      // unref: the timer left behind once up has exited must not keep jest's process alive.
      await Promise.race([exited, new Promise((r) => setTimeout(r, 30_000).unref())]);
    }
    // Nothing of this cloud outlives it: a process `up` did not stop in time (its environment names the data
    // directory), and VMs, which outlive the control plane by design (their command line names it).
    const marker = `FLOTILLA_DATA_DIR=${path.join(dir, 'var')}`;
    for (const p of fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p)))
      if (procFile(p, 'environ').split('\0').includes(marker) || procFile(p, 'cmdline').includes(dir))
        try {
          process.kill(Number(p), 'SIGKILL');
        } catch {
          // Gone on its own meanwhile.
        }
    fs.rmSync(dir, { recursive: true, force: true });
  };

  try {
    await upUntil('the profile `up` writes', () => (fs.existsSync(profile) ? true : undefined));
    const adminToken = fs.readFileSync(path.join(dir, 'var/admin-token'), 'utf8').trim();
    admin = cloudClients(`127.0.0.1:${basePort}`, adminToken);
    const clients = admin;
    const hosts = await upUntil(`${agents} ENABLED host(s)`, async () => {
      const { hosts: all } = await clients.hosts.call.listHosts({
        page: { pageSize: 100, pageToken: '', filter: '' },
      });
      const ready = all.filter((h) => h.state === computeV1.HostState.HOST_STATE_ENABLED);
      return ready.length === agents ? ready.sort((a, b) => a.name.localeCompare(b.name)) : undefined;
    });
    if (options.demoImage) {
      // The build is cached per machine; copied in, `image build-demo` only reads its manifest and registers.
      const demo = await demoImageForTests();
      fs.cpSync(demo.dir, path.join(dir, 'var', 'images', 'demo'), { recursive: true });
      await cliOk('image', 'build-demo');
    }
    return {
      dir,
      basePort,
      env,
      admin: clients,
      adminToken,
      hosts,
      cli,
      cliOk,
      until: upUntil,
      output: () => upOutput,
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}
