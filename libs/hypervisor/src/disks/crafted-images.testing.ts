import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';

/**
 * Hostile images for tests (issue 5 point 7), made by the real qemu-img where it can make them and patched
 * byte by byte where it would not. Each names `secretFile` (a host file the image must never read) where
 * the format allows it. Test helpers only.
 */

export const qemuImgSync = (...args: string[]): Buffer => execFileSync('qemu-img', args, { stdio: 'pipe' });

/** A host file with a recognisable secret at its start (written after any qemu-img that would truncate it). */
export function writeSecret(file: string, secret: string): void {
  const buf = Buffer.alloc(1024 * 1024);
  for (let at = 0; at + secret.length <= buf.length; at += 64 * 1024) buf.write(secret, at, 'latin1');
  fs.writeFileSync(file, buf);
}

/** qcow2 whose data lives in `secretFile` (qemu-img maps every cluster onto it with preallocation=metadata). */
export function qcow2WithDataFile(out: string, secretFile: string): void {
  qemuImgSync(
    'create',
    '-q',
    '-f',
    'qcow2',
    '-o',
    `data_file=${secretFile},data_file_raw=on,preallocation=metadata`,
    out,
    '1M',
  );
}

/** qcow2 whose backing file is an absolute host path, given as raw so the host file's bytes are the disk. */
export function qcow2WithHostBacking(out: string, secretFile: string): void {
  qemuImgSync('create', '-q', '-f', 'qcow2', '-b', secretFile, '-F', 'raw', '-u', out, '1M');
}

/** A raw image that begins with the header of a qcow2 naming `secretFile` as its data file. */
export function rawPosingAsQcow2(out: string, qcow2: string): void {
  const posing = Buffer.alloc(1024 * 1024);
  fs.readFileSync(qcow2).copy(posing, 0, 0, 64 * 1024);
  fs.writeFileSync(out, posing);
}

/** Patches the embedded descriptor (at sector 1, `sectors` long) of a monolithicSparse VMDK. */
function withDescriptor(vmdk: Buffer, text: string, sectors = 20): Buffer {
  const out = Buffer.from(vmdk);
  out.fill(0, 512, 512 + sectors * 512);
  out.write(text, 512, 'latin1');
  return out;
}

const descriptor = (createType: string, extents: string[], extra = '') =>
  `# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType="${createType}"\n${extra}\n# Extent description\n${extents.join('\n')}\n\n# The Disk Data Base\n#DDB\nddb.virtualHWVersion = "4"\n`;

/** VMDKs made from a 1 MiB monolithicSparse of qemu-img, each hostile in one way. */
export function craftedVmdks(dir: string, secretFile: string): Record<string, string> {
  const base = `${dir}/vmdk-base.vmdk`;
  qemuImgSync('create', '-q', '-f', 'vmdk', base, '1M');
  const good = fs.readFileSync(base);
  const files: Record<string, Buffer> = {};
  // Capacity 0: QEMU reads the embedded descriptor as a descriptor file and opens the FLAT host file.
  const capacityZero = withDescriptor(good, descriptor('monolithicFlat', [`RW 2048 FLAT "${secretFile}" 0`]));
  capacityZero.writeBigUInt64LE(0n, 12);
  files['capacity-zero'] = capacityZero;
  files['many-extents'] = withDescriptor(
    good,
    descriptor(
      'monolithicSparse',
      Array.from({ length: 400 }, () => 'RW 2048 SPARSE "x.vmdk"'),
    ),
  );
  const hugeDescriptor = Buffer.from(good);
  hugeDescriptor.writeBigUInt64LE(1_000_000n, 36);
  files['huge-descriptor'] = hugeDescriptor;
  files['flat-extent'] = withDescriptor(
    good,
    descriptor('monolithicSparse', [`RW 2048 FLAT "${secretFile}" 0`]),
  );
  files['parent-hint'] = withDescriptor(
    good,
    descriptor('monolithicSparse', ['RW 2048 SPARSE "x.vmdk"'], `parentFileNameHint="${secretFile}"`),
  );
  const absurdGrain = Buffer.from(good);
  absurdGrain.writeBigUInt64LE(1n << 40n, 20);
  files['absurd-grain'] = absurdGrain;
  const absurdGt = Buffer.from(good);
  absurdGt.writeUInt32LE(1 << 30, 44);
  files['absurd-gt'] = absurdGt;
  files['descriptor-file'] = Buffer.from(descriptor('monolithicFlat', [`RW 2048 FLAT "${secretFile}" 0`]));
  const out: Record<string, string> = {};
  for (const [name, buf] of Object.entries(files)) {
    out[name] = `${dir}/${name}.vmdk`;
    fs.writeFileSync(out[name], buf);
  }
  return out;
}

/** Sets a VHD footer's checksum (ones' complement of the byte sum, checksum field as 0). */
function vhdChecksum(footer: Buffer): void {
  footer.writeUInt32BE(0, 64);
  let sum = 0;
  for (const b of footer) sum += b;
  footer.writeUInt32BE(~sum >>> 0, 64);
}

/** VHDs made from a 4 MiB dynamic VHD of qemu-img, each hostile or broken in one way. */
export function craftedVhds(dir: string): Record<string, string> {
  const base = `${dir}/vhd-base.vhd`;
  qemuImgSync('create', '-q', '-f', 'vpc', base, '4M');
  const good = fs.readFileSync(base);
  const patchFooters = (buf: Buffer, patch: (footer: Buffer) => void) => {
    for (const at of [0, buf.length - 512]) {
      const footer = buf.subarray(at, at + 512);
      patch(footer);
      vhdChecksum(footer);
    }
    return buf;
  };
  const files: Record<string, Buffer> = {
    differencing: patchFooters(Buffer.from(good), (f) => f.writeUInt32BE(4, 60)),
    'absurd-size': patchFooters(Buffer.from(good), (f) => f.writeBigUInt64BE(1n << 60n, 48)),
  };
  const locator = Buffer.from(good);
  locator.writeUInt32BE(0x57326b75, 512 + 576); // platform code "W2ku": a parent path follows
  files['parent-locator'] = locator;
  files['truncated-table'] = Buffer.from(good).subarray(0, 1024 + 512);
  const out: Record<string, string> = {};
  for (const [name, buf] of Object.entries(files)) {
    out[name] = `${dir}/${name}.vhd`;
    fs.writeFileSync(out[name], buf);
  }
  return out;
}
