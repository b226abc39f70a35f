import { status } from '@grpc/grpc-js';
import { computeV1, storageV1 } from '@flotilla/contracts';
import { isGrpcStatus } from '@flotilla/platform';
import type { Ec2Context } from './context';
import type { CatalogueIndex } from '../compat/catalogue';
import { wireDate } from '../compat/wire-date';
import { amiIdOf, instancesNotFound } from './ids';
import { InstanceMap, InstanceRecord } from './instance-map';
import { Ec2State, ec2State, ec2StateOf } from './instance-state';
import type { InstanceView } from './instance-view';
import type { Ec2InstanceRow } from './persistence';
import { TagStore } from './tag-store';

/** An instance as the EC2 front sees it: the view, and the VM behind it unless it is terminated. */
export interface Instance {
  view: InstanceView;
  /** User data is read only for named instances (DescribeInstanceAttribute). */
  row: InstanceRecord & Partial<Pick<Ec2InstanceRow, 'userData'>>;
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

/** instanceTypeOf with the flavors indexed (a listing asks for a thousand VMs'). */
function instanceTypeIn(catalogue: CatalogueIndex, vm: computeV1.Vm): string {
  return catalogue.flavorOf(vm)?.name ?? instanceTypeOf(vm, []);
}

/** What the power actions need of an instance: its id, its state and the VM behind it. */
export interface InstanceStatus {
  view: Pick<InstanceView, 'instanceId' | 'state'>;
  vm: computeV1.Vm | undefined;
}

type Found = Array<{ row: Instance['row']; vm: computeV1.Vm | undefined }>;

/**
 * Every instance of the principal's tenant, from one listing of its VMs (no second model of VMs: the state
 * is computed from compute's answer each time), sorted by instance id.
 */
export async function allInstances(ctx: Ec2Context): Promise<Instance[]> {
  const tenantId = ctx.principal.tenantId;
  const map = new InstanceMap(ctx.site.dataSource);
  const [vms, kept, tags, known] = await Promise.all([
    ctx.lookups.allVms(),
    ctx.lookups.keptCatalogue(),
    new TagStore(ctx.site.dataSource).tagsOf(tenantId),
    // Read beside the listing, not after it: sync() copes with rows recorded in between.
    ctx.site.instanceRows.of(map, tenantId),
  ]);
  const catalogue = await kept.covering(vms, ctx.lookups);
  const rows = await map.sync(tenantId, vms, (vm) => instanceTypeIn(catalogue, vm), { known });
  const vmById = new Map(vms.map((vm) => [vm.id, vm]));
  const out = await instancesOf(
    ctx,
    rows.map((row) => ({ row, vm: vmById.get(row.vmId) })),
    catalogue,
    tags,
  );
  return out.sort((a, b) => (a.view.instanceId < b.view.instanceId ? -1 : 1));
}

/**
 * The named instances, in the order named; any unknown → InvalidInstanceID.NotFound listing them all. Ids the
 * map knows cost one GetVm each; only an id it does not know (a VM made through another API and not listed
 * through EC2 yet) takes a full listing.
 */
export function namedInstances(ctx: Ec2Context, ids: string[]): Promise<Instance[]> {
  return resolveNamed(
    ctx,
    ids,
    (found, wanted) => withViews(ctx, wanted, found),
    (i) => i,
  );
}

/** namedInstances for actions that need only the states: no flavors, images or tags are read. */
export function namedStatuses(ctx: Ec2Context, ids: string[]): Promise<InstanceStatus[]> {
  return resolveNamed(
    ctx,
    ids,
    async (found) =>
      Promise.all(
        (await found).map(async ({ row, vm }) => ({
          view: { instanceId: row.instanceId, state: await stateOf(ctx, vm) },
          vm,
        })),
      ),
    (i) => i,
  );
}

async function resolveNamed<T extends InstanceStatus>(
  ctx: Ec2Context,
  ids: string[],
  build: (found: Promise<Found>, wanted: string[]) => Promise<T[]>,
  fromListing: (i: Instance) => T,
): Promise<T[]> {
  const wanted = [...new Set(ids)];
  const map = new InstanceMap(ctx.site.dataSource);
  const found = map.named(ctx.principal.tenantId, wanted, (vmId) => vmOf(ctx, vmId));
  const byId = new Map((await build(found, wanted)).map((i) => [i.view.instanceId, i]));
  if (wanted.some((id) => !byId.has(id)))
    for (const i of await allInstances(ctx))
      if (!byId.has(i.view.instanceId)) byId.set(i.view.instanceId, fromListing(i));
  const unknown = wanted.filter((id) => !byId.has(id));
  if (unknown.length) throw instancesNotFound(unknown);
  return wanted.flatMap((id) => byId.get(id) ?? []);
}

/**
 * The instances of rows just read or recorded (terminated ones over an hour ago left out). VMs the caller
 * has just read from compute and tags it knows are not read again.
 */
export function instancesOfRows(
  ctx: Ec2Context,
  rows: InstanceRecord[],
  known: { vms?: Map<string, computeV1.Vm>; tags?: Map<string, Array<{ key: string; value: string }>> } = {},
): Promise<Instance[]> {
  const map = new InstanceMap(ctx.site.dataSource);
  return withViews(
    ctx,
    rows.map((r) => r.instanceId),
    map.withVms(rows, async (vmId) => known.vms?.get(vmId) ?? vmOf(ctx, vmId)),
    known.tags,
  );
}

async function withViews(
  ctx: Ec2Context,
  ids: string[],
  rowsWithVms: Promise<Found>,
  knownTags?: Map<string, Array<{ key: string; value: string }>>,
): Promise<Instance[]> {
  const [found, kept, tags] = await Promise.all([
    rowsWithVms,
    ctx.lookups.keptCatalogue(),
    knownTags ?? new TagStore(ctx.site.dataSource).tagsOf(ctx.principal.tenantId, ids),
  ]);
  const catalogue = await kept.covering(
    found.map((f) => f.vm),
    ctx.lookups,
  );
  return instancesOf(ctx, found, catalogue, tags);
}

async function stateOf(ctx: Ec2Context, vm: computeV1.Vm | undefined): Promise<Ec2State> {
  return vm ? ec2StateOf(vm, await ctx.lookups.inFlightKind(vm)) : ec2State('terminated');
}

/**
 * stateOf for many VMs: only those with an operation in flight cost a call (and a promise); a listing of a
 * thousand idle VMs is computed at once.
 */
async function statesOf(ctx: Ec2Context, vms: Array<computeV1.Vm | undefined>): Promise<Ec2State[]> {
  const states = vms.map((vm) => (vm ? ec2StateOf(vm, undefined) : ec2State('terminated')));
  const inFlight: Array<Promise<void>> = [];
  vms.forEach((vm, i) => {
    if (vm?.currentOperationId)
      inFlight.push(
        stateOf(ctx, vm).then((s) => {
          states[i] = s;
        }),
      );
  });
  await Promise.all(inFlight);
  return states;
}

/** The tenant's VM of that id, undefined when compute no longer has it. */
async function vmOf(ctx: Ec2Context, vmId: string): Promise<computeV1.Vm | undefined> {
  try {
    const { vm } = await ctx.site.pool.vms.call.getVm({ id: vmId }, ctx.call);
    return vm && vm.tenantId === ctx.principal.tenantId && !vm.isSnapshot ? vm : undefined;
  } catch (e) {
    if (isGrpcStatus(e, status.NOT_FOUND)) return undefined;
    throw e;
  }
}

/** Instances from their rows and VMs (undefined: terminated). */
async function instancesOf(
  ctx: Ec2Context,
  found: Array<{ row: Instance['row']; vm: computeV1.Vm | undefined }>,
  catalogue: CatalogueIndex,
  tags: Map<string, Array<{ key: string; value: string }>>,
): Promise<Instance[]> {
  const states = await statesOf(
    ctx,
    found.map((f) => f.vm),
  );
  return found.map(({ row, vm }, n): Instance => {
    const image = catalogue.imageOf(vm);
    const view: InstanceView = {
      instanceId: row.instanceId,
      reservationId: row.reservationId,
      imageId: row.imageId ?? (image ? amiIdOf(image.id) : undefined),
      state: states[n],
      reason: vm?.powerStateReason ?? '',
      keyName: row.keyName ?? undefined,
      launchIndex: row.launchIndex,
      instanceType: vm ? instanceTypeIn(catalogue, vm) : (row.instanceType ?? ''),
      launchTime: (vm && wireDate(vm.createdAt)) ?? row.launchTime,
      zone: ctx.site.zone,
      architecture: image?.architecture || 'x86_64',
      rootDeviceType: image?.kind === storageV1.ImageKind.IMAGE_KIND_DISK ? 'ebs' : 'instance-store',
      clientToken: row.clientToken ?? '',
      vcpus: vm?.vcpus ?? 0,
      tags: (tags.get(row.instanceId) ?? []).map(({ key, value }) => ({ key, value })),
    };
    return { view, row, vm };
  });
}
