import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { commonV1, storageV1 } from '@flotilla/contracts';
import {
  freePort,
  GrpcClient,
  LocalCloud,
  md,
  startLocalCloud,
  testDatabase,
  uniqueSchema,
  waitFor,
} from '@flotilla/platform';

// Real: storage, compute, the database (PGlite, and PostgreSQL when TEST_DATABASE_URL is set), and one host
// agent run as its own process (node, this repository's sources compiled on load by swc) with real qemu-img
// on real files; the tests SIGKILL that process mid-copy, mid-snapshot and mid-coalesce, as a crash or the
// OOM killer would, and start it again on the same address and state directory. Fake: the hypervisor (sim
// driver; no VM runs). For the snapshot, `qemu-img` on the agent's PATH is a wrapper that, while a pause
// file exists, holds `qemu-img create` after it wrote its temporary overlay and before the agent publishes
// it: the crash point between the file work and its publication.

const MIB = 1024 * 1024;
const root = path.resolve(__dirname, '../../../..');
const { SrType, VdiState } = storageV1;

/** Loads apps/host-agent/src/main.ts in a fresh node, compiling TypeScript as jest does. */
const agentMain = `
const fs = require('fs');
const swc = require('@swc/core');
const root = ${JSON.stringify(root)};
const paths = require(root + '/tsconfig.base.json').compilerOptions.paths;
require.extensions['.ts'] = (m, filename) => {
  const out = swc.transformSync(fs.readFileSync(filename, 'utf8'), {
    filename, swcrc: false, sourceMaps: 'inline',
    jsc: { parser: { syntax: 'typescript', decorators: true },
      transform: { legacyDecorator: true, decoratorMetadata: true }, target: 'es2022', baseUrl: root, paths },
    module: { type: 'commonjs' },
  });
  m._compile(out.code, filename);
};
require(root + '/apps/host-agent/src/main.ts');
`;

interface ProcessAgent {
  pid(): number;
  /** SIGKILL, and wait until the process is gone. */
  kill(): Promise<void>;
  start(): Promise<void>;
  output(): string;
}

/** Child processes of `pid` whose command line contains every word (from /proc). */
function children(pid: number, ...words: string[]): number[] {
  const out: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const cmd = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (ppid === pid && words.every((w) => cmd.some((c) => c.includes(w)))) out.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** Processes (any parent) whose command line names a file under `dir`. */
function processesUsing(dir: string): string[] {
  const out: string[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const cmd = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (cmd.some((c) => c.startsWith(dir))) out.push(`${entry}: ${cmd.join(' ')}`);
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

const databases = testDatabase('PostgreSQL');
describe.each(databases)('storage when its host agent is killed mid-operation on %s', (_db, url) => {
  let cloud: LocalCloud;
  let agent: ProcessAgent;
  let vdis: GrpcClient<storageV1.VdiServiceClient>;
  let srs: GrpcClient<storageV1.SrServiceClient>;
  let ops: GrpcClient<commonV1.OperationServiceClient>;
  let srRoot: string;
  let a: storageV1.Sr;
  let b: storageV1.Sr;
  let big: storageV1.Vdi;
  /** A raw copy of big's content, to compare every VDI with. */
  let reference: string;
  let pauseCreate: string;

  beforeAll(async () => {
    cloud = await startLocalCloud({
      databaseUrl: url,
      schemaPrefix: uniqueSchema('agentfault'),
      agents: 0,
      computeEnv: { FLOTILLA_HOST_DOWN_AFTER_MS: '3000' },
    });
    const workDir = path.dirname(cloud.imageDir);
    srRoot = path.join(workDir, 'sr');
    // qemu-img as the agent finds it on its PATH: the real one unless the pause file exists (see above).
    const bin = path.join(workDir, 'bin');
    pauseCreate = path.join(workDir, 'pause-create');
    const real = execFileSync('sh', ['-c', 'command -v qemu-img'], { encoding: 'utf8' }).trim();
    fs.mkdirSync(bin, { recursive: true });
    fs.writeFileSync(
      path.join(bin, 'qemu-img'),
      `#!/bin/sh\nif [ "$1" = create ] && [ -e ${pauseCreate} ]; then\n  ${real} "$@" || exit $?\n  touch ${pauseCreate}.reached\n  exec sleep 120\nfi\nexec ${real} "$@"\n`,
      { mode: 0o755 },
    );
    agent = await processAgent({
      FLOTILLA_SERVICE_TOKEN: cloud.serviceToken,
      FLOTILLA_DATA_DIR: workDir,
      FLOTILLA_AGENT_ADDRESS: `127.0.0.1:${await freePort()}`,
      FLOTILLA_AGENT_NAME: 'host-p',
      FLOTILLA_AGENT_STATE_DIR: path.join(workDir, 'agents', 'host-p'),
      FLOTILLA_COMPUTE_URL: cloud.compute.address,
      FLOTILLA_IMAGE_DIR: cloud.imageDir,
      FLOTILLA_DRIVER: 'sim',
      FLOTILLA_LOG_LEVEL: 'warn',
      PATH: `${bin}:${process.env.PATH ?? '/usr/bin:/bin'}`,
    });
    const staticMetadata = { [md.serviceToken]: cloud.serviceToken };
    const make = <C>(service: string) =>
      new GrpcClient<C>({
        address: cloud.storageAddress,
        service,
        staticMetadata,
        defaultDeadlineMs: 60_000,
      });
    vdis = make<storageV1.VdiServiceClient>('flotilla.storage.v1.VdiService');
    srs = make<storageV1.SrServiceClient>('flotilla.storage.v1.SrService');
    ops = make<commonV1.OperationServiceClient>('flotilla.common.v1.OperationService');
    const hostId = await hostEnabled();
    a = await newSr('fa', hostId);
    b = await newSr('fb', hostId);
    // 256 MiB of random data that qemu-img must really copy, introduced by a scan.
    reference = path.join(workDir, 'big.raw');
    execFileSync('dd', ['if=/dev/urandom', `of=${reference}`, 'bs=1M', 'count=256', 'status=none']);
    execFileSync('qemu-img', [
      'convert',
      '-q',
      '-f',
      'raw',
      '-O',
      'qcow2',
      reference,
      path.join(a.path, 'big.qcow2'),
    ]);
    await succeeded((await srs.call.scanSr({ id: a.id, requestId: '' })).operation);
    big = (await vdis.call.listVdis({ page: { pageSize: 10, pageToken: '', filter: 'name=big.qcow2' } }))
      .vdis[0];
  }, 180_000);

  afterAll(async () => {
    await agent?.kill();
    vdis?.close();
    srs?.close();
    ops?.close();
    await cloud?.stop();
  });

  async function processAgent(env: Record<string, string>): Promise<ProcessAgent> {
    let child: ChildProcess | undefined;
    let exited = Promise.resolve();
    let tail = '';
    const handle: ProcessAgent = {
      pid: () => child?.pid ?? 0,
      output: () => tail,
      async kill() {
        if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
        await exited;
      },
      async start() {
        const c = spawn(process.execPath, ['-e', agentMain], {
          env,
          cwd: root,
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        child = c;
        const keep = (chunk: Buffer) => (tail = `${tail}${chunk.toString()}`.slice(-4000));
        c.stdout?.on('data', keep);
        c.stderr?.on('data', keep);
        exited = new Promise((r) => c.once('exit', () => r()));
        await hostEnabled();
      },
    };
    await handle.start();
    return handle;
  }

  async function hostEnabled(): Promise<string> {
    return waitFor(
      'host-p ENABLED',
      async () => {
        const { hosts } = await cloud.admin.hosts.call.listHosts({
          page: { pageSize: 100, pageToken: '', filter: 'state=ENABLED' },
        });
        return hosts.find((h) => h.name === 'host-p')?.id ?? false;
      },
      { timeoutMs: 60_000, intervalMs: 100 },
    );
  }

  async function newSr(name: string, hostId: string): Promise<storageV1.Sr> {
    const { operation } = await srs.call.createSr({
      requestId: '',
      name,
      description: '',
      labels: {},
      type: SrType.SR_TYPE_FILE,
      hostId,
      path: path.join(srRoot, name),
      tenantId: '',
      overprovisionRatio: 0,
      adoptExisting: false,
    });
    await succeeded(operation);
    const { sr } = await srs.call.getSr({ id: name });
    if (!sr) throw new Error(`SR ${name} vanished`);
    return sr;
  }

  async function end(id: string): Promise<commonV1.Operation> {
    for (;;) {
      const { operation } = await ops.call.waitOperation({ id, timeoutMs: 30_000 });
      if (!operation) throw new Error(`operation ${id} vanished`);
      if (!['OPERATION_STATE_PENDING', 'OPERATION_STATE_RUNNING'].includes(String(operation.state)))
        return operation;
    }
  }

  async function succeeded(op: commonV1.Operation | undefined): Promise<commonV1.Operation> {
    const done = await end(op?.id ?? '');
    if (done.state !== 'OPERATION_STATE_SUCCEEDED')
      throw new Error(`${done.kind} ${done.state}: ${done.error?.message}`);
    return done;
  }

  /** Every VDI record of the SR, hidden chain nodes included. */
  async function records(sr: storageV1.Sr): Promise<storageV1.Vdi[]> {
    const all: storageV1.Vdi[] = [];
    for (const managed of ['true', 'false'])
      all.push(
        ...(
          await vdis.call.listVdis({
            page: { pageSize: 1000, pageToken: '', filter: `sr_id=${sr.id},managed=${managed}` },
          })
        ).vdis,
      );
    return all;
  }

  /** The SR directory holds one sound file per record and no temporary; no process works on it. */
  async function consistent(sr: storageV1.Sr): Promise<void> {
    await waitFor(
      `SR ${sr.name}: one file per record, no temporaries`,
      async () => {
        const names = fs.readdirSync(sr.path).filter((f) => f !== '.flotilla-sr.json');
        const rows = await records(sr);
        if (!names.some((f) => f.startsWith('.')) && names.length === rows.length) return true;
        throw new Error(
          `files ${names.join(' ')}; records ${rows.map((r) => `${r.id} ${r.name} ${r.state} managed=${r.managed}`).join(', ')}`,
        );
      },
      { timeoutMs: 60_000, intervalMs: 200 },
    );
    for (const f of diskFiles(sr))
      execFileSync('qemu-img', ['check', '-q', '-U', '-f', 'qcow2', path.join(sr.path, f)]);
    expect(processesUsing(sr.path)).toEqual([]);
  }

  const diskFiles = (sr: storageV1.Sr) => fs.readdirSync(sr.path).filter((f) => !f.startsWith('.'));
  const backingOf = (file: string) =>
    (
      JSON.parse(execFileSync('qemu-img', ['info', '--output=json', '-U', file], { encoding: 'utf8' })) as {
        'backing-filename'?: string;
      }
    )['backing-filename'];

  /** The top of the SR's one chain: the file nothing else is backed by. */
  function topOf(sr: storageV1.Sr): string {
    const files = diskFiles(sr);
    const backing = new Set(files.map((f) => backingOf(path.join(sr.path, f))));
    const tops = files.filter((f) => !backing.has(f));
    expect(tops).toHaveLength(1);
    return path.join(sr.path, tops[0]);
  }

  const sameContent = (file: string) =>
    execFileSync('qemu-img', ['compare', '-q', '-U', '-f', 'qcow2', '-F', 'raw', file, reference]);

  it('rolls back a copy whose agent was killed mid-copy, leaving no temporary, and copies again after', async () => {
    const { vdi: copy, operation } = await vdis.call.copyVdi({
      id: big.id,
      requestId: '',
      srId: b.id,
      name: 'big copy',
      labels: {},
    });
    const pid = agent.pid();
    await waitFor(
      'qemu-img convert under way',
      () => {
        const tmp = fs.readdirSync(b.path).find((f) => f.startsWith('.tmp-'));
        return (
          children(pid, 'convert').length > 0 &&
          !!tmp &&
          fs.statSync(path.join(b.path, tmp)).blocks * 512 > 16 * MIB
        );
      },
      { timeoutMs: 30_000, intervalMs: 5 },
    );
    await agent.kill();
    // qemu-img dies with its agent: no orphan goes on writing into the SR.
    await waitFor('no qemu-img outliving the agent', () => processesUsing(b.path).length === 0, {
      timeoutMs: 500,
      intervalMs: 20,
    });
    const ended = await end(operation?.id ?? '');
    // The copy was not past its point of no return: it fails and is rolled back once the host is back.
    expect(ended.state).toBe('OPERATION_STATE_FAILED');
    expect(ended.error?.code).toBe(14);
    await agent.start();
    await waitFor(
      'the failed copy rolled back',
      () =>
        vdis.call.getVdi({ id: copy?.id ?? '' }).then(
          () => false,
          (e: { code?: number }) => e.code === 5,
        ),
      { timeoutMs: 60_000 },
    );
    await consistent(b);
    await consistent(a);
    sameContent(path.join(a.path, 'big.qcow2'));

    const again = await vdis.call.copyVdi({
      id: big.id,
      requestId: '',
      srId: b.id,
      name: 'big copy',
      labels: {},
    });
    await succeeded(again.operation);
    sameContent(path.join(b.path, `${again.vdi?.id}.qcow2`));
    await consistent(b);
  }, 180_000);

  it('finishes a snapshot whose agent was killed after writing the overlay, before publishing it', async () => {
    fs.writeFileSync(pauseCreate, '');
    const { snapshot: snap, operation } = await vdis.call.snapshotVdi({
      id: big.id,
      requestId: '',
      name: 'before',
      labels: {},
    });
    await waitFor('the overlay written', () => fs.existsSync(`${pauseCreate}.reached`), {
      timeoutMs: 30_000,
      intervalMs: 10,
    });
    expect(fs.readdirSync(a.path).filter((f) => f.startsWith('.tmp-'))).toHaveLength(1);
    await agent.kill();
    fs.rmSync(pauseCreate);
    fs.rmSync(`${pauseCreate}.reached`);
    await agent.start();
    await succeeded(operation);
    const { vdi } = await vdis.call.getVdi({ id: big.id });
    const { vdi: frozen } = await vdis.call.getVdi({ id: snap?.id ?? '' });
    expect(vdi?.state).toBe(VdiState.VDI_STATE_READY);
    expect(frozen).toMatchObject({ state: VdiState.VDI_STATE_READY, isSnapshot: true });
    await consistent(a);
    // The VDI is now an overlay on the frozen file; both read as the data did before.
    const top = topOf(a);
    expect(backingOf(top)).toBe('big.qcow2');
    sameContent(top);
    sameContent(path.join(a.path, 'big.qcow2'));
  }, 180_000);

  it('finishes a coalesce (snapshot deleted) whose agent was killed mid-rebase', async () => {
    const snaps = (await vdis.call.getVdi({ id: big.id })).vdi?.snapshotIds ?? [];
    expect(snaps).toHaveLength(1);
    const { operation } = await vdis.call.destroyVdi({ id: snaps[0], requestId: '', etag: '' });
    await succeeded(operation);
    const pid = agent.pid();
    await waitFor('qemu-img rebase under way', () => children(pid, 'rebase').length > 0, {
      timeoutMs: 60_000,
      intervalMs: 5,
    });
    await new Promise((r) => setTimeout(r, 150));
    await agent.kill();
    await waitFor('no qemu-img outliving the agent', () => processesUsing(a.path).length === 0, {
      timeoutMs: 500,
      intervalMs: 20,
    });
    await agent.start();
    await waitFor(
      'the chain coalesced: one VDI, no hidden node',
      async () => (await records(a)).length === 1,
      { timeoutMs: 90_000, intervalMs: 200 },
    );
    await consistent(a);
    const top = topOf(a);
    expect(backingOf(top)).toBeUndefined();
    sameContent(top);
    expect((await vdis.call.getVdi({ id: big.id })).vdi).toMatchObject({
      state: VdiState.VDI_STATE_READY,
      parentId: '',
    });
  }, 180_000);
});
