import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { craftedVhds, craftedVmdks, writeSecret } from '../disks/crafted-images.testing';
import { describeWithRealQemu } from '../qemu/real-qemu.testing';
import { assertBackingFile, ImageRefused, inspectImage } from './image-inspector';

// Images made by the real qemu-img (and bytes patched by hand where qemu-img would not write them): the
// inspector must accept what Flotilla makes and refuse what would make QEMU touch a host file.

function refusal(f: () => unknown): string | undefined {
  try {
    f();
  } catch (e) {
    if (e instanceof ImageRefused) return e.message;
    throw e;
  }
  return undefined;
}

describeWithRealQemu('disk image inspector', () => {
  let dir: string;
  const file = (name: string) => path.join(dir, name);
  const qemuImg = (...args: string[]) => execFileSync('qemu-img', args, { stdio: 'pipe' });

  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-inspect-'));
    qemuImg('create', '-f', 'qcow2', file('base.qcow2'), '64M');
    qemuImg('create', '-f', 'qcow2', '-b', file('base.qcow2'), '-F', 'qcow2', file('overlay.qcow2'));
    qemuImg('create', '-f', 'qcow2', '-o', `data_file=${file('host-file')}`, file('data-file.qcow2'), '64M');
    fs.writeFileSync(file('plain.raw'), Buffer.alloc(1024 * 1024));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('accepts a plain qcow2 and reads its virtual size', () => {
    expect(inspectImage(file('base.qcow2'), 'qcow2')).toEqual({
      format: 'qcow2',
      virtualSizeBytes: 64 << 20,
    });
  });

  it('reports a backing file, accepted only when it is the one Flotilla set', () => {
    const overlay = inspectImage(file('overlay.qcow2'), 'qcow2');
    expect(overlay.backingFile).toBe(file('base.qcow2'));
    expect(() => assertBackingFile(overlay, file('base.qcow2'))).not.toThrow();
    expect(refusal(() => assertBackingFile(overlay, undefined))).toContain('which Flotilla did not set');
  });

  it('refuses a qcow2 that keeps its data in an external file on the host', () => {
    expect(refusal(() => inspectImage(file('data-file.qcow2'), 'qcow2'))).toContain('external data file');
  });

  it('refuses a qcow2 whose data-file extension survives with the feature bit cleared', () => {
    const crafted = fs.readFileSync(file('data-file.qcow2'));
    crafted.writeBigUInt64BE(0n, 72); // incompatible features: the external-data-file bit off
    fs.writeFileSync(file('crafted.qcow2'), crafted);
    expect(refusal(() => inspectImage(file('crafted.qcow2'), 'qcow2'))).toContain(
      'names an external data file',
    );
  });

  it('refuses a raw image that begins like a qcow2 (it must not pose as one), and accepts a plain raw', () => {
    const posing = Buffer.alloc(1024 * 1024);
    fs.readFileSync(file('overlay.qcow2')).copy(posing, 0, 0, 512);
    fs.writeFileSync(file('posing.raw'), posing);
    expect(refusal(() => inspectImage(file('posing.raw'), 'raw'))).toContain('begins like a qcow2 image');
    expect(inspectImage(file('plain.raw'), 'raw')).toEqual({ format: 'raw', virtualSizeBytes: 1024 * 1024 });
  });

  it('refuses truncated and nonsense headers with the reason', () => {
    fs.writeFileSync(file('short.qcow2'), fs.readFileSync(file('base.qcow2')).subarray(0, 40));
    expect(refusal(() => inspectImage(file('short.qcow2'), 'qcow2'))).toContain('no qcow2 header');
    const bad = fs.readFileSync(file('base.qcow2'));
    bad.writeUInt32BE(40, 20); // cluster_bits
    fs.writeFileSync(file('bad.qcow2'), bad);
    expect(refusal(() => inspectImage(file('bad.qcow2'), 'qcow2'))).toContain('cluster_bits 40');
    expect(refusal(() => inspectImage(file('plain.raw'), 'qcow2'))).toContain('no qcow2 header');
  });

  it('does not follow a symlink to the image', () => {
    fs.symlinkSync(file('base.qcow2'), file('link.qcow2'));
    expect(() => inspectImage(file('link.qcow2'), 'qcow2')).toThrow(/ELOOP/);
  });
});

describeWithRealQemu('disk image inspector: VMDK and VHD', () => {
  let dir: string;
  const file = (name: string) => path.join(dir, name);
  const qemuImg = (...args: string[]) => execFileSync('qemu-img', args, { stdio: 'pipe' });
  let vmdks: Record<string, string>;
  let vhds: Record<string, string>;

  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-inspect-'));
    writeSecret(file('secret'), 'HOST-SECRET');
    vmdks = craftedVmdks(dir, file('secret'));
    vhds = craftedVhds(dir);
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('accepts monolithicSparse and streamOptimized VMDKs made by qemu-img and reads their size', () => {
    qemuImg('create', '-q', '-f', 'vmdk', file('sparse.vmdk'), '64M');
    qemuImg('create', '-q', '-f', 'vmdk', '-o', 'subformat=streamOptimized', file('stream.vmdk'), '64M');
    qemuImg('create', '-q', '-f', 'qcow2', file('src.qcow2'), '8M');
    qemuImg(
      'convert',
      '-f',
      'qcow2',
      '-O',
      'vmdk',
      '-o',
      'subformat=streamOptimized',
      file('src.qcow2'),
      file('converted.vmdk'),
    );
    expect(inspectImage(file('sparse.vmdk'), 'vmdk')).toEqual({ format: 'vmdk', virtualSizeBytes: 64 << 20 });
    expect(inspectImage(file('stream.vmdk'), 'vmdk')).toEqual({ format: 'vmdk', virtualSizeBytes: 64 << 20 });
    expect(inspectImage(file('converted.vmdk'), 'vmdk')).toEqual({
      format: 'vmdk',
      virtualSizeBytes: 8 << 20,
    });
  });

  it.each([
    ['descriptor-file', 'descriptor file whose data lives in separate extent files'],
    ['capacity-zero', 'capacity 0'],
    ['many-extents', 'names 400 extents'],
    ['huge-descriptor', 'descriptor of 1000000 sectors'],
    ['flat-extent', 'FLAT extent'],
    ['parent-hint', 'parentFileNameHint'],
    ['absurd-grain', 'grain size'],
    ['absurd-gt', 'entries per grain table'],
  ])('refuses the crafted VMDK %s with the reason', (name, reason) => {
    expect(refusal(() => inspectImage(vmdks[name], 'vmdk'))).toContain(reason);
  });

  it('accepts dynamic and fixed VHDs made by qemu-img', () => {
    qemuImg('create', '-q', '-f', 'vpc', file('dynamic.vhd'), '64M');
    qemuImg('create', '-q', '-f', 'vpc', '-o', 'subformat=fixed', file('fixed.vhd'), '16M');
    expect(inspectImage(file('dynamic.vhd'), 'vhd').format).toBe('vhd');
    expect(inspectImage(file('dynamic.vhd'), 'vhd').virtualSizeBytes).toBeGreaterThanOrEqual(64 << 20);
    expect(inspectImage(file('fixed.vhd'), 'vhd').virtualSizeBytes).toBeGreaterThanOrEqual(16 << 20);
  });

  it.each([
    ['differencing', 'differencing disk'],
    ['parent-locator', 'parent locator'],
    ['absurd-size', 'is absurd'],
    ['truncated-table', 'lies outside the file'],
  ])('refuses the crafted VHD %s with the reason', (name, reason) => {
    expect(refusal(() => inspectImage(vhds[name], 'vhd'))).toContain(reason);
  });

  it('refuses an image of another format whatever it is declared as', () => {
    expect(refusal(() => inspectImage(vhds['differencing'], 'vmdk'))).toContain('no VMDK sparse header');
    expect(refusal(() => inspectImage(vmdks['capacity-zero'], 'vhd'))).toContain('no VHD footer');
    expect(refusal(() => inspectImage(vmdks['capacity-zero'], 'raw'))).toContain('begins like a VMDK image');
    expect(refusal(() => inspectImage(vhds['differencing'], 'raw'))).toContain('begins like a VHD image');
  });
});
