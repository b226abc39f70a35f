import { Command, Option } from 'commander';
import { randomUUID } from 'node:crypto';
import { collectKeyValues, sizeArg } from '../args';
import { action, type CommandContext } from '../context';
import { CliError, ExitCode } from '../errors';
import { findVdi } from '../resolve';
import { formatBytes } from '../size';
import { withListOptions, type ListOptions } from './list-options';
import {
  cloneVdi,
  destroyVdi,
  finish,
  joinFilter,
  listVdiPage,
  noWaitHelp,
  printVdi,
  requestIdHelp,
  srId,
} from './vdi-common';
import { exportVdi, importVdi } from './vdi-io';

export function vdiCommand(): Command {
  const vdi = new Command('vdi').description(
    'virtual disks (qcow2 files in an SR): create, copy, clone, resize, import, export, destroy',
  );

  vdi
    .command('create')
    .description('create an empty thin disk, or a copy-on-write clone of a DISK image with --image')
    .argument('<name>', '1..255 characters, not unique')
    .requiredOption('--sr <sr>', 'SR id or name (see `flotilla sr list`)')
    .option(
      '--size <size>',
      'virtual size: 10G, 512M, 1T or bytes (powers of 1024; rounded up to whole MiB); with --image, default the image’s',
      sizeArg,
    )
    .option('--image <image>', 'a DISK catalogue image to clone, by id or name')
    .option('--sharable', 'may be attached read-write by several VMs at once (their guests must coordinate)')
    .option('--description <text>', 'what the disk is for')
    .option('--label <key=value>', 'label the disk (repeatable)', collectKeyValues)
    .option('--request-id <id>', `${requestIdHelp} (default: a new random id)`)
    .option('--no-wait', noWaitHelp)
    .action(action(createVdi));

  withListOptions(
    vdi
      .command('list')
      .description(
        "list your tenant's disks (snapshots only with --snapshots; see also `flotilla snapshot list`)",
      )
      .option('--sr <sr>', 'only disks in this SR (id or name)')
      .option('--snapshots', 'include snapshots'),
    'fields: name, sr_id, state, is_snapshot, snapshot_of, parent_id, image_id, label.<key>',
  ).action(action(listVdis));

  vdi
    .command('show')
    .description('show one disk (or snapshot): size, use, chain, attachments')
    .argument('<vdi>', 'VDI id or name')
    .action(action(showVdi));

  vdi
    .command('resize')
    .description(
      'grow a disk (online through QEMU when its VM runs; the guest grows its own partitions); shrinking is refused',
    )
    .argument('<vdi>', 'VDI id or name')
    .requiredOption('--size <size>', 'new virtual size, larger than now: 20G, 1T or bytes', sizeArg)
    .option('--etag <etag>', 'only if the disk is still at this etag; exit 3 if not')
    .option('--no-wait', noWaitHelp)
    .action(action(resizeVdi));

  vdi
    .command('destroy')
    .description(
      'destroy a disk and its detached VBDs (refused while attached); a disk others are backed by stays as a hidden chain node until coalesced',
    )
    .argument('<vdi>', 'VDI id or name')
    .option('--etag <etag>', 'only if the disk is still at this etag; exit 3 if not')
    .option('--no-wait', noWaitHelp)
    .action(action(destroyVdi));

  vdi
    .command('copy')
    .description(
      'make a full, independent copy (chain flattened) in the same or another SR, with a progress bar; ' +
        'a disk attached read-write to a running VM cannot be copied: snapshot it and copy the snapshot',
    )
    .argument('<vdi>', 'VDI or snapshot, by id or name')
    .option('--sr <sr>', "target SR, id or name (default: the source's)")
    .option('--name <name>', 'name of the copy (default: "<source name> (copy)")')
    .option('--label <key=value>', 'label the copy (repeatable)', collectKeyValues)
    .option('--no-wait', noWaitHelp)
    .action(action(copyVdi));

  vdi
    .command('clone')
    .description(
      'make a cheap copy-on-write linked clone in the same SR (use `vdi copy` for another SR or an independent disk)',
    )
    .argument('<vdi>', 'VDI or snapshot, by id or name')
    .option('--name <name>', 'name of the clone (default: "<source name> (clone)")')
    .option('--sharable', 'the clone may be attached read-write by several VMs at once')
    .option('--label <key=value>', 'label the clone (repeatable)', collectKeyValues)
    .option('--no-wait', noWaitHelp)
    .action(action(cloneVdi));

  vdi
    .command('import')
    .description(
      'upload a disk image file as a new disk: its SHA-256 is computed first (a quick read of the file) and ' +
        'checked by the server; then the file is streamed with a progress bar, and the server inspects and ' +
        'converts it to qcow2 (a second progress bar). Images are treated as hostile: backing files, external ' +
        'data files and a format other than --format are refused.',
    )
    .argument('<file>', 'the image file (a regular file: its size is sent first)')
    .requiredOption('--sr <sr>', 'SR id or name')
    .addOption(
      new Option('--format <format>', 'format of the file, never guessed')
        .choices(['raw', 'qcow2', 'vmdk', 'vhd'])
        .makeOptionMandatory(),
    )
    .option('--name <name>', 'name of the disk (default: the file name)')
    .option('--no-checksum', 'skip the SHA-256 pre-pass (the server then checks only the byte count)')
    .option('--sharable', 'may be attached read-write by several VMs at once')
    .option('--description <text>', 'what the disk is for')
    .option('--label <key=value>', 'label the disk (repeatable)', collectKeyValues)
    .option('--request-id <id>', `${requestIdHelp} (default: a new random id)`)
    .option('--no-wait', 'return once the upload is complete, without waiting for inspection and conversion')
    .action(action(importVdi));

  vdi
    .command('export')
    .description(
      'download a disk as a standalone image file, with a progress bar; qcow2 and vmdk are first staged by the ' +
        'server (a progress bar too). The file is written under a temporary name and renamed into place only ' +
        "when its size and the server's SHA-256 match. A disk attached read-write to a running VM cannot be " +
        'exported: snapshot it and export the snapshot.',
    )
    .argument('<vdi>', 'VDI or snapshot, by id or name')
    .addOption(
      new Option('--format <format>', 'image format to produce')
        .choices(['raw', 'qcow2', 'vmdk'])
        .makeOptionMandatory(),
    )
    .option('-o, --output <file>', 'where to write (default: ./<disk name>.<img|qcow2|vmdk>)')
    .option('--compress', 'qcow2 only: compressed clusters (smaller, slower)')
    .option('--force', 'replace the output file if it exists')
    .action(action(exportVdi));
  return vdi;
}

async function createVdi(
  ctx: CommandContext,
  name: string,
  o: {
    sr: string;
    size?: number;
    image?: string;
    sharable?: boolean;
    description?: string;
    label?: Record<string, string>;
    requestId?: string;
    wait: boolean;
  },
): Promise<void> {
  if (o.size === undefined && !o.image)
    throw new CliError('give --size (or --image, whose size is the default)', ExitCode.Usage);
  const cloud = ctx.cloud();
  const response = await cloud.vdis.call.createVdi({
    requestId: o.requestId ?? `cli-${randomUUID()}`,
    srId: await srId(cloud, o.sr),
    name,
    description: o.description ?? '',
    labels: o.label ?? {},
    virtualSizeBytes: o.size ?? 0,
    sharable: Boolean(o.sharable),
    image: o.image ?? '',
  });
  await finish(ctx, cloud, response, response.vdi?.id, o.wait);
}

async function listVdis(
  ctx: CommandContext,
  o: ListOptions & { sr?: string; snapshots?: boolean },
): Promise<void> {
  const cloud = ctx.cloud();
  const filter = joinFilter(
    o.sr ? `sr_id=${await srId(cloud, o.sr)}` : undefined,
    o.snapshots ? undefined : 'is_snapshot=false',
    o.filter,
  );
  await listVdiPage(
    ctx,
    cloud,
    { ...o, filter },
    'no disks (create one with `flotilla vdi create <name> --sr <sr> --size 10G`)',
  );
}

async function showVdi(ctx: CommandContext, ref: string): Promise<void> {
  const cloud = ctx.cloud();
  const vdi = await findVdi(cloud, ref);
  if (ctx.out.json) return ctx.out.printJson({ vdi });
  await printVdi(ctx, cloud, vdi);
}

async function resizeVdi(
  ctx: CommandContext,
  ref: string,
  o: { size: number; etag?: string; wait: boolean },
): Promise<void> {
  const cloud = ctx.cloud();
  const vdi = await findVdi(cloud, ref);
  if (o.size <= vdi.virtualSizeBytes)
    throw new CliError(
      `vdi ${vdi.name} is ${formatBytes(vdi.virtualSizeBytes)}: --size must be larger (shrinking would cut the guest's file systems)`,
      ExitCode.Usage,
    );
  const response = await cloud.vdis.call.resizeVdi({
    id: vdi.id,
    requestId: `cli-${randomUUID()}`,
    etag: o.etag ?? '',
    virtualSizeBytes: o.size,
  });
  await finish(ctx, cloud, response, vdi.id, o.wait);
}

async function copyVdi(
  ctx: CommandContext,
  ref: string,
  o: { sr?: string; name?: string; label?: Record<string, string>; wait: boolean },
): Promise<void> {
  const cloud = ctx.cloud();
  const vdi = await findVdi(cloud, ref);
  const response = await cloud.vdis.call.copyVdi({
    id: vdi.id,
    requestId: `cli-${randomUUID()}`,
    srId: o.sr ? await srId(cloud, o.sr) : '',
    name: o.name ?? '',
    labels: o.label ?? {},
  });
  await finish(ctx, cloud, response, response.vdi?.id, o.wait);
}
