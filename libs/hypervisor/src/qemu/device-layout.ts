import { DriverError } from '../driver';
import { QemuLaunchSpec } from './qemu-command';
import { QemuLaunchDisk } from './qemu-disks';

/**
 * How a running VM's devices sit: its PCIe root ports and which disk is on which. A guest's device state
 * only loads into a QEMU with the same devices at the same addresses, and a disk hot-plugged after boot
 * sits where a fresh start would not put it — so the destination of a migration is built from the source's
 * layout rather than from the spec alone.
 */
interface DeviceLayout {
  rootPorts: number;
  disks: { id: string; port: number; guestName: string }[];
}

const MAX_ROOT_PORTS = 64;

/** The layout of a running VM, as deviceLayout() hands it to the destination. */
export function describeLayout(rootPorts: number, disks: QemuLaunchDisk[]): string {
  const layout: DeviceLayout = {
    rootPorts,
    disks: disks.map((d) => ({ id: d.id, port: d.port, guestName: d.guestName })),
  };
  return JSON.stringify(layout);
}

/**
 * `launch` (a first launch of the destination's spec) with the source's ports and disk placements. Every
 * disk of the spec must be in the layout and the other way round: a mismatch would only fail later, inside
 * QEMU, as a device state that does not load. '' leaves the launch as it is.
 */
export function withSourceLayout(launch: QemuLaunchSpec, sourceLayout: string): QemuLaunchSpec {
  if (!sourceLayout) return launch;
  const layout = parseLayout(sourceLayout);
  const disks = launch.disks ?? [];
  const placed = disks.map((d) => {
    const at = layout.disks.find((l) => l.id === d.id);
    if (!at)
      throw new DriverError(
        'invalid-spec',
        `sourceDeviceLayout: disk ${d.id} of the spec is not plugged into the source VM: plug it there or leave it out`,
      );
    return { ...d, port: at.port, guestName: at.guestName };
  });
  const missing = layout.disks.filter((l) => !disks.some((d) => d.id === l.id));
  if (missing.length)
    throw new DriverError(
      'invalid-spec',
      `sourceDeviceLayout: the source VM has disk ${missing.map((m) => m.id).join(', ')} that the spec lacks`,
    );
  return { ...launch, rootPorts: layout.rootPorts, disks: placed };
}

function parseLayout(text: string): DeviceLayout {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new DriverError(
      'invalid-spec',
      'sourceDeviceLayout: not JSON: pass deviceLayout() of the source unchanged',
    );
  }
  const v = value as Partial<DeviceLayout>;
  const bad = (why: string) => new DriverError('invalid-spec', `sourceDeviceLayout: ${why}`);
  if (
    !Number.isInteger(v.rootPorts) ||
    (v.rootPorts as number) < 0 ||
    (v.rootPorts as number) > MAX_ROOT_PORTS
  )
    throw bad(`rootPorts must be an integer 0..${MAX_ROOT_PORTS}`);
  if (!Array.isArray(v.disks)) throw bad('disks must be a list');
  const ports = new Set<number>();
  for (const [i, d] of v.disks.entries()) {
    if (typeof d?.id !== 'string' || !d.id) throw bad(`disks[${i}].id must be a non-empty string`);
    if (!Number.isInteger(d.port) || d.port < 0 || d.port >= (v.rootPorts as number))
      throw bad(`disks[${i}].port must be one of the ${v.rootPorts} root ports`);
    if (ports.has(d.port)) throw bad(`disks[${i}].port ${d.port} is taken by another disk`);
    ports.add(d.port);
    if (typeof d.guestName !== 'string' || !/^vd[a-z]{1,2}$/.test(d.guestName))
      throw bad(`disks[${i}].guestName must be a virtio disk name like vdb`);
  }
  return v as DeviceLayout;
}
