import * as fs from 'node:fs';

/**
 * Flotilla's own look at a disk image before any qemu-img or QEMU use (DESIGN §8): images from users are
 * hostile until proven otherwise. A qcow2 header can name a backing file or an external data file on the
 * host (a patched qemu-img 7.2 still copies such a host file into its output), a VMDK can name extent files
 * or a parent, a VHD can be a differencing disk with parent locators, and a raw file can begin with another
 * format's magic to pose as it. The inspector reads only headers, never follows a path, and refuses what
 * Flotilla did not set itself. The format is always the caller's, never guessed.
 */

export type DeclaredFormat = 'qcow2' | 'raw' | 'vmdk' | 'vhd';

export interface InspectedImage {
  format: DeclaredFormat;
  /** Guest-visible size in bytes (from the header; raw: the file size). */
  virtualSizeBytes: number;
  /** qcow2 only: the backing file the header names, to be compared with the one Flotilla set. */
  backingFile?: string;
  /** qcow2 only: the backing format the header names (Flotilla always sets "qcow2"). */
  backingFormat?: string;
}

export class ImageRefused extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = 'ImageRefused';
  }
}

/** Largest guest disk Flotilla accepts from any header: 64 TiB. */
const MAX_VIRTUAL_SIZE = 64n * 1024n ** 4n;
/** Enough for a qcow2 header with its extensions: they must end within the first cluster (≥ 512 bytes). */
const HEADER_READ_BYTES = 64 * 1024;

/** Inspects `file` as `format`; throws ImageRefused with the reason when Flotilla must not use it. */
export function inspectImage(file: string, format: DeclaredFormat): InspectedImage {
  const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new ImageRefused('not a regular file');
    const image = new ImageReader(fd, st.size);
    switch (format) {
      case 'raw':
        return inspectRaw(image);
      case 'qcow2':
        return inspectQcow2(image);
      case 'vmdk':
        return inspectVmdk(image);
      case 'vhd':
        return inspectVhd(image);
    }
  } finally {
    fs.closeSync(fd);
  }
}

/** Bounded reads of an open image; bytes past the end read as absent (shorter buffer). */
class ImageReader {
  constructor(
    private readonly fd: number,
    readonly size: number,
  ) {}

  read(offset: number, length: number): Buffer {
    if (offset >= this.size || length <= 0) return Buffer.alloc(0);
    const buf = Buffer.alloc(Math.min(length, this.size - offset));
    const n = fs.readSync(this.fd, buf, 0, buf.length, offset);
    return buf.subarray(0, n);
  }
}

// ---------------------------------------------------------------------------------------------------------
// raw

/** Magic numbers of formats a raw image must not begin with (else QEMU might be talked into them). */
const foreignMagics: Array<[string, (b: Buffer) => boolean]> = [
  ['qcow2', (b) => b.length >= 4 && b.readUInt32BE(0) === 0x514649fb],
  ['VMDK', (b) => ['KDMV', 'COWD'].includes(b.subarray(0, 4).toString('latin1'))],
  ['VMDK descriptor', (b) => b.subarray(0, 21).toString('latin1') === '# Disk DescriptorFile'],
  ['VHD', (b) => b.subarray(0, 8).toString('latin1') === 'conectix'],
  ['VHDX', (b) => b.subarray(0, 8).toString('latin1') === 'vhdxfile'],
  ['VDI', (b) => b.length >= 68 && b.readUInt32LE(64) === 0xbeda107f],
  ['QED', (b) => b.subarray(0, 4).toString('latin1') === 'QED\0'],
  ['LUKS', (b) => b.subarray(0, 6).toString('latin1') === 'LUKS\xba\xbe'],
];

function inspectRaw(image: ImageReader): InspectedImage {
  const head = image.read(0, 512);
  for (const [name, matches] of foreignMagics)
    if (matches(head))
      throw new ImageRefused(`declared raw, but it begins like a ${name} image: give its real format`);
  return { format: 'raw', virtualSizeBytes: image.size };
}

// ---------------------------------------------------------------------------------------------------------
// qcow2 (docs/interop/qcow2.txt of QEMU)

const QCOW2_MAGIC = 0x514649fb;
const EXT_END = 0x00000000;
const EXT_BACKING_FORMAT = 0xe2792aca;
const EXT_ENCRYPTION = 0x0537be77;
const EXT_DATA_FILE = 0x44415441;
/**
 * Incompatible feature bits QEMU 7.2 defines: dirty (repaired by `qemu-img check -r` before use, not
 * refused here), corrupt, external data file, compression type, extended L2.
 */
const INCOMPATIBLE_CORRUPT = 1n << 1n;
const INCOMPATIBLE_DATA_FILE = 1n << 2n;
const INCOMPATIBLE_KNOWN = 0b11111n;

function inspectQcow2(image: ImageReader): InspectedImage {
  const h = image.read(0, HEADER_READ_BYTES);
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
  let backingFormat: string | undefined;
  for (let at = headerLength; ;) {
    if (at + 8 > Math.min(h.length, clusterSize))
      throw new ImageRefused('qcow2 header extensions are truncated');
    const type = h.readUInt32BE(at);
    const length = h.readUInt32BE(at + 4);
    if (type === EXT_END) break;
    if (type === EXT_DATA_FILE)
      throw new ImageRefused('the qcow2 image names an external data file: refused');
    if (type === EXT_ENCRYPTION) throw new ImageRefused('encrypted qcow2 images are not supported');
    if (type === EXT_BACKING_FORMAT) {
      if (length > 64 || at + 8 + length > h.length)
        throw new ImageRefused('qcow2 backing format extension is out of bounds');
      backingFormat = h.subarray(at + 8, at + 8 + length).toString('latin1');
    }
    // Other extensions (feature table, bitmaps, unknown ones) are optional: QEMU ignores what it does not
    // know, and none of them makes it open a file.
    at += 8 + Math.ceil(length / 8) * 8;
  }

  let backingFile: string | undefined;
  if (backingOffset !== 0n) {
    const offset = Number(backingOffset);
    if (backingSize === 0 || backingSize > 1023 || offset + backingSize > Math.min(h.length, clusterSize))
      throw new ImageRefused('qcow2 backing file name is out of bounds');
    backingFile = h.subarray(offset, offset + backingSize).toString('utf8');
  }
  if (image.size < clusterSize) throw new ImageRefused('qcow2 image is shorter than one cluster');
  return {
    format: 'qcow2',
    virtualSizeBytes: Number(virtualSize),
    ...(backingFile ? { backingFile } : {}),
    ...(backingFile && backingFormat ? { backingFormat } : {}),
  };
}

// ---------------------------------------------------------------------------------------------------------
// VMDK: only single-file sparse images (monolithicSparse, streamOptimized), the OVF disk formats. QEMU opens
// the extents a descriptor names (any host path, FLAT = raw bytes of that file) and a parent named by
// parentFileNameHint, so a text descriptor, a sparse header whose capacity is 0 (QEMU then reads the
// embedded descriptor as a descriptor file) and any parent hint are refused.

const SECTOR = 512;
const VMDK_GD_AT_END = 0xffffffffffffffffn;
const VMDK_FLAG_MARKER = 1 << 17;
/** What QEMU reads at offset 512 looking for parentFileNameHint, whatever the header says (DESC_SIZE). */
const VMDK_QEMU_DESC_BYTES = 20 * SECTOR;
/** qemu-img and VMware write 20 sectors; a descriptor bigger than 64 KiB is not a monolithic disk's. */
const VMDK_MAX_DESCRIPTOR_BYTES = 64 * 1024;
/** A monolithic VMDK describes itself as exactly one extent. */
const VMDK_MAX_EXTENTS = 1;

interface VmdkSparseHeader {
  capacitySectors: bigint;
  gdOffsetSectors: bigint;
  descOffsetSectors: bigint;
  descSizeSectors: bigint;
}

function inspectVmdk(image: ImageReader): InspectedImage {
  const head = image.read(0, SECTOR);
  const magic = head.subarray(0, 4).toString('latin1');
  if (head.subarray(0, 21).toString('latin1') === '# Disk DescriptorFile')
    throw new ImageRefused(
      'the VMDK is a descriptor file whose data lives in separate extent files: upload a single-file VMDK (monolithicSparse or streamOptimized)',
    );
  if (magic === 'COWD') throw new ImageRefused('VMware 3 (COWD) sparse VMDKs are not supported');
  if (magic !== 'KDMV' || head.length < SECTOR)
    throw new ImageRefused('declared vmdk, but it has no VMDK sparse header');
  let header = vmdkSparseHeader(head, image.size, 'header');
  if (header.capacitySectors === 0n)
    throw new ImageRefused(
      'the VMDK sparse header has capacity 0, which makes QEMU open the extent files its descriptor names: refused',
    );

  if (header.descSizeSectors > 0n) {
    const descriptor = image
      .read(Number(header.descOffsetSectors) * SECTOR, Number(header.descSizeSectors) * SECTOR)
      .toString('latin1');
    checkVmdkDescriptor(descriptor.split('\0')[0], header.capacitySectors);
  }
  if (image.read(SECTOR, VMDK_QEMU_DESC_BYTES).toString('latin1').includes('parentFileNameHint'))
    throw new ImageRefused('the VMDK names a parent disk (parentFileNameHint): refused');

  if (header.gdOffsetSectors === VMDK_GD_AT_END) {
    // streamOptimized: the footer near the end takes precedence over the header (QEMU reads it instead).
    if (!(head.readUInt32LE(8) & VMDK_FLAG_MARKER))
      throw new ImageRefused('the VMDK puts its grain directory at the end but has no stream markers');
    if (image.size < 3 * SECTOR) throw new ImageRefused('the streamOptimized VMDK has no footer');
    const tail = image.read(image.size - 3 * SECTOR, 3 * SECTOR);
    const footerMarkerOk = tail.readUInt32LE(8) === 0 && tail.readUInt32LE(12) === 3;
    const eosOk =
      tail.readBigUInt64LE(1024) === 0n && tail.readUInt32LE(1032) === 0 && tail.readUInt32LE(1036) === 0;
    if (!footerMarkerOk || !eosOk || tail.subarray(512, 516).toString('latin1') !== 'KDMV')
      throw new ImageRefused('the streamOptimized VMDK footer is missing or invalid (truncated upload?)');
    header = vmdkSparseHeader(tail.subarray(512, 1024), image.size, 'footer');
    if (header.gdOffsetSectors === VMDK_GD_AT_END || header.capacitySectors === 0n)
      throw new ImageRefused('the streamOptimized VMDK footer does not locate its grain directory');
  }
  return { format: 'vmdk', virtualSizeBytes: Number(header.capacitySectors) * SECTOR };
}

/** Checks the numbers of a sparse extent header ('KDMV' + VMDK4Header, little-endian). */
function vmdkSparseHeader(h: Buffer, fileSize: number, where: string): VmdkSparseHeader {
  const version = h.readUInt32LE(4);
  if (version < 1 || version > 3) throw new ImageRefused(`VMDK ${where} version ${version} is not supported`);
  const capacitySectors = h.readBigUInt64LE(12);
  const grainSectors = h.readBigUInt64LE(20);
  const descOffsetSectors = h.readBigUInt64LE(28);
  const descSizeSectors = h.readBigUInt64LE(36);
  const gtesPerGt = h.readUInt32LE(44);
  const gdOffsetSectors = h.readBigUInt64LE(56);
  const overheadSectors = h.readBigUInt64LE(64);
  const compression = h.readUInt16LE(77);
  const fileSectors = BigInt(Math.ceil(fileSize / SECTOR));
  if (capacitySectors * 512n > MAX_VIRTUAL_SIZE)
    throw new ImageRefused(`VMDK ${where} capacity of ${capacitySectors} sectors is absurd`);
  // VMware's specification: grains are a power of two of at least 8 sectors; QEMU writes 128 (64 KiB).
  if (grainSectors < 8n || grainSectors > 2048n || (grainSectors & (grainSectors - 1n)) !== 0n)
    throw new ImageRefused(`VMDK ${where} grain size of ${grainSectors} sectors is absurd`);
  // Always 512 grain table entries (the specification fixes it; QEMU refuses more).
  if (gtesPerGt !== 512)
    throw new ImageRefused(`VMDK ${where} has ${gtesPerGt} entries per grain table; VMDKs have 512`);
  if (compression > 1) throw new ImageRefused(`VMDK ${where} compression ${compression} is unknown`);
  if (descSizeSectors * 512n > BigInt(VMDK_MAX_DESCRIPTOR_BYTES))
    throw new ImageRefused(
      `VMDK ${where} declares a descriptor of ${descSizeSectors} sectors (at most ${VMDK_MAX_DESCRIPTOR_BYTES / SECTOR} accepted)`,
    );
  if (descSizeSectors > 0n && (descOffsetSectors < 1n || descOffsetSectors + descSizeSectors > fileSectors))
    throw new ImageRefused(`VMDK ${where} descriptor lies outside the file`);
  if (overheadSectors > fileSectors)
    throw new ImageRefused(`VMDK ${where} says the data starts past the end of the file (truncated upload?)`);
  if (gdOffsetSectors !== VMDK_GD_AT_END) {
    if (gdOffsetSectors === 0n || gdOffsetSectors >= fileSectors)
      throw new ImageRefused(`VMDK ${where} grain directory lies outside the file`);
    // The grain directory has one 4-byte entry per grain table; it must fit in the file.
    const gdEntries = (capacitySectors + grainSectors * 512n - 1n) / (grainSectors * 512n);
    if (gdOffsetSectors * 512n + gdEntries * 4n > BigInt(fileSize))
      throw new ImageRefused(
        `VMDK ${where} grain directory of ${gdEntries} entries does not fit in the file`,
      );
  }
  return { capacitySectors, gdOffsetSectors, descOffsetSectors, descSizeSectors };
}

const EXTENT_LINE = /^(RW|RDONLY|NOACCESS)\s+(\d+)\s+(\S+)(?:\s+"([^"]*)")?(.*)$/;

/** The embedded descriptor of a monolithic sparse VMDK: one SPARSE extent (the file itself), no parent. */
function checkVmdkDescriptor(text: string, capacitySectors: bigint): void {
  const lines = text.split(/\r?\n/).map((l) => l.trim());
  const extents = lines.filter((l) => /^(RW|RDONLY|NOACCESS)\s/.test(l));
  if (extents.length > VMDK_MAX_EXTENTS)
    throw new ImageRefused(
      `the VMDK descriptor names ${extents.length} extents; a single-file VMDK has exactly one: refused`,
    );
  for (const line of extents) {
    const m = EXTENT_LINE.exec(line);
    if (!m) throw new ImageRefused(`the VMDK descriptor has an unreadable extent line`);
    const [, , sectors, type, name = ''] = m;
    if (type !== 'SPARSE')
      throw new ImageRefused(
        `the VMDK descriptor names a ${type.slice(0, 16)} extent; only the image's own SPARSE extent is accepted`,
      );
    if (name.includes('/') || name.includes('\\'))
      throw new ImageRefused('the VMDK descriptor names an extent by a path: refused');
    if (BigInt(sectors) !== capacitySectors)
      throw new ImageRefused('the VMDK descriptor and sparse header disagree on the disk size');
  }
  const createType = /^createType\s*=\s*"([^"]*)"/m.exec(lines.join('\n'))?.[1];
  if (createType !== undefined && createType !== 'monolithicSparse' && createType !== 'streamOptimized')
    throw new ImageRefused(
      `the VMDK is of type ${JSON.stringify(createType.slice(0, 40))}; only monolithicSparse and streamOptimized are accepted`,
    );
  if (text.includes('parentFileNameHint'))
    throw new ImageRefused('the VMDK names a parent disk (parentFileNameHint): refused');
}

// ---------------------------------------------------------------------------------------------------------
// VHD ("vpc" in QEMU): fixed (footer at the end only) or dynamic (a copy of the footer at the start, then
// the dynamic header and the block allocation table). Differencing disks name their parent: refused.

const VHD_FOOTER = 512;
const VHD_TYPE_FIXED = 2;
const VHD_TYPE_DYNAMIC = 3;
const VHD_TYPE_DIFFERENCING = 4;
const VHD_DYN_HEADER = 1024;

function inspectVhd(image: ImageReader): InspectedImage {
  if (image.size < VHD_FOOTER) throw new ImageRefused('declared vhd, but the file is shorter than a footer');
  const start = image.read(0, VHD_FOOTER);
  const atStart = start.subarray(0, 8).toString('latin1') === 'conectix';
  const footer = atStart ? start : image.read(image.size - VHD_FOOTER, VHD_FOOTER);
  if (footer.length < VHD_FOOTER || footer.subarray(0, 8).toString('latin1') !== 'conectix')
    throw new ImageRefused('declared vhd, but it has no VHD footer');
  const diskType = footer.readUInt32BE(60);
  if (diskType === VHD_TYPE_DIFFERENCING)
    throw new ImageRefused('the VHD is a differencing disk (it names a parent disk): refused');
  if (diskType !== VHD_TYPE_FIXED && diskType !== VHD_TYPE_DYNAMIC)
    throw new ImageRefused(`the VHD disk type ${diskType} is unknown`);
  const currentSize = footer.readBigUInt64BE(48);
  if (currentSize === 0n || currentSize > MAX_VIRTUAL_SIZE)
    throw new ImageRefused(`the VHD size of ${currentSize} bytes is absurd`);

  // QEMU decides by where the footer is, not by the type field: the two must agree.
  if (!atStart) {
    if (diskType !== VHD_TYPE_FIXED)
      throw new ImageRefused('the VHD is marked dynamic but has no footer copy at its start (truncated?)');
    if (currentSize > BigInt(image.size - VHD_FOOTER))
      throw new ImageRefused('the fixed VHD is shorter than its size (truncated upload?)');
    return { format: 'vhd', virtualSizeBytes: Number(currentSize) };
  }
  if (diskType !== VHD_TYPE_DYNAMIC)
    throw new ImageRefused('the VHD has a footer copy at its start but is not marked dynamic');
  const dataOffset = footer.readBigUInt64BE(16);
  if (dataOffset < BigInt(VHD_FOOTER) || dataOffset + BigInt(VHD_DYN_HEADER) > BigInt(image.size))
    throw new ImageRefused('the VHD dynamic header lies outside the file');
  const dyn = image.read(Number(dataOffset), VHD_DYN_HEADER);
  if (dyn.subarray(0, 8).toString('latin1') !== 'cxsparse')
    throw new ImageRefused('the VHD dynamic header is missing');
  const tableOffset = dyn.readBigUInt64BE(16);
  const maxTableEntries = dyn.readUInt32BE(28);
  const blockSize = dyn.readUInt32BE(32);
  if (blockSize < SECTOR || blockSize > 256 * 1024 * 1024 || (blockSize & (blockSize - 1)) !== 0)
    throw new ImageRefused(`the VHD block size of ${blockSize} bytes is absurd`);
  if (BigInt(maxTableEntries) * BigInt(blockSize) < currentSize)
    throw new ImageRefused('the VHD block table is too small for its size');
  if (tableOffset < BigInt(VHD_FOOTER) || tableOffset + BigInt(maxTableEntries) * 4n > BigInt(image.size))
    throw new ImageRefused(
      `the VHD block table of ${maxTableEntries} entries lies outside the file (truncated upload?)`,
    );
  const parentName = dyn.subarray(64, 576);
  const locators = Array.from({ length: 8 }, (_, i) => dyn.readUInt32BE(576 + i * 24));
  if (parentName.some((b) => b !== 0) || locators.some((code) => code !== 0))
    throw new ImageRefused('the VHD names a parent disk (parent locator): refused');
  return { format: 'vhd', virtualSizeBytes: Number(currentSize) };
}

// ---------------------------------------------------------------------------------------------------------

/**
 * Refuses an image whose backing file is not exactly the one Flotilla set (`expected`, or none at all):
 * a user's image must never make QEMU open a host file. Flotilla always records the backing format qcow2.
 */
export function assertBackingFile(image: InspectedImage, expected: string | undefined): void {
  if ((image.backingFile ?? undefined) !== expected)
    throw new ImageRefused(
      image.backingFile
        ? `the image names the backing file ${JSON.stringify(image.backingFile.slice(0, 200))}, which Flotilla did not set: refused`
        : `the image has no backing file, but ${expected} was expected`,
    );
  if (image.backingFile && image.backingFormat !== undefined && image.backingFormat !== 'qcow2')
    throw new ImageRefused(
      `the image gives its backing file the format ${JSON.stringify(image.backingFormat.slice(0, 20))}; Flotilla sets qcow2`,
    );
}
