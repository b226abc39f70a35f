import { computeV1, storageV1 } from '@flotilla/contracts';
import { DomainError, ErrorCode } from '@flotilla/domain';
import { VmRow } from '../persistence/entities';
import { ImageCatalogue, KernelBoot } from './image-catalogue';

/**
 * What a host runs for a VM, built one way for a start and for a migration's destination (which must run
 * the same machine: the same kernel, command line and devices).
 */

/** What the host boots: the KERNEL image's files, or nothing (firmware boot from the VM's disk). */
export async function kernelBootOf(images: ImageCatalogue, vm: VmRow): Promise<KernelBoot> {
  const none = { kernel: '', initrd: '', cmdline: '', kernelSha256: '', initrdSha256: '' };
  // A VM created from a DISK image boots its own root disk: the image is not needed any more.
  if (!vm.boot.image || vm.boot.fromDisk) return none;
  const image = await images.resolve(vm.tenantId, vm.boot.image);
  if (image.kind === 'KERNEL') return image;
  throw new DomainError(
    ErrorCode.FailedPrecondition,
    `image ${image.name} is a DISK image and vm ${vm.name} has no root disk made from it: create a new VM with this image`,
    { field: 'boot.image' },
  );
}

/** The spec the agent runs; `disks` come from storage (empty for a migration: storage gives them). */
export function vmSpecOf(vm: VmRow, boot: KernelBoot, disks: storageV1.VmDisk[]): computeV1.VmSpec {
  return {
    vmId: vm.id,
    name: vm.name,
    vcpus: vm.vcpus,
    memoryMib: vm.memoryMib,
    boot: {
      image: vm.boot.image ?? '',
      kernel: boot.kernel,
      initrd: boot.initrd,
      // The image's line, the VM's name (for guests that want to know it), then the VM's own line:
      // a later option wins in Linux. VM names need no quoting (letters, digits, . _ -).
      cmdline: boot.kernel
        ? [boot.cmdline, `flotilla.name=${vm.name}`, vm.boot.cmdline ?? ''].filter(Boolean).join(' ')
        : '',
    },
    nics: vm.nics.map((n) => ({
      mac: n.mac,
      forwards: n.forwards.map((f) => ({ guestPort: f.guestPort, hostAddress: '' })),
    })),
    kernelSha256: boot.kernelSha256,
    initrdSha256: boot.initrdSha256,
    disks,
  };
}
