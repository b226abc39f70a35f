/**
 * A local cloud started as an operator starts it, for end-to-end suites: `flotilla up` (every service and
 * host agent its own supervised process, the embedded PGlite) in a temporary directory with its own ports,
 * the CLI run as a child process with the profile `up` wrote, and the demo appliance registered.
 */
import { ChildProcess, execFile, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { computeV1 } from '@flotilla/contracts';
import { demoImageForTests } from '@flotilla/hypervisor';
import { cloudClients, CloudClients } from '@flotilla/platform';

const root = path.resolve(__dirname, '../..');
const bin = path.join(root, 'bin/flotilla.js');

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface UpCloud {
  dir: string;
  /** The gateway's gRPC port; the others keep their distance from it (EC2 +1373, OpenStack +1374). */
  basePort: number;
  /** The environment the CLI runs with (HOME and FLOTILLA_CONFIG inside dir). */
  env: NodeJS.ProcessEnv;
  admin: CloudClients;
  adminToken: string;
  cli(...args: string[]): Promise<CliResult>;
  /** Runs the CLI and returns its stdout; a non-zero exit throws with what it printed. */
  cliOk(...args: string[]): Promise<string>;
  /** Polls probe until it returns something other than undefined; the timeout error shows up's last lines. */
  until<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs?: number): Promise<T>;
  output(): string;
  stop(): Promise<void>;
}

export async function startUpCloud(options: {
  driver: 'qemu' | 'sim';
  agents?: number;
  /** Registers the demo appliance (`image build-demo`) once the hosts are up. */
  demoImage?: boolean;
}): Promise<UpCloud> {
  const basePort = 20000 + Math.floor(Math.random() * 50) * 100;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-e2e-'));
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: dir,
    FLOTILLA_CONFIG: path.join(dir, 'config.json'),
    FLOTILLA_LOG_LEVEL: 'info',
  };
  let upOutput = '';
  const up: ChildProcess = spawn(
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
      String(options.agents ?? 1),
    ],
    { env, cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const keep = (d: Buffer) => (upOutput = (upOutput + d.toString()).slice(-200_000));
  up.stdout!.on('data', keep);
  up.stderr!.on('data', keep);

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
  const until = async <T>(
    what: string,
    probe: () => Promise<T | undefined> | T | undefined,
    timeoutMs = 120_000,
  ): Promise<T> => {
    const deadline = Date.now() + timeoutMs;
    let last: unknown;
    while (Date.now() < deadline) {
      try {
        const v = await probe();
        if (v !== undefined) return v;
      } catch (e) {
        last = e;
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error(
      `timed out waiting for ${what}: ${last instanceof Error ? last.message : String(last ?? '')}\n` +
        `--- flotilla up (last lines) ---\n${upOutput.slice(-5000)}`,
    );
  };

  let admin: CloudClients | undefined;
  const stop = async () => {
    if (admin) for (const c of Object.values(admin)) c.close();
    if (up.exitCode === null) {
      const exited = new Promise((r) => up.once('exit', r));
      up.kill('SIGINT');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 30_000))]);
    }
    // Nothing of this cloud outlives it: VMs outlive the control plane by design, so they go by hand.
    for (const p of fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
      let cmdline = '';
      try {
        cmdline = fs.readFileSync(`/proc/${p}/cmdline`, 'utf8');
      } catch {
        continue;
      }
      if (cmdline.includes(dir)) process.kill(Number(p), 'SIGKILL');
    }
    fs.rmSync(dir, { recursive: true, force: true });
  };

  try {
    await until('the profile `up` writes', () => (fs.existsSync(env.FLOTILLA_CONFIG!) ? true : undefined));
    const adminToken = fs.readFileSync(path.join(dir, 'var/admin-token'), 'utf8').trim();
    admin = cloudClients(`127.0.0.1:${basePort}`, adminToken);
    const clients = admin;
    await until(`${options.agents ?? 1} ENABLED host(s)`, async () => {
      const { hosts } = await clients.hosts.call.listHosts({
        page: { pageSize: 100, pageToken: '', filter: '' },
      });
      const ready = hosts.filter((h) => h.state === computeV1.HostState.HOST_STATE_ENABLED);
      return ready.length === (options.agents ?? 1) ? ready : undefined;
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
      cli,
      cliOk,
      until,
      output: () => upOutput,
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}
