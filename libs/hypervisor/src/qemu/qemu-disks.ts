import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DriverDisk, DriverError } from '../driver';
import { ImageRefused, inspectImage } from '../images/image-inspector';
import { validateHostPath } from './vm-spec-validation';

/**
 * How a VM's disks appear in QEMU's block layer, and where each one sits on the guest's PCIe bus.
 *
 *   virtio-blk-pci  id=virtio-<token>  bus=rp<port>        the guest device (one PCIe root port each)
 *        │ drive
 *   qcow2 node      <token>-<hash(top file)>               the top of the chain: the VM writes here
 *        ├ file     <token>-<hash(top file)>f              file node: the only thing QEMU opens
 *        └ backing  qcow2 node <token>-<hash(next file)>   … read-only, down to `backing: null`
 *
 * Every layer is named by its file, so after a live snapshot or a block-stream the driver finds any node
 * again from a path alone, with no counter to keep. The chain is spelled out layer by layer: QEMU never
 * follows a path from an image header by itself; the driver reads each header with Flotilla's inspector,
 * accepts only a plain sibling name as a backing file, and hands QEMU the resulting absolute path.
 */

/** Where one disk sits, saved in spec.json so that a resumed QEMU has exactly the same devices. */
export interface QemuLaunchDisk {
  /** The disk's id (the VBD id), or `disk<i>` for a disk given without one. */
  id: string;
  /** Index of the pcie-root-port (`rp<port>`) the device is plugged into. */
  port: number;
  /**
   * The guest's likely name for it (vda, vdb, …): Linux names virtio disks in the order it probes them,
   * taking the lowest free index; QEMU cannot see the guest's name. Stable ids: the serial (the disk id's
   * first 20 characters), as /sys/block/vdX/serial and /dev/disk/by-id/virtio-<serial>.
   */
  guestName: string;
  /** The backing files below the top, nearest first, as read from the headers at launch or plug. */
  backing: string[];
  /** O_DIRECT (cache.direct=on, aio=native); off where the filesystem has none (tmpfs). */
  cacheDirect: boolean;
}

/** A qcow2 chain longer than this is refused: coalescing keeps real chains short. */
export const MAX_CHAIN_DEPTH = 64;

/**
 * A token that names this disk's nodes and device: the id itself when it is a short QEMU-safe name, else
 * `h` + 15 hex digits of its SHA-256 (QEMU node names: letter first, at most 31 characters).
 */
export function diskToken(diskId: string): string {
  if (/^[A-Za-z][A-Za-z0-9_-]{0,15}$/.test(diskId)) return diskId;
  return `h${createHash('sha256').update(diskId).digest('hex').slice(0, 15)}`;
}

export const diskDeviceId = (diskId: string): string => `virtio-${diskToken(diskId)}`;

/** The qcow2/raw (format) node of `file` in this disk's chain. */
export function diskNodeName(diskId: string, file: string): string {
  return `${diskToken(diskId)}-${createHash('sha256').update(file).digest('hex').slice(0, 8)}`;
}

/** The file (protocol) node under diskNodeName(). */
export const diskFileNodeName = (diskId: string, file: string): string => `${diskNodeName(diskId, file)}f`;

/**
 * True for a format node of this disk (any layer), not its file node. By length, not by a trailing "f": a
 * format node's hex hash ends in "f" one time in sixteen.
 */
export const isDiskFormatNode = (diskId: string, nodeName: string): boolean =>
  new RegExp(`^${diskToken(diskId)}-[0-9a-f]{8}$`).test(nodeName);

/** What the guest sees in /sys/block/vdX/serial: virtio-blk keeps 20 bytes. */
export const diskSerial = (diskId: string): string => diskId.slice(0, 20);

/** Linux's virtio_blk naming: index 0 → vda, 25 → vdz, 26 → vdaa. */
export function guestDiskName(index: number): string {
  let name = '';
  for (let n = index + 1; n > 0; n = Math.floor((n - 1) / 26))
    name = String.fromCharCode(97 + ((n - 1) % 26)) + name;
  return `vd${name}`;
}

/** The name Linux would give the next disk it probes: the lowest index no current disk holds. */
export function nextGuestDiskName(taken: string[]): string {
  for (let i = 0; ; i++) if (!taken.includes(guestDiskName(i))) return guestDiskName(i);
}

/**
 * The blockdev-add arguments (and -blockdev JSON) of a disk: the top layer writable unless readOnly, every
 * backing layer read-only, each file node opened with the cache mode chosen for this disk. `overlay`: a new
 * snapshot top added with `backing: null`, for blockdev-snapshot to link to the current top.
 */
export function blockdevDefinition(
  diskId: string,
  disk: Pick<DriverDisk, 'path' | 'format' | 'readOnly'>,
  layout: Pick<QemuLaunchDisk, 'backing' | 'cacheDirect'>,
  options: { overlay?: boolean } = {},
): Record<string, unknown> {
  const fileNode = (file: string, readOnly: boolean) => ({
    driver: 'file',
    'node-name': diskFileNodeName(diskId, file),
    filename: file,
    'read-only': readOnly,
    cache: { direct: layout.cacheDirect, 'no-flush': false },
    aio: layout.cacheDirect ? 'native' : 'threads',
    ...(readOnly ? {} : { discard: 'unmap' }),
  });
  const layer = (file: string, below: string[], readOnly: boolean): Record<string, unknown> => ({
    driver: 'qcow2',
    'node-name': diskNodeName(diskId, file),
    'read-only': readOnly,
    ...(readOnly ? {} : { discard: 'unmap' }),
    file: fileNode(file, readOnly),
    backing: below.length ? layer(below[0], below.slice(1), true) : null,
  });
  const readOnly = disk.readOnly ?? false;
  if (disk.format === 'raw')
    return {
      driver: 'raw',
      'node-name': diskNodeName(diskId, disk.path),
      'read-only': readOnly,
      ...(readOnly ? {} : { discard: 'unmap' }),
      file: fileNode(disk.path, readOnly),
    };
  return layer(disk.path, options.overlay ? [] : layout.backing, readOnly);
}

/**
 * The backing files of a qcow2 image, nearest first, read from the headers by Flotilla's inspector (never
 * by QEMU): each must be a plain name in the image's own directory (Flotilla writes them so), a qcow2
 * without an external data file, and appear once. A raw image has none. Throws DriverError('invalid-spec').
 */
export function resolveBackingChain(top: string, format: DriverDisk['format']): string[] {
  validateHostPath('disk path', top);
  if (format === 'raw') {
    // The guest may write anything into a raw disk, a qcow2 magic included: the explicit format keeps
    // QEMU from reading it as one, so a raw disk is not inspected (only required to be a regular file).
    regularFile(top);
    return [];
  }
  const chain: string[] = [];
  const dir = path.dirname(top);
  let current = top;
  for (;;) {
    let backingFile: string | undefined;
    try {
      backingFile = inspectImage(current, 'qcow2').backingFile;
    } catch (e) {
      const why = e instanceof ImageRefused ? e.message : ((e as NodeJS.ErrnoException).code ?? String(e));
      throw new DriverError('invalid-spec', `disk ${current}: ${why}`);
    }
    if (backingFile === undefined) return chain;
    if (!/^[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}$/.test(backingFile))
      throw new DriverError(
        'invalid-spec',
        `disk ${current}: backing file ${JSON.stringify(backingFile.slice(0, 200))} is not a plain name in its directory: refused`,
      );
    const next = path.join(dir, backingFile);
    if (next === top || chain.includes(next))
      throw new DriverError('invalid-spec', `disk ${top}: the backing chain loops at ${backingFile}`);
    chain.push(next);
    if (chain.length > MAX_CHAIN_DEPTH)
      throw new DriverError('invalid-spec', `disk ${top}: backing chain deeper than ${MAX_CHAIN_DEPTH}`);
    current = next;
  }
}

function regularFile(file: string): void {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(file);
  } catch (e) {
    throw new DriverError('invalid-spec', `disk ${file}: ${(e as NodeJS.ErrnoException).code ?? e}`);
  }
  if (!st.isFile()) throw new DriverError('invalid-spec', `disk ${file}: not a regular file`);
}

/** Whether `file` can be opened with O_DIRECT (tmpfs, for one, refuses it with EINVAL). */
export function supportsDirectIo(file: string): boolean {
  try {
    fs.closeSync(fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_DIRECT));
    return true;
  } catch {
    return false;
  }
}
