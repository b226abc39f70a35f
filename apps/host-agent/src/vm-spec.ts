import { computeV1, storageV1 } from '@flotilla/contracts';
import { DomainError, ErrorCode, invalidArgument, validateIntRange } from '@flotilla/domain';
import { DriverBoot, DriverDisk, DriverVmSpec } from '@flotilla/hypervisor';
import { HostImageCatalogue } from './image-catalogue';
import { SrPaths } from './sr-paths';

/**
 * A VmSpec from compute in the driver's terms on this host: image files resolved in the catalogue (and their
 * sha256 checked), disk files only through SrPaths (roots, SR marker, plain name). One place for StartVm,
 * disk hot-plug and the incoming VM of a migration, so that each checks the same things.
 */
export class VmSpecResolver {
  constructor(
    private readonly catalogue: HostImageCatalogue,
    private readonly srPaths: SrPaths,
  ) {}

  /** `field` prefixes the names in error messages: the request field that holds the spec. */
  vmSpec(spec: computeV1.VmSpec | undefined, field = 'spec'): DriverVmSpec {
    if (!spec?.vmId)
      throw new DomainError(ErrorCode.InvalidArgument, `${field}.vm_id: is required`, {
        field: `${field}.vm_id`,
      });
    return {
      vmId: spec.vmId,
      name: spec.name,
      vcpus: validateIntRange(`${field}.vcpus`, spec.vcpus, 1, 4096),
      memoryMib: validateIntRange(`${field}.memory_mib`, spec.memoryMib, 16, 64 * 1024 * 1024),
      boot: this.boot(spec, field),
      disks: this.vmDisks(spec, field),
      nics: spec.nics.map((n) => ({
        mac: n.mac,
        forwards: n.forwards.map((f) => ({ guestPort: f.guestPort })),
      })),
    };
  }

  /** A VmDisk as the driver's disk: the file only through SrPaths (roots, SR marker, plain name). */
  disk(d: storageV1.VmDisk, field: string): DriverDisk & { id: string } {
    if (!d.vbdId) throw invalidArgument(`${field}.vbd_id`, 'is required');
    validateIntRange(`${field}.device_position`, d.devicePosition, 0, 15);
    return {
      id: d.vbdId,
      // VDIs are qcow2 files, always: the format is stated, never probed.
      path: this.srPaths.file(d.srId, d.srPath, d.file, `${field}.file`, `${field}.sr_path`),
      format: 'qcow2',
      ...(d.readOnly ? { readOnly: true } : {}),
      ...(d.bootable ? { bootable: true } : {}),
    };
  }

  /**
   * The VM's disks in device order (the guest names them in that order); for a disk boot the bootable one
   * goes first, so it is vda and the firmware's boot disk.
   */
  private vmDisks(spec: computeV1.VmSpec, field: string): DriverDisk[] {
    const disks = spec.disks
      .map((d, i) => ({ d, i }))
      .sort((a, b) => a.d.devicePosition - b.d.devicePosition)
      .map(({ d, i }) => this.disk(d, `${field}.disks[${i}]`));
    if (spec.boot?.kernel) return disks;
    const bootable = disks.findIndex((d) => d.bootable);
    return bootable > 0 ? [disks[bootable], ...disks.filter((_, i) => i !== bootable)] : disks;
  }

  private boot(spec: computeV1.VmSpec, field: string): DriverBoot {
    const boot = spec.boot;
    if (!boot?.kernel) return { kind: 'disk' };
    return {
      kind: 'kernel',
      kernel: this.catalogue.resolve(`${field}.boot.kernel`, boot.kernel, spec.kernelSha256),
      ...(boot.initrd
        ? { initrd: this.catalogue.resolve(`${field}.boot.initrd`, boot.initrd, spec.initrdSha256) }
        : {}),
      cmdline: boot.cmdline,
    };
  }
}
