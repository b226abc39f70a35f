import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { storageV1 } from '@flotilla/contracts';
import { LocalCloud, startLocalCloud, testDatabases, uniqueSchema } from '@flotilla/platform';
import { cliFor } from '../cli.testing';

// Real: the `flotilla` command tree (run in this process), the gateway (relaying SrService, VdiService,
// VbdService, ImportVdi's client stream and ExportVdi's server stream), storage, compute, two host agents
// doing the file work with real qemu-img, gRPC on loopback, the database. Fake: the hypervisor (sim driver).

const MiB = 1024 * 1024;

describe.each(testDatabases().slice(0, 1))('the storage commands against a local cloud on %s', (_db, url) => {
  let cloud: LocalCloud;
  let work: string;
  let srRoot: string;
  const savedConfig = process.env.FLOTILLA_CONFIG;

  /** `flotilla <args>` with the admin token. */
  const { flotilla, json } = cliFor(() => ({ endpoint: cloud.gatewayAddress, token: cloud.adminToken }));

  beforeAll(async () => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-cli-storage-'));
    process.env.FLOTILLA_CONFIG = path.join(work, 'config.json');
    cloud = await startLocalCloud({ databaseUrl: url, schemaPrefix: uniqueSchema('clistorage'), agents: 2 });
    await cloud.hostsReady(2);
    srRoot = path.join(path.dirname(cloud.imageDir), 'sr');
  }, 120_000);
  afterAll(async () => {
    await cloud?.stop();
    fs.rmSync(work, { recursive: true, force: true });
    if (savedConfig === undefined) delete process.env.FLOTILLA_CONFIG;
    else process.env.FLOTILLA_CONFIG = savedConfig;
  });

  it('creates a shared SR seen by both hosts and shows its space in GiB', async () => {
    const { sr } = await json<{ sr: storageV1.Sr }>(
      'sr',
      'create',
      'cli-shared',
      '--type',
      'shared',
      '--path',
      path.join(srRoot, 'cli-shared'),
      '--label',
      'team=cli',
    );
    expect(sr).toMatchObject({ name: 'cli-shared', state: 'SR_STATE_AVAILABLE', labels: { team: 'cli' } });
    expect(sr.hosts.filter((h) => h.attached)).toHaveLength(2);
    const list = await flotilla('sr', 'list');
    expect(list.stdout).toMatch(
      /^NAME\s+ID\s+TYPE\s+STATE\s+HOST\s+CAPACITY\s+PHYSICAL\s+VIRTUAL\s+SEEN BY\s+AGE$/m,
    );
    expect(list.stdout).toMatch(
      /cli-shared\s+\S+\s+shared\s+available\s+all\s+[\d.]+ GiB\s+[\d.]+ GiB\s+0\.0 GiB\s+2\/2/,
    );
    const show = await flotilla('sr', 'show', 'cli-shared');
    expect(show.stdout).toMatch(/^capacity:\s+[\d.]+ [KMGT]iB$/m);
    expect(show.stdout).toMatch(/^allocation ceiling:\s+none$/m);
    expect(show.stdout).toMatch(/^host-1 \(\S+\)\s+yes$/m);
  });

  it('creates, resizes, snapshots, clones, copies and destroys disks by name', async () => {
    const { vdi } = await json<{ vdi: storageV1.Vdi }>(
      'vdi',
      'create',
      'cli-d1',
      '--sr',
      'cli-shared',
      '--size',
      '64M',
    );
    expect(vdi).toMatchObject({ name: 'cli-d1', state: 'VDI_STATE_READY', virtualSizeBytes: 64 * MiB });

    const resized = await json<{ vdi: storageV1.Vdi }>('vdi', 'resize', 'cli-d1', '--size', '128M');
    expect(resized.vdi.virtualSizeBytes).toBe(128 * MiB);
    const shrink = await flotilla('vdi', 'resize', 'cli-d1', '--size', '64M');
    expect(shrink.code).toBe(1);
    expect(shrink.stderr).toMatch(/--size must be larger/);

    const snap = await json<{ vdi: storageV1.Vdi }>('snapshot', 'create', 'cli-d1', '--name', 'cli-s1');
    expect(snap.vdi).toMatchObject({ name: 'cli-s1', isSnapshot: true, snapshotOf: vdi.id });
    expect((await flotilla('snapshot', 'list', 'cli-d1')).stdout).toMatch(
      /cli-s1\s+\S+\s+cli-shared\s+ready\s+128 MiB/,
    );
    expect((await flotilla('vdi', 'list', '--sr', 'cli-shared')).stdout).not.toMatch(/cli-s1/);
    expect((await flotilla('vdi', 'list', '--snapshots')).stdout).toMatch(/cli-s1/);

    const clone = await json<{ vdi: storageV1.Vdi }>('snapshot', 'clone', 'cli-s1', '--name', 'cli-c1');
    expect(clone.vdi).toMatchObject({ name: 'cli-c1', parentId: snap.vdi.id, isSnapshot: false });
    const copy = await json<{ vdi: storageV1.Vdi }>('vdi', 'copy', 'cli-d1', '--name', 'cli-copy');
    expect(copy.vdi).toMatchObject({ name: 'cli-copy', parentId: '', virtualSizeBytes: 128 * MiB });

    const revert = await flotilla('snapshot', 'revert', 'cli-d1', 'cli-s1');
    expect(revert.code).toBe(0);
    const notASnapshot = await flotilla('snapshot', 'delete', 'cli-d1');
    expect(notASnapshot.stderr).toMatch(/is a disk, not a snapshot/);
    for (const [cmd, name] of [
      ['vdi', 'cli-c1'],
      ['vdi', 'cli-copy'],
      ['snapshot', 'cli-s1'],
      ['vdi', 'cli-d1'],
    ]) {
      // Deleting a snapshot coalesces its chain in the background: a disk in it is busy for a moment, and
      // the keeper may start on it just after it read idle. The refusal says "wait for it and retry": so.
      let r = await flotilla(cmd, cmd === 'vdi' ? 'destroy' : 'delete', name);
      await until(async () => {
        if (r.code !== 3 || !/in progress on it/.test(r.stderr)) return true;
        r = await flotilla(cmd, cmd === 'vdi' ? 'destroy' : 'delete', name);
        return false;
      }, 30_000);
      expect(r).toMatchObject({
        code: 0,
        stdout: `${cmd === 'vdi' ? 'vdi' : 'snapshot'} ${name} destroyed\n`,
      });
    }
    expect((await flotilla('vdi', 'show', 'cli-d1')).code).toBe(2);
  });

  it('imports a file through the gateway and exports it back, byte for byte and verified', async () => {
    const content = Buffer.alloc(5 * MiB + 512);
    for (let i = 0; i < content.length; i += 512) content.write(`block ${i}`, i);
    const file = path.join(work, 'in.img');
    fs.writeFileSync(file, content);
    const imported = await json<{ vdi: storageV1.Vdi }>(
      'vdi',
      'import',
      file,
      '--sr',
      'cli-shared',
      '--format',
      'raw',
      '--name',
      'cli-imported',
    );
    expect(imported.vdi).toMatchObject({
      name: 'cli-imported',
      state: 'VDI_STATE_READY',
      format: 'DISK_FORMAT_QCOW2',
    });
    // A raw image is padded to whole MiB by the VDI's size rounding; the first bytes are the file's.
    expect(imported.vdi.virtualSizeBytes).toBeGreaterThanOrEqual(content.length);

    const out = path.join(work, 'out.img');
    const exported = await json<{ path: string; sizeBytes: number; sha256: string }>(
      'vdi',
      'export',
      'cli-imported',
      '--format',
      'raw',
      '-o',
      out,
    );
    const back = fs.readFileSync(out);
    expect(exported).toMatchObject({ path: out, sizeBytes: back.length });
    expect(exported.sha256).toBe(createHash('sha256').update(back).digest('hex'));
    expect(back.subarray(0, content.length).equals(content)).toBe(true);
    expect(fs.readdirSync(work).filter((f) => f.endsWith('.part'))).toEqual([]);

    const again = await flotilla('vdi', 'export', 'cli-imported', '--format', 'raw', '-o', out);
    expect(again.code).toBe(3);
    expect(again.stderr).toMatch(/exists: choose another -o or pass --force/);

    const qcow2 = path.join(work, 'out.qcow2');
    await json('vdi', 'export', 'cli-imported', '--format', 'qcow2', '-o', qcow2);
    expect(fs.readFileSync(qcow2).subarray(0, 4).toString('latin1')).toBe('QFI\xfb');
  });

  it('refuses an image that is not the format it is declared as, leaving no disk behind', async () => {
    const file = path.join(work, 'fake.qcow2');
    fs.writeFileSync(file, Buffer.alloc(MiB, 0x41));
    const r = await flotilla(
      'vdi',
      'import',
      file,
      '--sr',
      'cli-shared',
      '--format',
      'qcow2',
      '--name',
      'cli-fake',
    );
    expect(r).toMatchObject({
      code: 6,
      stderr: expect.stringMatching(
        /\(vdi\.import cli-fake\) failed: .*no qcow2 header \[FAILED_PRECONDITION\]/,
      ),
    });
    // The failed import's VDI is rolled back (the contract: a failed import removes it).
    await until(async () => (await flotilla('vdi', 'show', 'cli-fake')).code === 2);
  });

  it('destroys the SR with its disks', async () => {
    const refused = await flotilla('sr', 'destroy', 'cli-shared');
    expect(refused.code).not.toBe(0);
    const r = await flotilla('sr', 'destroy', 'cli-shared', '--destroy-vdis');
    expect(r).toMatchObject({ code: 0, stdout: 'sr cli-shared destroyed\n' });
    expect((await flotilla('sr', 'show', 'cli-shared')).code).toBe(2);
  });
});

/** Polls `check` until it holds (10 s at most). */
async function until(check: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 200));
  }
}
