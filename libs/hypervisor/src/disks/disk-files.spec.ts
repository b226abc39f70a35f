import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DiskFiles } from './disk-files';
import { describeWithQemuImg } from './qemu-img.testing';
import { DiskError, TEMP_PREFIX } from './sr-files';

// Real: qemu-img and qemu-io on qcow2 files in a temporary directory. Nothing is faked.

const MIB = 1024 * 1024;

describeWithQemuImg('disk files (qemu-img on an SR directory)', () => {
  let dir: string;
  const disks = new DiskFiles();
  const file = (name: string) => path.join(dir, name);
  const qemuImg = (...args: string[]) => execFileSync('qemu-img', args, { stdio: 'pipe' });
  const write = (name: string, pattern: number, offset: number, length: number) =>
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', `write -P ${pattern} ${offset} ${length}`, file(name)], {
      stdio: 'pipe',
    });
  /** The guest-visible bytes of a disk (its chain flattened), read through qemu-img. */
  const content = (name: string, format = 'qcow2') => {
    const out = file(`.read-${name}.raw`);
    qemuImg('convert', '-f', format, '-O', 'raw', file(name), out);
    const bytes = fs.readFileSync(out);
    fs.rmSync(out);
    return bytes;
  };
  const failure = async (p: Promise<unknown>) => {
    try {
      await p;
    } catch (e) {
      if (e instanceof DiskError) return e;
      throw e;
    }
    throw new Error('expected a DiskError');
  };
  const temporaries = () => fs.readdirSync(dir).filter((n) => n.startsWith(TEMP_PREFIX));

  beforeEach(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-disks-'))));
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('creates a thin qcow2 whose size is rounded up to 1 MiB', async () => {
    const info = await disks.create({ dir, file: 'a.qcow2', virtualSizeBytes: 10 * MIB + 1 });
    expect(info).toMatchObject({ file: 'a.qcow2', format: 'qcow2', virtualSizeBytes: 11 * MIB });
    expect(info.physicalBytes).toBeLessThan(MIB);
    expect(info.backingFile).toBeUndefined();
    expect(temporaries()).toEqual([]);
  });

  it('answers a repeated create with the same parameters with the file, and one with others with exists', async () => {
    const first = await disks.create({ dir, file: 'a.qcow2', virtualSizeBytes: 8 * MIB });
    expect(await disks.create({ dir, file: 'a.qcow2', virtualSizeBytes: 8 * MIB })).toEqual(first);
    const other = await failure(disks.create({ dir, file: 'a.qcow2', virtualSizeBytes: 16 * MIB }));
    expect(other.kind).toBe('exists');
    expect(other.message).toContain('already exists with other parameters');
  });

  it('creates an overlay naming its backing file by its plain name, of the backing size when asked for 0', async () => {
    await disks.create({ dir, file: 'base.qcow2', virtualSizeBytes: 8 * MIB });
    const overlay = await disks.create({
      dir,
      file: 'top.qcow2',
      virtualSizeBytes: 0,
      backingFile: 'base.qcow2',
    });
    expect(overlay).toMatchObject({ virtualSizeBytes: 8 * MIB, backingFile: 'base.qcow2' });
    const info = JSON.parse(qemuImg('info', '--output=json', '-f', 'qcow2', file('top.qcow2')).toString());
    expect(info['backing-filename']).toBe('base.qcow2');
    expect(info['backing-filename-format']).toBe('qcow2');
  });

  it.each([
    ['with ..', '../escape.qcow2'],
    ['with /', 'sub/dir.qcow2'],
    ['starting with .', '.hidden'],
    ['empty', ''],
    ['longer than 255 bytes', 'a'.repeat(300)],
  ])('refuses a file name %s, naming the field', async (_what, name) => {
    const refused = await failure(disks.create({ dir, file: name, virtualSizeBytes: MIB }));
    expect(refused).toMatchObject({ kind: 'invalid', field: 'file' });
  });

  it('refuses to build on a file whose backing file is a host path rather than a file of the SR', async () => {
    fs.writeFileSync(file('host-file'), Buffer.alloc(MIB));
    qemuImg('create', '-q', '-f', 'qcow2', '-b', file('host-file'), '-F', 'raw', file('evil.qcow2'));
    const refused = await failure(
      disks.create({ dir, file: 'top.qcow2', virtualSizeBytes: 0, backingFile: 'evil.qcow2' }),
    );
    expect(refused.kind).toBe('refused');
    expect(refused.message).toContain('which is not a file of its SR');
    expect(fs.existsSync(file('top.qcow2'))).toBe(false);
  });

  it('reads info with qemu-img after verifying the chain', async () => {
    await disks.create({ dir, file: 'base.qcow2', virtualSizeBytes: 8 * MIB });
    await disks.create({ dir, file: 'top.qcow2', virtualSizeBytes: 16 * MIB, backingFile: 'base.qcow2' });
    expect(await disks.info({ dir, file: 'top.qcow2' })).toMatchObject({
      file: 'top.qcow2',
      virtualSizeBytes: 16 * MIB,
      backingFile: 'base.qcow2',
    });
    fs.rmSync(file('base.qcow2'));
    expect((await failure(disks.info({ dir, file: 'top.qcow2' }))).message).toContain('which is missing');
    expect((await failure(disks.info({ dir, file: 'none.qcow2' }))).kind).toBe('not-found');
  });

  it('grows a disk, accepts the same size again and refuses to shrink it', async () => {
    await disks.create({ dir, file: 'a.qcow2', virtualSizeBytes: 8 * MIB });
    expect((await disks.resize({ dir, file: 'a.qcow2', virtualSizeBytes: 32 * MIB })).virtualSizeBytes).toBe(
      32 * MIB,
    );
    expect((await disks.resize({ dir, file: 'a.qcow2', virtualSizeBytes: 32 * MIB })).virtualSizeBytes).toBe(
      32 * MIB,
    );
    const shrink = await failure(disks.resize({ dir, file: 'a.qcow2', virtualSizeBytes: 8 * MIB }));
    expect(shrink).toMatchObject({ kind: 'invalid', field: 'virtual_size_bytes' });
    expect(shrink.message).toContain('disks only grow');
  });

  it('snapshots a disk as a new overlay; the frozen file no longer changes; a repeat is success', async () => {
    await disks.create({ dir, file: 'a.qcow2', virtualSizeBytes: 4 * MIB });
    write('a.qcow2', 0x11, 0, MIB);
    const snap = await disks.snapshot({ dir, file: 'a.qcow2', newTopFile: 'a-2.qcow2' });
    expect(snap.newTop).toMatchObject({
      file: 'a-2.qcow2',
      backingFile: 'a.qcow2',
      virtualSizeBytes: 4 * MIB,
    });
    expect(snap.frozen.file).toBe('a.qcow2');
    write('a-2.qcow2', 0x22, 0, MIB);
    expect(content('a.qcow2')[0]).toBe(0x11);
    expect(content('a-2.qcow2')[0]).toBe(0x22);
    expect((await disks.snapshot({ dir, file: 'a.qcow2', newTopFile: 'a-2.qcow2' })).newTop.file).toBe(
      'a-2.qcow2',
    );
  });

  it('copies a chain flattened into qcow2, raw and streamOptimized VMDK with progress ending at 1', async () => {
    await disks.create({ dir, file: 'base.qcow2', virtualSizeBytes: 4 * MIB });
    write('base.qcow2', 0x11, 0, 2 * MIB);
    await disks.create({ dir, file: 'top.qcow2', virtualSizeBytes: 0, backingFile: 'base.qcow2' });
    write('top.qcow2', 0x22, MIB, MIB);
    const expected = content('top.qcow2');
    for (const [name, format] of [
      ['copy.qcow2', 'qcow2'],
      ['copy.raw', 'raw'],
      ['copy.vmdk', 'vmdk'],
    ] as const) {
      const progress: number[] = [];
      const info = await disks.copy({
        dir,
        source: { dir, file: 'top.qcow2' },
        file: name,
        format,
        onProgress: (f) => progress.push(f),
      });
      expect(info).toMatchObject({ file: name, format, virtualSizeBytes: 4 * MIB });
      expect(info.backingFile).toBeUndefined();
      expect(progress[progress.length - 1]).toBe(1);
      expect(content(name, format).equals(expected)).toBe(true);
    }
    const again = await disks.copy({ dir, source: { dir, file: 'top.qcow2' }, file: 'copy.qcow2' });
    expect(again.file).toBe('copy.qcow2');
    expect(temporaries()).toEqual([]);
  });

  it('copies only the top of a chain onto a given backing file of the target', async () => {
    await disks.create({ dir, file: 'base.qcow2', virtualSizeBytes: 4 * MIB });
    write('base.qcow2', 0x11, 0, 4 * MIB);
    await disks.create({ dir, file: 'top.qcow2', virtualSizeBytes: 0, backingFile: 'base.qcow2' });
    write('top.qcow2', 0x22, 0, MIB);
    await disks.copy({ dir, source: { dir, file: 'base.qcow2' }, file: 'base-copy.qcow2' });
    const info = await disks.copy({
      dir,
      source: { dir, file: 'top.qcow2' },
      file: 'top-copy.qcow2',
      backingFile: 'base-copy.qcow2',
    });
    expect(info.backingFile).toBe('base-copy.qcow2');
    expect(info.physicalBytes).toBeLessThan(3 * MIB);
    expect(content('top-copy.qcow2').equals(content('top.qcow2'))).toBe(true);
  });

  it('leaves neither the target nor a temporary behind when a copy is cancelled', async () => {
    await disks.create({ dir, file: 'big.qcow2', virtualSizeBytes: 256 * MIB });
    write('big.qcow2', 0x33, 0, 256 * MIB);
    const controller = new AbortController();
    const copying = disks.copy({
      dir,
      source: { dir, file: 'big.qcow2' },
      file: 'copy.qcow2',
      signal: controller.signal,
      onProgress: () => controller.abort(),
    });
    expect((await failure(copying)).kind).toBe('cancelled');
    expect(fs.existsSync(file('copy.qcow2'))).toBe(false);
    expect(temporaries()).toEqual([]);
  });

  it('coalesces a chain by rebasing onto a deeper file or flattening, keeping the content', async () => {
    await disks.create({ dir, file: 'a.qcow2', virtualSizeBytes: 4 * MIB });
    write('a.qcow2', 0x11, 0, 4 * MIB);
    await disks.create({ dir, file: 'b.qcow2', virtualSizeBytes: 0, backingFile: 'a.qcow2' });
    write('b.qcow2', 0x22, 0, MIB);
    await disks.create({ dir, file: 'c.qcow2', virtualSizeBytes: 0, backingFile: 'b.qcow2' });
    write('c.qcow2', 0x33, 3 * MIB, MIB);
    const before = content('c.qcow2');
    expect((await disks.rebase({ dir, file: 'c.qcow2', newBackingFile: 'a.qcow2' })).backingFile).toBe(
      'a.qcow2',
    );
    expect(content('c.qcow2').equals(before)).toBe(true);
    expect((await disks.rebase({ dir, file: 'c.qcow2', newBackingFile: 'a.qcow2' })).backingFile).toBe(
      'a.qcow2',
    );
    expect((await disks.rebase({ dir, file: 'c.qcow2' })).backingFile).toBeUndefined();
    expect(content('c.qcow2').equals(before)).toBe(true);
    const notInChain = await failure(disks.rebase({ dir, file: 'b.qcow2', newBackingFile: 'c.qcow2' }));
    expect(notInChain).toMatchObject({ kind: 'invalid', field: 'new_backing_file' });
  });

  it('deletes a disk once, refusing while another file backs onto it', async () => {
    await disks.create({ dir, file: 'base.qcow2', virtualSizeBytes: 4 * MIB });
    await disks.create({ dir, file: 'top.qcow2', virtualSizeBytes: 0, backingFile: 'base.qcow2' });
    const refused = await failure(disks.delete({ dir, file: 'base.qcow2' }));
    expect(refused.kind).toBe('in-use');
    expect(refused.message).toContain('is the backing file of top.qcow2');
    await disks.delete({ dir, file: 'top.qcow2' });
    await disks.delete({ dir, file: 'top.qcow2' });
    await disks.delete({ dir, file: 'base.qcow2' });
    expect(fs.readdirSync(dir)).toEqual([]);
  });

  it('refuses to delete a disk another process has open for writing', async () => {
    await disks.create({ dir, file: 'busy.qcow2', virtualSizeBytes: 4 * MIB });
    // qemu-io in interactive mode keeps the image open (and locked) until its stdin closes.
    const holder = spawn('qemu-io', ['-f', 'qcow2', file('busy.qcow2')], { stdio: ['pipe', 'pipe', 'pipe'] });
    try {
      await new Promise((r) => holder.stdout.once('data', r));
      const refused = await failure(disks.delete({ dir, file: 'busy.qcow2' }));
      expect(refused.kind).toBe('in-use');
      expect(fs.existsSync(file('busy.qcow2'))).toBe(true);
    } finally {
      holder.stdin.end('quit\n');
      await new Promise((r) => holder.once('exit', r));
    }
  });

  it("removes a crashed process's temporaries at the next operation, never a live one's", async () => {
    const dead = `${TEMP_PREFIX}${readBootId()}.999999999.deadbeef.copy.x.qcow2`;
    const foreignFresh = `${TEMP_PREFIX}otherhost.1.cafe.copy.y.qcow2`;
    fs.writeFileSync(file(dead), 'partial');
    fs.writeFileSync(file(foreignFresh), 'another host is writing this');
    await disks.create({ dir, file: 'a.qcow2', virtualSizeBytes: MIB });
    expect(temporaries()).toEqual([foreignFresh]);
  });

  it('refuses a corrupt qcow2 at check with the reason', async () => {
    await disks.create({ dir, file: 'a.qcow2', virtualSizeBytes: 4 * MIB });
    write('a.qcow2', 0x11, 0, MIB);
    const bytes = fs.readFileSync(file('a.qcow2'));
    const l1 = Number(bytes.readBigUInt64BE(40));
    const l2 = Number(bytes.readBigUInt64BE(l1) & 0x00fffffffffffe00n);
    bytes.writeBigUInt64BE(0x8000000000000000n | BigInt(64 * MIB), l2); // a data cluster far past the end
    fs.writeFileSync(file('a.qcow2'), bytes);
    const refused = await failure(
      disks.check({ path: file('a.qcow2'), format: 'qcow2', virtualSizeBytes: 4 * MIB }),
    );
    expect(refused.kind).toBe('refused');
    expect(refused.message).toMatch(/corrupt|cannot be read/);
  });
});

function readBootId(): string {
  return fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim().replace(/-/g, '').slice(0, 12);
}
