import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DeclaredFormat } from '../images/image-inspector';
import {
  craftedVhds,
  craftedVmdks,
  qcow2WithDataFile,
  qcow2WithHostBacking,
  rawPosingAsQcow2,
  writeSecret,
} from './crafted-images.testing';
import { DiskFiles } from './disk-files';
import { describeWithQemuImg } from './qemu-img.testing';
import { DiskError, tempFile } from './sr-files';

// Issue 5 point 7: hostile uploads. Real: qemu-img on crafted files. Each crafted image is first shown to
// make a plain `qemu-img convert` copy the host secret (so the test is not vacuous), then imported through
// Flotilla's path: refused with the reason, nothing left in the SR, and the secret in no file of the SR.

const SECRET = 'FLOTILLA-HOST-SECRET-7d1f';
const MIB = 1024 * 1024;

describeWithQemuImg('importing hostile disk images', () => {
  let root: string;
  let sr: string;
  let crafted: string;
  let secretFile: string;
  const disks = new DiskFiles();
  const qemuImg = (...args: string[]) => execFileSync('qemu-img', args, { stdio: 'pipe' });

  /** Uploads `source` into a staging file of the SR and imports it as `format`. */
  const importFile = async (source: string, format: DeclaredFormat, target = 'imported.qcow2') => {
    const staging = tempFile(sr, 'import.test');
    fs.copyFileSync(source, staging.path);
    return disks.importStaged({ dir: sr, staging, format, file: target });
  };
  const refusal = async (p: Promise<unknown>) => {
    try {
      await p;
    } catch (e) {
      if (e instanceof DiskError) return e;
      throw e;
    }
    throw new Error('the import was accepted');
  };
  /** No file of the SR holds the secret, and nothing but what was there before is left. */
  const srIsClean = () => {
    for (const name of fs.readdirSync(sr))
      expect(fs.readFileSync(path.join(sr, name)).includes(SECRET)).toBe(false);
    expect(fs.readdirSync(sr)).toEqual([]);
  };
  const plainQemuImgLeaks = (image: string, format: string) => {
    const out = path.join(crafted, `leak-${path.basename(image)}.raw`);
    qemuImg('convert', '-f', format, '-O', 'raw', image, out);
    return fs.readFileSync(out).includes(SECRET);
  };

  beforeAll(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-hostile-'));
    sr = path.join(root, 'sr');
    crafted = path.join(root, 'crafted');
    fs.mkdirSync(sr);
    fs.mkdirSync(crafted);
    secretFile = path.join(root, 'host-secret');
    qcow2WithDataFile(path.join(crafted, 'data-file.qcow2'), secretFile);
    qcow2WithHostBacking(path.join(crafted, 'backing.qcow2'), secretFile);
    rawPosingAsQcow2(path.join(crafted, 'posing.raw'), path.join(crafted, 'data-file.qcow2'));
    craftedVmdks(crafted, secretFile);
    craftedVhds(crafted);
    writeSecret(secretFile, SECRET); // after qemu-img, which truncates a data file it creates
  });
  afterAll(() => fs.rmSync(root, { recursive: true, force: true }));
  afterEach(() => {
    for (const name of fs.readdirSync(sr)) fs.rmSync(path.join(sr, name));
  });

  it('refuses a qcow2 whose data file is a host file, and no byte of it reaches the SR', async () => {
    expect(plainQemuImgLeaks(path.join(crafted, 'data-file.qcow2'), 'qcow2')).toBe(true);
    const refused = await refusal(importFile(path.join(crafted, 'data-file.qcow2'), 'qcow2'));
    expect(refused.kind).toBe('refused');
    expect(refused.message).toContain('external data file');
    srIsClean();
  });

  it('refuses a qcow2 whose backing file is a host file, and no byte of it reaches the SR', async () => {
    expect(plainQemuImgLeaks(path.join(crafted, 'backing.qcow2'), 'qcow2')).toBe(true);
    const refused = await refusal(importFile(path.join(crafted, 'backing.qcow2'), 'qcow2'));
    expect(refused.message).toContain('which Flotilla did not set');
    srIsClean();
  });

  it('refuses a raw upload that begins like a qcow2 (it cannot pose as one)', async () => {
    const refused = await refusal(importFile(path.join(crafted, 'posing.raw'), 'raw'));
    expect(refused.message).toContain('declared raw, but it begins like a qcow2 image');
    srIsClean();
  });

  it('refuses a VMDK whose descriptor makes QEMU read a host file, and no byte of it reaches the SR', async () => {
    expect(plainQemuImgLeaks(path.join(crafted, 'capacity-zero.vmdk'), 'vmdk')).toBe(true);
    const refused = await refusal(importFile(path.join(crafted, 'capacity-zero.vmdk'), 'vmdk'));
    expect(refused.message).toContain('capacity 0');
    srIsClean();
  });

  it.each([
    ['many-extents.vmdk', 'vmdk', 'names 400 extents'],
    ['huge-descriptor.vmdk', 'vmdk', 'descriptor of 1000000 sectors'],
    ['descriptor-file.vmdk', 'vmdk', 'descriptor file'],
    ['parent-hint.vmdk', 'vmdk', 'parentFileNameHint'],
    ['differencing.vhd', 'vhd', 'differencing disk'],
    ['parent-locator.vhd', 'vhd', 'parent locator'],
    ['data-file.qcow2', 'vmdk', 'no VMDK sparse header'],
  ] as const)('refuses the upload %s declared %s: %s', async (name, format, reason) => {
    const refused = await refusal(importFile(path.join(crafted, name), format));
    expect(refused.kind).toBe('refused');
    expect(refused.message).toContain(reason);
    srIsClean();
  });

  it('refuses a truncated qcow2 at qemu-img check and leaves nothing behind', async () => {
    qemuImg('create', '-q', '-f', 'qcow2', path.join(crafted, 'full.qcow2'), '8M');
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 0 8M', path.join(crafted, 'full.qcow2')]);
    const bytes = fs.readFileSync(path.join(crafted, 'full.qcow2'));
    fs.writeFileSync(path.join(crafted, 'truncated.qcow2'), bytes.subarray(0, bytes.length - 4 * MIB));
    const refused = await refusal(importFile(path.join(crafted, 'truncated.qcow2'), 'qcow2'));
    expect(refused.kind).toBe('refused');
    srIsClean();
  });

  it.each([
    ['raw', ['-O', 'raw']],
    ['qcow2', ['-O', 'qcow2']],
    ['vmdk', ['-O', 'vmdk', '-o', 'subformat=streamOptimized']],
    ['vhd', ['-O', 'vpc']],
  ] as const)('imports a %s upload as a qcow2 with the same content', async (format, convertArgs) => {
    const raw = path.join(crafted, 'content.raw');
    const data = Buffer.alloc(4 * MIB);
    for (let i = 0; i < data.length; i += 4096) data.writeUInt32BE(i, i);
    fs.writeFileSync(raw, data);
    const upload = path.join(crafted, `upload.${format}`);
    qemuImg('convert', '-f', 'raw', ...convertArgs, raw, upload);
    const info = await importFile(upload, format);
    expect(info).toMatchObject({ file: 'imported.qcow2', format: 'qcow2' });
    expect(info.virtualSizeBytes).toBeGreaterThanOrEqual(4 * MIB);
    const back = path.join(crafted, 'back.raw');
    qemuImg('convert', '-f', 'qcow2', '-O', 'raw', path.join(sr, 'imported.qcow2'), back);
    expect(fs.readFileSync(back).subarray(0, data.length).equals(data)).toBe(true);
    expect(fs.readdirSync(sr)).toEqual(['imported.qcow2']);
  });
});
