import * as fs from 'node:fs';

/**
 * Flotilla's own look at a disk image before any qemu-img or QEMU use (DESIGN §8): images from users are
 * hostile until proven otherwise. A qcow2 header can name a backing file or an external data file on the
 * host (a patched qemu-img 7.2 still copies such a host file into its output), and a raw file can begin
 * with another format's magic to pose as it. The inspector reads only the header, never follows a path,
 * and refuses what Flotilla did not set itself. The format is always the caller's, never guessed.
 */

export type DeclaredFormat = 'qcow2' | 'raw';

export interface InspectedImage {
  format: DeclaredFormat;
  /** Guest-visible size in bytes (qcow2: from the header; raw: the file size). */
  virtualSizeBytes: number;
  /** qcow2 only: the backing file the header names, to be compared with the one Flotilla set. */
  backingFile?: string;
}

export class ImageRefused extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = 'ImageRefused';
  }
}

const QCOW2_MAGIC = 0x514649fb;
/** Header extension types (docs/interop/qcow2.txt of QEMU). */
const EXT_END = 0x00000000;
const EXT_ENCRYPTION = 0x0537be77;
const EXT_DATA_FILE = 0x44415441;
/**
 * Incompatible feature bits QEMU 7.2 defines: dirty (repaired by `qemu-img check -r` before use, not
 * refused here), corrupt, external data file, compression type, extended L2.
 */
const INCOMPATIBLE_CORRUPT = 1n << 1n;
const INCOMPATIBLE_DATA_FILE = 1n << 2n;
const INCOMPATIBLE_KNOWN = 0b11111n;
/** Enough for any header with its extensions: they must end within the first cluster (≥ 512 bytes). */
const HEADER_READ_BYTES = 64 * 1024;
const MAX_VIRTUAL_SIZE = 64n * 1024n ** 4n;

/** Magic numbers of formats a raw image must not begin with (else QEMU might be talked into them). */
const foreignMagics: Array<[string, (b: Buffer) => boolean]> = [
  ['qcow2', (b) => b.length >= 4 && b.readUInt32BE(0) === QCOW2_MAGIC],
  ['VMDK', (b) => b.subarray(0, 4).toString('latin1') === 'KDMV'],
  ['VMDK descriptor', (b) => b.subarray(0, 20).toString('latin1').startsWith('# Disk DescriptorFile')],
  ['VHDX', (b) => b.subarray(0, 8).toString('latin1') === 'vhdxfile'],
  ['VDI', (b) => b.length >= 68 && b.readUInt32LE(64) === 0xbeda107f],
  ['QED', (b) => b.subarray(0, 4).toString('latin1') === 'QED\0'],
  ['LUKS', (b) => b.subarray(0, 6).toString('latin1') === 'LUKS\xba\xbe'],
];

/** Inspects `file` as `format`; throws ImageRefused with the reason when Flotilla must not use it. */
export function inspectImage(file: string, format: DeclaredFormat): InspectedImage {
  const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  try {
    const size = fs.fstatSync(fd).size;
    const head = Buffer.alloc(Math.min(HEADER_READ_BYTES, size));
    fs.readSync(fd, head, 0, head.length, 0);
    return format === 'raw' ? inspectRaw(head, size) : inspectQcow2(head, size);
  } finally {
    fs.closeSync(fd);
  }
}

function inspectRaw(head: Buffer, size: number): InspectedImage {
  for (const [name, matches] of foreignMagics)
    if (matches(head))
      throw new ImageRefused(`declared raw, but it begins like a ${name} image: give its real format`);
  return { format: 'raw', virtualSizeBytes: size };
}

function inspectQcow2(h: Buffer, fileSize: number): InspectedImage {
  if (h.length < 72 || h.readUInt32BE(0) !== QCOW2_MAGIC)
    throw new ImageRefused('declared qcow2, but it has no qcow2 header');
  const version = h.readUInt32BE(4);
  if (version !== 2 && version !== 3) throw new ImageRefused(`qcow2 version ${version} is not supported`);
  const backingOffset = h.readBigUInt64BE(8);
  const backingSize = h.readUInt32BE(16);
  const clusterBits = h.readUInt32BE(20);
  if (clusterBits < 9 || clusterBits > 21)
    throw new ImageRefused(`qcow2 cluster_bits ${clusterBits} is invalid`);
  const virtualSize = h.readBigUInt64BE(24);
  if (virtualSize > MAX_VIRTUAL_SIZE) throw new ImageRefused(`qcow2 virtual size ${virtualSize} is absurd`);
  if (h.readUInt32BE(32) !== 0) throw new ImageRefused('encrypted qcow2 images are not supported');
  const clusterSize = 1 << clusterBits;

  let headerLength = 72;
  if (version === 3) {
    if (h.length < 104) throw new ImageRefused('qcow2 v3 header is truncated');
    const incompatible = h.readBigUInt64BE(72);
    if (incompatible & INCOMPATIBLE_DATA_FILE)
      throw new ImageRefused('the qcow2 image keeps its data in an external data file: refused');
    if (incompatible & INCOMPATIBLE_CORRUPT) throw new ImageRefused('the qcow2 image is marked corrupt');
    if (incompatible & ~INCOMPATIBLE_KNOWN)
      throw new ImageRefused(`the qcow2 image needs unknown features (0x${incompatible.toString(16)})`);
    headerLength = h.readUInt32BE(100);
    if (headerLength < 104 || headerLength % 8 !== 0 || headerLength > clusterSize)
      throw new ImageRefused(`qcow2 header_length ${headerLength} is invalid`);
  }

  // Header extensions: type, length, data padded to 8 bytes, until END; all within the first cluster.
  for (let at = headerLength; ;) {
    if (at + 8 > Math.min(h.length, clusterSize))
      throw new ImageRefused('qcow2 header extensions are truncated');
    const type = h.readUInt32BE(at);
    const length = h.readUInt32BE(at + 4);
    if (type === EXT_END) break;
    if (type === EXT_DATA_FILE)
      throw new ImageRefused('the qcow2 image names an external data file: refused');
    if (type === EXT_ENCRYPTION) throw new ImageRefused('encrypted qcow2 images are not supported');
    // Other extensions (backing format, feature table, bitmaps, unknown ones) are optional: QEMU ignores
    // what it does not know, and none of them makes it open a file.
    at += 8 + Math.ceil(length / 8) * 8;
  }

  let backingFile: string | undefined;
  if (backingOffset !== 0n) {
    const offset = Number(backingOffset);
    if (backingSize === 0 || backingSize > 1023 || offset + backingSize > Math.min(h.length, clusterSize))
      throw new ImageRefused('qcow2 backing file name is out of bounds');
    backingFile = h.subarray(offset, offset + backingSize).toString('utf8');
  }
  if (fileSize < clusterSize) throw new ImageRefused('qcow2 image is shorter than one cluster');
  return { format: 'qcow2', virtualSizeBytes: Number(virtualSize), ...(backingFile ? { backingFile } : {}) };
}

/**
 * Refuses an image whose backing file is not exactly the one Flotilla set (`expected`, or none at all):
 * a user's image must never make QEMU open a host file.
 */
export function assertBackingFile(image: InspectedImage, expected: string | undefined): void {
  if ((image.backingFile ?? undefined) !== expected)
    throw new ImageRefused(
      image.backingFile
        ? `the image names the backing file ${JSON.stringify(image.backingFile.slice(0, 200))}, which Flotilla did not set: refused`
        : `the image has no backing file, but ${expected} was expected`,
    );
}
