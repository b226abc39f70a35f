import { createHash } from 'node:crypto';
import { DriverError, DriverVmSpec } from '../driver';
import {
  blockdevDefinition,
  diskDeviceId,
  diskNodeName,
  diskSerial,
  guestDiskName,
  QemuLaunchDisk,
} from './qemu-disks';
import { isUuid, validateDriverVmSpec, validateHostPath, VM_SPEC_LIMITS } from './vm-spec-validation';

/**
 * Everything one QEMU launch is made of, saved as the VM's spec.json. `vm` is validated and its forwards carry
 * the host ports actually used (never 0), so a restarted agent reports the same addresses.
 */
export interface QemuLaunchSpec {
  vm: DriverVmSpec;
  /** QEMU's -uuid: the vmId when it is a UUID, else derived from it. /proc/<pid>/cmdline carries it. */
  uuid: string;
  accelerator: 'kvm' | 'tcg';
  /**
   * PCIe root ports for disks, fixed when the VM starts from HALTED (a resumed QEMU must have the same
   * devices): one per disk plus spares for hot-plug. Absent: one per disk plus SPARE_DISK_PORTS.
   */
  rootPorts?: number;
  /** Placement of vm.disks, in the same order. Absent: disk i on port i, named by position. */
  disks?: QemuLaunchDisk[];
}

/** Free root ports a VM gets at start for disks hot-plugged later (q35 cannot hot-plug into pcie.0). */
export const SPARE_DISK_PORTS = 4;

/** The placement of a VM's disks when it starts from HALTED: in spec order, vda first. */
export function initialDiskLayout(
  vm: DriverVmSpec,
  files: (disk: DriverVmSpec['disks'][number]) => Pick<QemuLaunchDisk, 'backing' | 'cacheDirect'> = () => ({
    backing: [],
    cacheDirect: false,
  }),
): QemuLaunchDisk[] {
  return vm.disks.map((d, i) => ({
    id: d.id ?? `disk${i}`,
    port: i,
    guestName: guestDiskName(i),
    ...files(d),
  }));
}

export function initialRootPorts(vm: DriverVmSpec, spare = SPARE_DISK_PORTS): number {
  return Math.min(VM_SPEC_LIMITS.disks, vm.disks.length + spare);
}

/** The files of one QEMU process (see vm-directory.ts). */
export interface QemuRuntimePaths {
  pidFile: string;
  qmpSocket: string;
  consoleSocket: string;
  serialLog: string;
}

/**
 * q35 rather than pc: PCIe, the machine libvirt and OpenStack default new VMs to, and it still has the LPC/ISA
 * bridge the pvpanic device and 16550 serial need. Both boot SeaBIOS and direct kernels alike.
 */
export const MACHINE_TYPE = 'q35';
/**
 * Under TCG a named, stable model (not `max`): its features do not change with the host CPU or QEMU's TCG, so
 * saved state restores and a guest sees the same CPU everywhere. Under working KVM the host CPU.
 */
export const TCG_CPU_MODEL = 'qemu64';

/** The -uuid for a vmId: itself if it is a UUID, else a name-based (v5-style) UUID of it. */
export function vmUuid(vmId: string): string {
  if (isUuid(vmId)) return vmId.toLowerCase();
  const h = createHash('sha1').update(`flotilla-vm:${vmId}`).digest('hex');
  const variant = ((parseInt(h[16], 16) & 0x3) | 0x8).toString(16);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-${variant}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

/**
 * A value inside a QEMU option list (`key=value,key=value`): commas are doubled, the QEMU way; bytes that no
 * path or name should hold are refused.
 */
export function qemuOptionValue(field: string, value: string): string {
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(value))
    throw new DriverError('invalid-spec', `${field}: contains control characters`);
  return value.replace(/,/g, ',,');
}

/**
 * The argv (without the program) of the QEMU that runs `launch`. Pure: the same spec gives the same argv. It
 * revalidates the VM spec so nothing unchecked reaches QEMU; spawn it without a shell.
 */
export function buildQemuArgv(
  launch: QemuLaunchSpec,
  paths: QemuRuntimePaths,
  options: { incoming?: boolean } = {},
): string[] {
  const vm = validateDriverVmSpec(launch.vm);
  if (!isUuid(launch.uuid))
    throw new DriverError('invalid-spec', `uuid: not a UUID: ${JSON.stringify(launch.uuid)}`);
  if (launch.accelerator !== 'kvm' && launch.accelerator !== 'tcg')
    throw new DriverError(
      'invalid-spec',
      `accelerator: must be kvm or tcg, got ${JSON.stringify(launch.accelerator)}`,
    );
  for (const [key, value] of Object.entries(paths)) validateHostPath(`paths.${key}`, value);
  const opt = qemuOptionValue;

  // prettier-ignore
  const argv: string[] = [
    '-name', `guest=${opt('name', vm.name)}`,
    '-uuid', launch.uuid,
    // No /etc/qemu config and no default devices: the VM has exactly what this list says.
    '-no-user-config', '-nodefaults', '-display', 'none',
    '-machine', `${MACHINE_TYPE}`,
    '-accel', launch.accelerator,
    '-cpu', launch.accelerator === 'kvm' ? 'host' : TCG_CPU_MODEL,
    '-smp', String(vm.vcpus),
    '-m', String(vm.memoryMib),
    // A guest poweroff stops the vCPUs but keeps QEMU: runstate `shutdown` tells the agent (even one that was
    // not running at the time) that the guest shut itself down, as opposed to QEMU being killed.
    '-no-shutdown',
    // Kernel panic → pvpanic → QEMU pauses in runstate `guest-panicked` and emits GUEST_PANICKED.
    '-device', 'pvpanic', '-action', 'panic=pause',
    // QEMU locks its pidfile: a second QEMU for the same VM dir fails to start — a VM never runs twice.
    '-pidfile', paths.pidFile,
    '-chardev', `socket,id=qmp,path=${opt('paths.qmpSocket', paths.qmpSocket)},server=on,wait=off`,
    '-mon', 'chardev=qmp,mode=control',
    // The serial console: a socket for interactive consoles, and a log QEMU writes even when nobody is connected.
    '-chardev',
    `socket,id=serial0,path=${opt('paths.consoleSocket', paths.consoleSocket)},server=on,wait=off,` +
      `logfile=${opt('paths.serialLog', paths.serialLog)},logappend=on`,
    '-serial', 'chardev:serial0',
    // Deny what a compromised QEMU could use to leave its process: exec, setuid, old syscalls, scheduling.
    '-sandbox', 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny',
    '-msg', 'timestamp=on',
  ];

  if (vm.boot.kind === 'kernel') {
    argv.push('-kernel', vm.boot.kernel);
    if (vm.boot.initrd) argv.push('-initrd', vm.boot.initrd);
    argv.push('-append', vm.boot.cmdline);
  } else {
    argv.push('-boot', 'strict=on');
  }

  // Every disk sits on its own PCIe root port (a device on pcie.0 itself cannot be unplugged on q35); spare
  // ports take hot-plugged disks. io-reserve=0: virtio devices behind a PCIe port need no I/O ports, and
  // 16 ports reserving 4 KiB of I/O space each would exhaust it.
  const rootPorts = launch.rootPorts ?? initialRootPorts(vm);
  if (!Number.isInteger(rootPorts) || rootPorts < vm.disks.length || rootPorts > VM_SPEC_LIMITS.disks)
    throw new DriverError('invalid-spec', `rootPorts: must be ${vm.disks.length}-${VM_SPEC_LIMITS.disks}`);
  for (let p = 0; p < rootPorts; p++)
    argv.push('-device', `pcie-root-port,id=rp${p},chassis=${p + 1},io-reserve=0`);

  const layout = validateLayout(vm, launch.disks ?? initialDiskLayout(vm), rootPorts);
  const bootIndex = Math.max(
    0,
    vm.disks.findIndex((d) => d.bootable),
  );
  vm.disks.forEach((disk, i) => {
    const place = layout[i];
    // JSON: the whole chain, each layer with an explicit driver; paths need no comma escaping in JSON.
    argv.push('-blockdev', JSON.stringify(blockdevDefinition(place.id, disk, place)));
    argv.push(
      '-device',
      `virtio-blk-pci,id=${diskDeviceId(place.id)},drive=${diskNodeName(place.id, disk.path)},bus=rp${place.port}` +
        `,serial=${opt(`disks[${i}].id`, diskSerial(place.id))}` +
        (vm.boot.kind === 'disk' && i === bootIndex ? ',bootindex=1' : ''),
    );
  });

  vm.nics.forEach((nic, i) => {
    const forwards = nic.forwards.map((f) => {
      if (!f.hostPort)
        throw new DriverError(
          'invalid-spec',
          `nics[${i}].forwards: host port must be resolved before launch`,
        );
      return `,hostfwd=tcp:127.0.0.1:${f.hostPort}-:${f.guestPort}`;
    });
    // restrict=on: the guest reaches nothing beyond QEMU's own DHCP/DNS; the host reaches it only via hostfwd.
    argv.push('-netdev', `user,id=net${i},restrict=on${forwards.join('')}`);
    argv.push('-device', `virtio-net-pci,id=nic${i},netdev=net${i},mac=${nic.mac}`);
  });

  // Resume from saved state, or the destination of a live migration: QEMU waits for migrate-incoming on QMP
  // and starts the guest by itself once the state is loaded (no -S).
  if (options.incoming) argv.push('-incoming', 'defer');
  return argv;
}

function validateLayout(vm: DriverVmSpec, layout: QemuLaunchDisk[], rootPorts: number): QemuLaunchDisk[] {
  if (!Array.isArray(layout) || layout.length !== vm.disks.length)
    throw new DriverError('invalid-spec', 'disks: the placement does not match the disks');
  const ports = new Set<number>();
  layout.forEach((place, i) => {
    const field = `disks[${i}]`;
    if (place.id !== (vm.disks[i].id ?? `disk${i}`))
      throw new DriverError('invalid-spec', `${field}: placed as ${place.id}, not as its id`);
    if (!Number.isInteger(place.port) || place.port < 0 || place.port >= rootPorts || ports.has(place.port))
      throw new DriverError(
        'invalid-spec',
        `${field}.port: ${place.port} is not a free port below ${rootPorts}`,
      );
    ports.add(place.port);
    if (!Array.isArray(place.backing) || (vm.disks[i].format === 'raw' && place.backing.length))
      throw new DriverError('invalid-spec', `${field}.backing: must be a list (empty for raw)`);
    place.backing.forEach((b, j) => validateHostPath(`${field}.backing[${j}]`, b));
    if (typeof place.cacheDirect !== 'boolean')
      throw new DriverError('invalid-spec', `${field}.cacheDirect: must be a boolean`);
  });
  return layout;
}
