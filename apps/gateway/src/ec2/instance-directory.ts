import { computeV1, storageV1 } from '@flotilla/contracts';
import type { Ec2Context } from './context';
import { wireDate } from '../compat/wire-date';
import { amiIdOf, instancesNotFound } from './ids';
import { InstanceMap } from './instance-map';
import { ec2State, ec2StateOf } from './instance-state';
import type { InstanceView } from './instance-view';
import type { Ec2InstanceRow } from './persistence';
import { TagStore } from './tag-store';

/** An instance as the EC2 front sees it: the view, and the VM behind it unless it is terminated. */
export interface Instance {
  view: InstanceView;
  row: Ec2InstanceRow;
  vm: computeV1.Vm | undefined;
}

/** The EC2 instance type of a VM: its flavor's name, or "custom-<vcpus>x<MiB>" for explicitly sized VMs. */
export function instanceTypeOf(
  vm: Pick<computeV1.Vm, 'flavorId' | 'vcpus' | 'memoryMib'>,
  flavors: computeV1.Flavor[],
): string {
  const flavor = flavors.find((f) => f.id === vm.flavorId || f.name === vm.flavorId);
  return flavor?.name ?? `custom-${vm.vcpus}x${vm.memoryMib}`;
}

/**
 * Every instance of the principal's tenant, from one listing of its VMs (no second model of VMs: the state
 * is computed from compute's answer each time), sorted by instance id.
 */
export async function allInstances(ctx: Ec2Context): Promise<Instance[]> {
  const tenantId = ctx.principal.tenantId;
  const [vms, flavors, images] = await Promise.all([
    ctx.lookups.allVms(),
    ctx.lookups.allFlavors(),
    ctx.lookups.allImages(),
  ]);
  const rows = await new InstanceMap(ctx.site.dataSource).sync(tenantId, vms, (vm) =>
    instanceTypeOf(vm, flavors),
  );
  const tags = await new TagStore(ctx.site.dataSource).tagsOf(tenantId);
  const vmById = new Map(vms.map((vm) => [vm.id, vm]));
  const imageByName = new Map(images.map((i) => [i.name, i]));
  const out = await Promise.all(
    rows.map(async (row): Promise<Instance> => {
      const vm = vmById.get(row.vmId);
      const image = vm?.boot?.image ? imageByName.get(vm.boot.image) : undefined;
      const view: InstanceView = {
        instanceId: row.instanceId,
        reservationId: row.reservationId,
        imageId: row.imageId ?? (image ? amiIdOf(image.id) : undefined),
        state: vm ? ec2StateOf(vm, await ctx.lookups.inFlightKind(vm)) : ec2State('terminated'),
        reason: vm?.powerStateReason ?? '',
        keyName: row.keyName ?? undefined,
        launchIndex: row.launchIndex,
        instanceType: vm ? instanceTypeOf(vm, flavors) : (row.instanceType ?? ''),
        launchTime: (vm && wireDate(vm.createdAt)) ?? row.launchTime,
        zone: ctx.site.zone,
        architecture: image?.architecture || 'x86_64',
        rootDeviceType: image?.kind === storageV1.ImageKind.IMAGE_KIND_DISK ? 'ebs' : 'instance-store',
        clientToken: row.clientToken ?? '',
        vcpus: vm?.vcpus ?? 0,
        tags: (tags.get(row.instanceId) ?? []).map(({ key, value }) => ({ key, value })),
      };
      return { view, row, vm };
    }),
  );
  return out.sort((a, b) => (a.view.instanceId < b.view.instanceId ? -1 : 1));
}

/** The named instances, in the order named; any unknown → InvalidInstanceID.NotFound listing them all. */
export async function namedInstances(ctx: Ec2Context, ids: string[]): Promise<Instance[]> {
  const all = new Map((await allInstances(ctx)).map((i) => [i.view.instanceId, i]));
  const unknown = ids.filter((id) => !all.has(id));
  if (unknown.length) throw instancesNotFound([...new Set(unknown)]);
  return [...new Set(ids)].flatMap((id) => all.get(id) ?? []);
}
