import { Command } from 'commander';
import { randomUUID } from 'node:crypto';
import { collectKeyValues } from '../args';
import { action, type CommandContext } from '../context';
import { CliError, ExitCode } from '../errors';
import { findVdi } from '../resolve';
import { withListOptions, type ListOptions } from './list-options';
import { cloneVdi, destroyVdi, finish, joinFilter, listVdiPage, noWaitHelp } from './vdi-common';

/** Snapshots are read-only VDIs (is_snapshot) frozen from a disk; these commands are their view of VdiService. */
export function snapshotCommand(): Command {
  const snapshot = new Command('snapshot').description(
    'disk snapshots: read-only, cheap (qcow2 backing chains); revert a disk to one, or clone one',
  );

  snapshot
    .command('create')
    .description(
      "snapshot a disk; while its VM runs, through the VM's QEMU (crash-consistent: the guest is not quiesced)",
    )
    .argument('<vdi>', 'VDI id or name')
    .option('--name <name>', 'name of the snapshot (default: "<disk name> <UTC time>")')
    .option('--label <key=value>', 'label the snapshot (repeatable)', collectKeyValues)
    .option('--no-wait', noWaitHelp)
    .action(action(createSnapshot));

  withListOptions(
    snapshot
      .command('list')
      .description("list snapshots: a disk's, or all your tenant's")
      .argument('[vdi]', 'only the snapshots of this disk (id or name)'),
    'fields: name, sr_id, state, snapshot_of, parent_id, label.<key>',
  ).action(action(listSnapshots));

  snapshot
    .command('revert')
    .description(
      'discard every write made to a disk since the snapshot (the disk keeps its id, VBDs and other snapshots); ' +
        'refused while the disk is attached: shut its VM down first',
    )
    .argument('<vdi>', 'the disk, by id or name')
    .argument('<snapshot>', 'a snapshot of that disk, by id or name')
    .option('--etag <etag>', 'only if the disk is still at this etag; exit 3 if not')
    .option('--no-wait', noWaitHelp)
    .action(action(revertSnapshot));

  snapshot
    .command('delete')
    .description('delete a snapshot; its data stays in the chain of disks that need it until coalesced')
    .argument('<snapshot>', 'snapshot id or name')
    .option('--etag <etag>', 'only if the snapshot is still at this etag; exit 3 if not')
    .option('--no-wait', noWaitHelp)
    .action(
      action((ctx: CommandContext, ref: string, o: Parameters<typeof destroyVdi>[2]) =>
        destroyVdi(ctx, ref, o, 'snapshot'),
      ),
    );

  snapshot
    .command('clone')
    .description('make a writable copy-on-write disk from a snapshot (a linked clone, in the same SR)')
    .argument('<snapshot>', 'snapshot id or name')
    .option('--name <name>', 'name of the new disk (default: "<snapshot name> (clone)")')
    .option('--sharable', 'the clone may be attached read-write by several VMs at once')
    .option('--label <key=value>', 'label the new disk (repeatable)', collectKeyValues)
    .option('--no-wait', noWaitHelp)
    .action(
      action((ctx: CommandContext, ref: string, o: Parameters<typeof cloneVdi>[2]) =>
        cloneVdi(ctx, ref, o, 'snapshot'),
      ),
    );
  return snapshot;
}

async function createSnapshot(
  ctx: CommandContext,
  ref: string,
  o: { name?: string; label?: Record<string, string>; wait: boolean },
): Promise<void> {
  const cloud = ctx.cloud();
  const vdi = await findVdi(cloud, ref);
  if (vdi.isSnapshot)
    throw new CliError(
      `${vdi.name} is a snapshot already: clone it with \`flotilla snapshot clone\``,
      ExitCode.Usage,
    );
  const response = await cloud.vdis.call.snapshotVdi({
    id: vdi.id,
    requestId: `cli-${randomUUID()}`,
    name: o.name ?? '',
    labels: o.label ?? {},
  });
  await finish(ctx, cloud, response, response.snapshot?.id, o.wait);
}

async function listSnapshots(ctx: CommandContext, ref: string | undefined, o: ListOptions): Promise<void> {
  const cloud = ctx.cloud();
  const of = ref ? await findVdi(cloud, ref) : undefined;
  const filter = joinFilter('is_snapshot=true', of ? `snapshot_of=${of.id}` : undefined, o.filter);
  await listVdiPage(
    ctx,
    cloud,
    { ...o, filter },
    of
      ? `vdi ${of.name} has no snapshots (take one with \`flotilla snapshot create ${of.name}\`)`
      : 'no snapshots',
  );
}

async function revertSnapshot(
  ctx: CommandContext,
  vdiRef: string,
  snapshotRef: string,
  o: { etag?: string; wait: boolean },
): Promise<void> {
  const cloud = ctx.cloud();
  const vdi = await findVdi(cloud, vdiRef);
  const snapshot = await findVdi(cloud, snapshotRef, 'snapshot');
  if (!snapshot.isSnapshot || snapshot.snapshotOf !== vdi.id)
    throw new CliError(
      `${snapshot.name} is not a snapshot of ${vdi.name} (see \`flotilla snapshot list ${vdi.name}\`)`,
      ExitCode.Usage,
    );
  const response = await cloud.vdis.call.revertVdi({
    id: vdi.id,
    requestId: `cli-${randomUUID()}`,
    etag: o.etag ?? '',
    snapshotId: snapshot.id,
  });
  await finish(ctx, cloud, response, vdi.id, o.wait);
}
