/**
 * End to end, as a newcomer does it: `flotilla up` (what `npm start` runs) starts the whole local cloud —
 * embedded database, every service, two host agents, each its own process — and the `flotilla` CLI drives
 * it with the profile `up` wrote. Real: processes, gRPC on loopback, the embedded PGlite, the CLI binary.
 * Fake: the hypervisor (sim driver), since this suite is about the control plane.
 */
import { ChildProcess, execFile, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { demoImageForTests, realQemuMissing } from '@flotilla/hypervisor';
import { upBasePort } from '@flotilla/platform';
import { until, upPortOffsets } from './up-cloud';

const root = path.resolve(__dirname, '../..');
const bin = path.join(root, 'bin/flotilla.js');
let basePort: number;
let dir: string;
let up: ChildProcess;
let upOutput = '';
let env: NodeJS.ProcessEnv;

interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

function cli(...args: string[]): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(process.execPath, [bin, ...args], { env, timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

async function json<T>(...args: string[]): Promise<T> {
  const r = await cli(...args, '--json');
  if (r.code !== 0) throw new Error(`flotilla ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

const waitFor = <T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 90_000): Promise<T> =>
  until(what, probe, {
    timeoutMs,
    everyMs: 300,
    context: () => `--- up output ---\n${upOutput.slice(-4000)}`,
  });

/** Pids of processes started for this test's cloud (their environment names its data directory). */
function cloudPids(): number[] {
  const marker = `FLOTILLA_DATA_DIR=${path.join(dir, 'var')}`;
  return fs
    .readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p) && Number(p) !== up?.pid)
    .filter((p) => {
      try {
        return fs.readFileSync(`/proc/${p}/environ`, 'utf8').split('\0').includes(marker);
      } catch {
        return false;
      }
    })
    .map(Number);
}

function cmdline(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
  } catch {
    return '';
  }
}

type Vm = { id: string; name: string; powerState: string; hostId: string };

beforeAll(async () => {
  basePort = await upBasePort(upPortOffsets(2));
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-e2e-'));
  env = {
    PATH: process.env.PATH,
    HOME: dir,
    FLOTILLA_CONFIG: path.join(dir, 'config.json'),
    FLOTILLA_LOG_LEVEL: 'info',
  };
  up = spawn(
    process.execPath,
    [bin, 'up', '--data-dir', path.join(dir, 'var'), '--base-port', String(basePort), '--driver', 'sim'],
    {
      env,
      cwd: dir,
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  up.stdout!.on('data', (d: Buffer) => (upOutput += d.toString()));
  up.stderr!.on('data', (d: Buffer) => (upOutput += d.toString()));
  await waitFor('the profile written by up', async () =>
    fs.existsSync(env.FLOTILLA_CONFIG!) ? true : undefined,
  );
}, 120_000);

afterAll(async () => {
  if (up && up.exitCode === null) {
    up.kill('SIGKILL');
    for (const pid of cloudPids()) process.kill(pid, 'SIGKILL');
  }
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('the local cloud started by `flotilla up`, driven by the CLI', () => {
  it('prints the admin token once and writes a profile the next command uses without flags', async () => {
    const token = fs.readFileSync(path.join(dir, 'var/admin-token'), 'utf8').trim();
    expect(upOutput).toContain(token);
    const me = await json<{ token: { role: string }; tenantName: string }>('whoami');
    expect(me.token.role).toBe('ROLE_POOL_ADMIN');
    expect(me.tenantName).toBe('admin');
  });

  it('builds the demo guest into the catalogue directory `up` gives its agents and registers it once', async () => {
    const profile = JSON.parse(fs.readFileSync(env.FLOTILLA_CONFIG!, 'utf8')) as {
      profiles: Record<string, { imageDir?: string }>;
    };
    const imageDir = profile.profiles.local.imageDir!;
    expect(imageDir).toBe(path.join(dir, 'var', 'images'));
    if (realQemuMissing()) {
      // No QEMU or Debian tools here (the real-VM suites say so and are skipped): these sim hosts boot
      // nothing, so a registered image whose files exist is all the VM tests below need.
      fs.mkdirSync(path.join(imageDir, 'demo'), { recursive: true });
      for (const f of ['vmlinuz', 'initrd.img'])
        fs.writeFileSync(path.join(imageDir, 'demo', f), `not a ${f}`);
      const registered = await cli(
        'image',
        'register',
        'demo',
        '--kernel',
        'demo/vmlinuz',
        '--initrd',
        'demo/initrd.img',
      );
      expect(registered.code).toBe(0);
      return;
    }
    // The build is cached per machine; copied in, `image build-demo` only reads its manifest and registers.
    const demo = await demoImageForTests();
    fs.cpSync(demo.dir, path.join(imageDir, 'demo'), { recursive: true });

    const first = await cli('image', 'build-demo');
    expect(first.code).toBe(0);
    expect(first.stdout).toMatch(/image demo registered/);
    const again = await cli('image', 'build-demo');
    expect(again.code).toBe(0);
    expect(again.stdout).toMatch(/image demo already registered with these files/);

    const { image } = await json<{ image: Record<string, unknown> }>('image', 'show', 'demo');
    expect(image).toMatchObject({
      kind: 'IMAGE_KIND_KERNEL',
      visibility: 'IMAGE_VISIBILITY_PUBLIC',
      state: 'IMAGE_STATE_AVAILABLE',
      kernelPath: 'demo/vmlinuz',
      sha256: demo.files.kernel.sha256,
      cmdline: demo.defaultCmdline,
    });
    expect((await cli('image', 'list')).stdout).toMatch(/^demo\s/m);
    expect((await cli('image', 'show', 'no-such-image')).code).toBe(2);
  }, 600_000);

  it('registers both host agents as ENABLED hosts with the sim driver', async () => {
    const hosts = await waitFor('two enabled hosts', async () => {
      const { hosts } = await json<{ hosts: Array<{ name: string; state: string; driver: string }> }>(
        'host',
        'list',
      );
      return hosts.filter((h) => h.state === 'HOST_STATE_ENABLED').length === 2 ? hosts : undefined;
    });
    expect(hosts.map((h) => [h.name, h.driver]).sort()).toEqual([
      ['host-1', 'sim'],
      ['host-2', 'sim'],
    ]);
  });

  it('runs a VM through its lifecycle with exit codes scripts can rely on', async () => {
    expect((await cli('vm', 'create', 'web-1', '--flavor', 'm1.tiny')).code).toBe(0);
    const list = await json<{ vms: Vm[] }>('vm', 'list');
    expect(list.vms.map((v) => [v.name, v.powerState])).toEqual([['web-1', 'POWER_STATE_RUNNING']]);

    expect((await cli('vm', 'pause', 'web-1')).code).toBe(0);
    expect((await json<{ vm: Vm }>('vm', 'show', 'web-1')).vm.powerState).toBe('POWER_STATE_PAUSED');

    const refused = await cli('vm', 'stop', 'web-1');
    expect(refused.code).toBe(3);
    expect(refused.stderr).toMatch(/^flotilla: .*PAUSED.*allowed operations/m);
    expect(refused.stderr).not.toMatch(/\n\s+at /);

    expect((await cli('vm', 'unpause', 'web-1')).code).toBe(0);
    expect((await cli('vm', 'reboot', 'web-1')).code).toBe(0);
    expect((await cli('vm', 'stop', 'web-1', '--hard')).code).toBe(0);
    expect((await json<{ vm: Vm }>('vm', 'show', 'web-1')).vm.powerState).toBe('POWER_STATE_HALTED');
    expect((await cli('vm', 'delete', 'web-1')).code).toBe(0);
    expect((await cli('vm', 'show', 'web-1')).code).toBe(2);
  });

  it('answers bad input with a one-line error naming the field', async () => {
    const r = await cli('vm', 'create', 'bad name!', '--flavor', 'm1.tiny');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^flotilla: .*name/m);
    const unknownFlavor = await cli('vm', 'create', 'web-2', '--flavor', 'no-such-flavor');
    expect(unknownFlavor.code).toBe(2);
    expect(unknownFlavor.stderr).toContain('flavor');
  });

  it('restarts a host agent that is killed, and the host stays usable', async () => {
    const agent = await waitFor('host-1 agent process', async () =>
      cloudPids().find(
        (p) =>
          cmdline(p).includes('host-agent') &&
          fs.readFileSync(`/proc/${p}/environ`, 'utf8').includes('FLOTILLA_AGENT_NAME=host-1'),
      ),
    );
    process.kill(agent, 'SIGKILL');
    await waitFor('a new host-1 agent', async () =>
      cloudPids().find(
        (p) =>
          p !== agent &&
          cmdline(p).includes('host-agent') &&
          fs.readFileSync(`/proc/${p}/environ`, 'utf8').includes('FLOTILLA_AGENT_NAME=host-1'),
      ),
    );
    expect(upOutput).toMatch(/host-1.*restart/i);
    const unplaceable = await cli(
      'vm',
      'create',
      'web-3',
      '--flavor',
      'm1.tiny',
      '--require-host-label',
      'zone=nowhere',
    );
    expect(unplaceable.code).toBe(6);
    expect(unplaceable.stderr).toMatch(/2 hosts? .*required-labels/);
    expect((await cli('vm', 'create', 'web-4', '--flavor', 'm1.tiny')).code).toBe(0);
  });

  it('stops every process cleanly on Ctrl-C', async () => {
    const exited = new Promise<number | null>((resolve) => up.once('exit', (code) => resolve(code)));
    up.kill('SIGINT');
    expect(await exited).toBe(0);
    await waitFor(
      'no process of the cloud left',
      async () => (cloudPids().length === 0 ? true : undefined),
      15_000,
    );
  });
});
