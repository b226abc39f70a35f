import { createHash } from 'node:crypto';
import { DriverError, DriverVmSpec } from '../driver';
import { isUuid, validateDriverVmSpec, validateHostPath } from './vm-spec-validation';

/**
 * Everything one QEMU launch is made of, saved as the VM's spec.json. `vm` is validated and its forwards carry
 * the host ports actually used (never 0), so a restarted agent reports the same addresses.
 */
export interface QemuLaunchSpec {
  vm: DriverVmSpec;
  /** QEMU's -uuid: the vmId when it is a UUID, else derived from it. /proc/<pid>/cmdline carries it. */
  uuid: string;
  accelerator: 'kvm' | 'tcg';
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

  vm.disks.forEach((disk, i) => {
    const ro = disk.readOnly ? 'on' : 'off';
    // prettier-ignore
    argv.push(
      // Two layers, format always explicit: a raw image can never be read as qcow2 (DESIGN §8).
      '-blockdev', `driver=file,node-name=file${i},filename=${opt(`disks[${i}].path`, disk.path)},read-only=${ro}`,
      '-blockdev', `driver=${disk.format},node-name=disk${i},file=file${i},read-only=${ro}`,
      '-device',
      `virtio-blk-pci,id=virtio-disk${i},drive=disk${i}` + (vm.boot.kind === 'disk' && i === 0 ? ',bootindex=1' : ''),
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

  // Resume from saved state: QEMU waits for migrate-incoming on QMP.
  if (options.incoming) argv.push('-incoming', 'defer');
  return argv;
}
