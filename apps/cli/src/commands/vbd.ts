import { Command } from 'commander';
import { randomUUID } from 'node:crypto';
import { status } from '@grpc/grpc-js';
import { storageV1 } from '@flotilla/contracts';
import { collectKeyValues, intInRange } from '../args';
import type { Cloud } from '../cloud';
import { action, type CommandContext } from '../context';
import { describeError } from '../errors';
import { timestamp, word } from '../format';
import { settle } from '../operations';
import { findVbd, findVdi, findVm } from '../resolve';
import { formatBytes } from '../size';
import { listWith, noteMore, withListOptions, type ListOptions } from './list-options';
import { noWaitHelp } from './vdi-common';

const { VbdMode } = storageV1;
type Vbd = storageV1.Vbd;

export function vbdCommand(): Command {
  const vbd = new Command('vbd').description(
    "attachments of disks to VMs (VBDs): a VM's start attaches them all; plug and unplug while it runs",
  );

  vbd
    .command('create')
    .description(
      'attach a disk to a VM at a device position; takes effect at the next start, or now with `vbd plug`',
    )
    .argument('<vm>', 'VM id or name')
    .argument('<vdi>', 'VDI id or name')
    .option(
      '--position <n>',
      'device position 0..15, the order the guest sees (default: the lowest free)',
      intInRange(0, 15),
    )
    .option('--ro', 'read-only (always so for snapshots and read-only disks)')
    .option('--bootable', 'the VM may boot from this disk')
    .option('--name <name>', 'a name for the attachment')
    .option('--label <key=value>', 'label the VBD (repeatable)', collectKeyValues)
    .action(action(createVbd));

  withListOptions(
    vbd
      .command('list')
      .description("list your tenant's VBDs")
      .option('--vm <vm>', "only this VM's (id or name)"),
    'fields: vm_id, vdi_id, state, type, mode, label.<key>',
  ).action(action(listVbds));

  vbd
    .command('show')
    .description('show one VBD')
    .argument('<vbd>', 'VBD id, or <vm>:<position>')
    .action(action(showVbd));

  vbd
    .command('plug')
    .description("hot-plug the disk into its running VM (through the VM's QEMU)")
    .argument('<vbd>', 'VBD id, or <vm>:<position>')
    .option('--no-wait', noWaitHelp)
    .action(action(plugVbd));

  vbd
    .command('unplug')
    .description(
      'hot-unplug the disk from its running VM: the guest is asked to release it and has --timeout to do so; ' +
        'a guest that keeps the disk keeps it until its VM halts (QEMU cannot take a PCIe device from a guest)',
    )
    .argument('<vbd>', 'VBD id, or <vm>:<position>')
    .option(
      '--force',
      "as xe's vbd-unplug --force; on QEMU it cannot take a disk the guest holds: the message says so",
    )
    .option(
      '--timeout <seconds>',
      'how long the guest gets to release the device (server default 30; at most 600)',
      intInRange(1, 600),
    )
    .option('--no-wait', noWaitHelp)
    .action(action(unplugVbd));

  vbd
    .command('destroy')
    .description('delete the attachment record (the disk is untouched); refused while attached')
    .argument('<vbd>', 'VBD id, or <vm>:<position>')
    .option('--etag <etag>', 'only if the VBD is still at this etag; exit 3 if not')
    .action(action(destroyVbd));
  return vbd;
}

const vbdState = (b: Pick<Vbd, 'state'>) => word(b.state, 'VBD_STATE_');
const vbdMode = (b: Pick<Vbd, 'mode'>) => word(b.mode, 'VBD_MODE_');

async function createVbd(
  ctx: CommandContext,
  vmRef: string,
  vdiRef: string,
  o: { position?: number; ro?: boolean; bootable?: boolean; name?: string; label?: Record<string, string> },
): Promise<void> {
  const cloud = ctx.cloud();
  const vm = await findVm(cloud, vmRef);
  const vdi = await findVdi(cloud, vdiRef);
  const { vbd } = await cloud.vbds.call.createVbd({
    requestId: `cli-${randomUUID()}`,
    vmId: vm.id,
    vdiId: vdi.id,
    devicePosition: o.position,
    type: storageV1.VbdType.VBD_TYPE_DISK,
    mode: o.ro ? VbdMode.VBD_MODE_RO : VbdMode.VBD_MODE_UNSPECIFIED,
    bootable: Boolean(o.bootable),
    unpluggable: undefined,
    labels: o.label ?? {},
    name: o.name ?? '',
  });
  if (ctx.out.json) return ctx.out.printJson({ vbd });
  if (vbd)
    ctx.out.line(
      `vbd ${vbd.id}: ${vdi.name} on vm ${vm.name} at position ${vbd.devicePosition} (${vbdMode(vbd)}, ${vbdState(vbd)})`,
    );
}

/** The disks of a VM (or of every VM), with each VDI's name and size. */
export async function vbdRows(cloud: Cloud, vbds: Vbd[], vmNames?: Map<string, string>) {
  const vdis = new Map<string, storageV1.Vdi>();
  await Promise.all(
    [...new Set(vbds.map((b) => b.vdiId).filter(Boolean))].map(async (id) => {
      const vdi = await cloud.vdis.call
        .getVdi({ id })
        .then((r) => r.vdi)
        .catch(() => undefined);
      if (vdi) vdis.set(id, vdi);
    }),
  );
  return [...vbds]
    .sort((a, b) => (a.vmId === b.vmId ? a.devicePosition - b.devicePosition : a.vmId < b.vmId ? -1 : 1))
    .map((b) => {
      const vdi = vdis.get(b.vdiId);
      return [
        ...(vmNames ? [vmNames.get(b.vmId) ?? b.vmId] : []),
        b.devicePosition,
        b.device,
        vdi ? vdi.name : b.vdiId || '(empty)',
        vdi ? formatBytes(vdi.virtualSizeBytes) : '',
        vbdMode(b),
        vbdState(b) + (b.currentOperationId ? '*' : ''),
        [b.bootable && 'bootable', b.hotPlugged && 'hot-plugged', !b.unpluggable && 'fixed']
          .filter(Boolean)
          .join(','),
        b.id,
      ];
    });
}

async function listVbds(ctx: CommandContext, o: ListOptions & { vm?: string }): Promise<void> {
  const cloud = ctx.cloud();
  const vm = o.vm ? await findVm(cloud, o.vm) : undefined;
  const filter = [vm ? `vm_id=${vm.id}` : '', o.filter ?? ''].filter(Boolean).join(',');
  const page = await listWith({ ...o, filter }, async (p) => {
    const res = await cloud.vbds.call.listVbds({ page: p });
    return { items: res.vbds, nextPageToken: res.nextPageToken };
  });
  if (ctx.out.json) return ctx.out.printJson({ vbds: page.items, nextPageToken: page.nextPageToken });
  const vmNames = new Map<string, string>();
  if (vm) vmNames.set(vm.id, vm.name);
  else
    await Promise.all(
      [...new Set(page.items.map((b) => b.vmId))].map(async (id) => {
        const v = await cloud.vms.call
          .getVm({ id })
          .then((r) => r.vm)
          .catch(() => undefined);
        if (v) vmNames.set(id, v.name);
      }),
    );
  ctx.out.table(
    ['VM', 'POSITION', 'DEVICE', 'VDI', 'SIZE', 'MODE', 'STATE', 'FLAGS', 'ID'],
    await vbdRows(cloud, page.items, vmNames),
    vm
      ? `vm ${vm.name} has no disks attached`
      : 'no VBDs (attach a disk with `flotilla vbd create <vm> <vdi>`)',
  );
  noteMore(ctx.out, page);
}

async function showVbd(ctx: CommandContext, ref: string): Promise<void> {
  const cloud = ctx.cloud();
  const b = await findVbd(cloud, ref);
  if (ctx.out.json) return ctx.out.printJson({ vbd: b });
  ctx.out.details([
    ['id', b.id],
    ['name', b.name],
    ['vm', b.vmId],
    ['vdi', b.vdiId],
    ['position', b.devicePosition],
    ['device', b.device],
    ['type', word(b.type, 'VBD_TYPE_')],
    ['mode', vbdMode(b)],
    ['state', vbdState(b)],
    ['bootable', b.bootable ? 'yes' : 'no'],
    ['hot-plugged', b.hotPlugged ? 'yes' : ''],
    ['unpluggable', b.unpluggable ? 'yes' : 'no'],
    ['host', b.hostId],
    ['allowed operations', (b.allowedOperations ?? []).map((op) => word(op, 'VBD_OPERATION_')).join(', ')],
    ['current operation', b.currentOperationId],
    ['created', timestamp(b.createdAt)],
    ['etag', b.etag],
  ]);
}

async function afterOperation(
  ctx: CommandContext,
  cloud: Cloud,
  id: string,
  response: { operation?: storageV1.PlugVbdResponse['operation'] },
  wait: boolean,
): Promise<void> {
  const operation = await settle(cloud, ctx.out, response, { wait });
  if (!operation) return;
  const { vbd } = await cloud.vbds.call.getVbd({ id });
  if (ctx.out.json) return ctx.out.printJson({ vbd, operation });
  if (vbd)
    ctx.out.line(
      `vbd ${vbd.id} is ${vbdState(vbd)}${vbd.device ? ` as ${vbd.device}` : ''} (position ${vbd.devicePosition})`,
    );
}

async function plugVbd(ctx: CommandContext, ref: string, o: { wait: boolean }): Promise<void> {
  const cloud = ctx.cloud();
  const b = await findVbd(cloud, ref);
  const response = await cloud.vbds.call.plugVbd({ id: b.id, requestId: `cli-${randomUUID()}`, etag: '' });
  await afterOperation(ctx, cloud, b.id, response, o.wait);
}

async function unplugVbd(
  ctx: CommandContext,
  ref: string,
  o: { force?: boolean; timeout?: number; wait: boolean },
): Promise<void> {
  const cloud = ctx.cloud();
  const b = await findVbd(cloud, ref);
  const response = await cloud.vbds.call.unplugVbd({
    id: b.id,
    requestId: `cli-${randomUUID()}`,
    etag: '',
    timeoutMs: (o.timeout ?? 0) * 1000,
    force: Boolean(o.force),
  });
  await afterOperation(ctx, cloud, b.id, response, o.wait);
}

async function destroyVbd(ctx: CommandContext, ref: string, o: { etag?: string }): Promise<void> {
  const cloud = ctx.cloud();
  const b = await findVbd(cloud, ref);
  const res = await cloud.vbds.call.destroyVbd({ id: b.id, etag: o.etag ?? '' });
  if (ctx.out.json) return ctx.out.printJson(res);
  ctx.out.line(`vbd ${b.id} destroyed`);
}

/**
 * A VM's disks for `vm show`: rows, or a note when they cannot be read (the VM is shown anyway). A storage
 * service that does not serve VBDs yet (UNIMPLEMENTED) gives neither, so older pools show VMs as before.
 */
export async function disksOfVm(
  cloud: Cloud,
  vmId: string,
): Promise<{ rows: Array<Array<string | number>> } | { note: string } | undefined> {
  try {
    const { vbds } = await cloud.vbds.call.listVbds({
      page: { pageSize: 100, pageToken: '', filter: `vm_id=${vmId}` },
    });
    return { rows: await vbdRows(cloud, vbds) };
  } catch (e) {
    if ((e as { code?: number }).code === status.UNIMPLEMENTED) return undefined;
    return { note: `disks: not shown (${describeError(e).message})` };
  }
}
