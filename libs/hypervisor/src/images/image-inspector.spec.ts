import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
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
