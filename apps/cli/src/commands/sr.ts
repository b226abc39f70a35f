import { Command, InvalidArgumentError, Option } from 'commander';
import { randomUUID } from 'node:crypto';
import * as path from 'node:path';
import { storageV1 } from '@flotilla/contracts';
import { collectKeyValues } from '../args';
import type { Cloud } from '../cloud';
import { action, type CommandContext } from '../context';
import { CliError, ExitCode } from '../errors';
import { age, labels, timestamp, word } from '../format';
import { settle } from '../operations';
import { hostNames } from '../resolve';
import { formatBytes, gibibytes } from '../size';
import { listWith, noteMore, withListOptions, type ListOptions } from './list-options';

const { SrType } = storageV1;
type Sr = storageV1.Sr;

interface CreateOptions {
  type: 'file' | 'shared';
  path: string;
  host?: string;
  tenant?: string;
  overprovision?: number;
  adopt?: boolean;
  description?: string;
  label?: Record<string, string>;
  requestId?: string;
  wait: boolean;
}

const noWaitHelp = 'do not wait: print the operation id and return (follow it with `flotilla op wait <id>`)';

export function srCommand(): Command {
  const sr = new Command('sr').description(
    'storage repositories: the directories that hold virtual disks (pool-operator and above manage them)',
  );

  sr.command('create')
    .description(
      'create an SR: the host agent(s) create the directory if missing, write the SR marker and measure capacity; ' +
        'waits until it is AVAILABLE (or DEGRADED: a shared SR some hosts do not see)',
    )
    .argument(
      '<name>',
      "1..63 letters, digits, '-', '_', '.'; starts with a letter or digit; unique in the pool",
    )
    .addOption(
      new Option('--type <type>', 'file: a directory of one host; shared: a directory every host sees')
        .choices(['file', 'shared'])
        .makeOptionMandatory(),
    )
    .requiredOption(
      '--path <dir>',
      "directory on the host(s), under the agents' SR roots (FLOTILLA_SR_ROOTS, default <data dir>/sr)",
    )
    .option('--host <host>', 'file SRs: the host whose directory it is, by id or name')
    .option('--tenant <tenant>', 'dedicate the SR to this tenant (id or name); default: pool-wide')
    .option(
      '--overprovision <ratio>',
      'ceiling on virtual allocation / capacity (thin provisioning), e.g. 2; 0 or absent: no ceiling',
      ratioArg,
    )
    .option(
      '--adopt',
      "adopt a directory holding a forgotten SR's marker, with its disks (`sr forget` undone)",
    )
    .option('--description <text>', 'what the SR is for')
    .option('--label <key=value>', 'label the SR (repeatable)', collectKeyValues)
    .option('--request-id <id>', 'idempotency key (default: a new random id)')
    .option('--no-wait', noWaitHelp)
    .action(action(createSr));

  withListOptions(
    sr.command('list').description('list the SRs your tenant may use (pool-wide ones and its own)'),
    'fields: name, type (FILE, SHARED), state, host_id, tenant_id, label.<key>',
  ).action(action(listSrs));

  sr.command('show')
    .description('show one SR: capacity, utilisation, allocation and which hosts see it')
    .argument('<sr>', 'SR id or name')
    .action(action(showSr));

  sr.command('scan')
    .description(
      'rescan the directory: refresh capacity and utilisation, mark vanished disks MISSING, introduce unknown ' +
        "qcow2 files that pass Flotilla's image inspector (others are refused and listed)",
    )
    .argument('<sr>', 'SR id or name')
    .option('--no-wait', noWaitHelp)
    .action(action(scanSr));

  sr.command('forget')
    .description(
      'remove the SR and its disks from Flotilla, leaving every file on disk (`sr create --adopt` brings it back)',
    )
    .argument('<sr>', 'SR id or name')
    .option('--etag <etag>', 'only if the SR is still at this etag (from `sr show --json`); exit 3 if not')
    .action(action(forgetSr));

  sr.command('destroy')
    .description(
      "delete the SR's disk files, its marker and its record (the directory too, if Flotilla created it); " +
        'refused while it holds disks unless --destroy-vdis, and always while a disk is attached',
    )
    .argument('<sr>', 'SR id or name')
    .option('--destroy-vdis', 'also destroy the disks it holds (and their detached VBDs)')
    .option('--etag <etag>', 'only if the SR is still at this etag; exit 3 if not')
    .option('--no-wait', noWaitHelp)
    .action(action(destroySr));
  return sr;
}

function ratioArg(raw: string): number {
  const n = Number(raw);
  if (!/^\d+(\.\d+)?$/.test(raw.trim()) || !Number.isFinite(n))
    throw new InvalidArgumentError(`expected a ratio such as 1.5 (0: no ceiling), got "${raw}"`);
  return n;
}

export const srType = (s: Pick<Sr, 'type'>): string => word(s.type, 'SR_TYPE_');
export const srState = (s: Pick<Sr, 'state'>): string => word(s.state, 'SR_STATE_');

/** "2/3": how many of the hosts that should see the SR do. */
function seenBy(s: Pick<Sr, 'hosts'>): string {
  const hosts = s.hosts ?? [];
  return hosts.length ? `${hosts.filter((h) => h.attached).length}/${hosts.length}` : '';
}

async function createSr(ctx: CommandContext, name: string, o: CreateOptions): Promise<void> {
  if (o.type === 'file' && !o.host)
    throw new CliError("a file SR is one host's directory: give --host <host>", ExitCode.Usage);
  if (o.type === 'shared' && o.host)
    throw new CliError('a shared SR is seen by every host: leave out --host', ExitCode.Usage);
  if (!path.isAbsolute(o.path))
    throw new CliError(
      `--path must be an absolute directory on the host(s), got "${o.path}"`,
      ExitCode.Usage,
    );
  const cloud = ctx.cloud();
  const hostId = o.host ? ((await cloud.hosts.call.getHost({ id: o.host })).host?.id ?? o.host) : '';
  const tenantId = o.tenant
    ? ((await cloud.tenants.call.getTenant({ id: o.tenant })).tenant?.id ?? o.tenant)
    : '';
  const response = await cloud.srs.call.createSr({
    requestId: o.requestId ?? `cli-${randomUUID()}`,
    name,
    description: o.description ?? '',
    labels: o.label ?? {},
    type: o.type === 'file' ? SrType.SR_TYPE_FILE : SrType.SR_TYPE_SHARED,
    hostId,
    path: o.path,
    tenantId,
    overprovisionRatio: o.overprovision ?? 0,
    adoptExisting: Boolean(o.adopt),
  });
  const operation = await settle(cloud, ctx.out, response, { wait: o.wait });
  if (!operation) return;
  const { sr } = await cloud.srs.call.getSr({ id: response.sr?.id || name });
  if (ctx.out.json) return ctx.out.printJson({ sr, operation });
  if (sr) await printSr(ctx, cloud, sr);
}

async function listSrs(ctx: CommandContext, o: ListOptions): Promise<void> {
  const cloud = ctx.cloud();
  const page = await listWith(o, async (p) => {
    const res = await cloud.srs.call.listSrs({ page: p });
    return { items: res.srs, nextPageToken: res.nextPageToken };
  });
  if (ctx.out.json) return ctx.out.printJson({ srs: page.items, nextPageToken: page.nextPageToken });
  const hosts = page.items.some((s) => s.hostId) ? await hostNames(cloud) : new Map<string, string>();
  ctx.out.table(
    ['NAME', 'ID', 'TYPE', 'STATE', 'HOST', 'CAPACITY', 'PHYSICAL', 'VIRTUAL', 'SEEN BY', 'AGE'],
    page.items.map((s) => [
      s.name,
      s.id,
      srType(s),
      srState(s) + (s.currentOperationId ? '*' : ''),
      s.hostId ? (hosts.get(s.hostId) ?? s.hostId) : 'all',
      gibibytes(s.capacityBytes),
      gibibytes(s.physicalUtilisationBytes),
      gibibytes(s.virtualAllocationBytes),
      seenBy(s),
      age(s.createdAt),
    ]),
    'no SRs (create one with `flotilla sr create <name> --type shared --path <dir>`)',
  );
  if (page.items.some((s) => s.currentOperationId)) ctx.out.note('* an operation is in progress');
  noteMore(ctx.out, page);
}

async function showSr(ctx: CommandContext, ref: string): Promise<void> {
  const cloud = ctx.cloud();
  const { sr } = await cloud.srs.call.getSr({ id: ref });
  if (ctx.out.json) return ctx.out.printJson({ sr });
  if (sr) await printSr(ctx, cloud, sr);
}

/** Capacity, utilisation and allocation in words: "12 GiB of 100 GiB (12%)", with the ceiling if any. */
export function srSpace(s: Sr): Array<[string, string]> {
  const cap = s.capacityBytes;
  const pct = (n: number) => (cap ? ` (${Math.round((n / cap) * 100)}% of capacity)` : '');
  const ceiling = s.overprovisionRatio
    ? `${formatBytes(cap * s.overprovisionRatio)} (${s.overprovisionRatio}× capacity)`
    : 'none';
  return [
    ['capacity', formatBytes(cap)],
    ['free', cap ? formatBytes(Math.max(0, cap - s.physicalUtilisationBytes)) : ''],
    ['physical use', `${formatBytes(s.physicalUtilisationBytes)}${pct(s.physicalUtilisationBytes)}`],
    ['virtual allocation', `${formatBytes(s.virtualAllocationBytes)}${pct(s.virtualAllocationBytes)}`],
    ['allocation ceiling', ceiling],
  ];
}

async function printSr(ctx: CommandContext, cloud: Cloud, s: Sr): Promise<void> {
  const hosts = s.hosts?.length || s.hostId ? await hostNames(cloud) : new Map<string, string>();
  const hostName = (id: string) => (hosts.get(id) ? `${hosts.get(id)} (${id})` : id);
  ctx.out.details([
    ['name', s.name],
    ['id', s.id],
    ['type', srType(s)],
    ['state', srState(s) + (s.stateReason ? ` (${s.stateReason})` : '')],
    ['host', s.hostId ? hostName(s.hostId) : ''],
    ['path', s.path],
    ['tenant', s.tenantId || 'pool-wide'],
    ['description', s.description],
    ...srSpace(s),
    ['labels', labels(s.labels)],
    ['allowed operations', (s.allowedOperations ?? []).map((op) => word(op, 'SR_OPERATION_')).join(', ')],
    ['current operation', s.currentOperationId],
    ['last scanned', timestamp(s.lastScannedAt)],
    ['created', timestamp(s.createdAt)],
    ['etag', s.etag],
  ]);
  if (s.hosts?.length) {
    ctx.out.line('');
    ctx.out.table(
      ['HOST', 'SEES IT', 'REASON'],
      s.hosts.map((h) => [hostName(h.hostId), h.attached ? 'yes' : 'no', h.reason]),
    );
  }
}

async function scanSr(ctx: CommandContext, ref: string, o: { wait: boolean }): Promise<void> {
  const cloud = ctx.cloud();
  const { sr } = await cloud.srs.call.getSr({ id: ref });
  const response = await cloud.srs.call.scanSr({ id: sr?.id ?? ref, requestId: `cli-${randomUUID()}` });
  const operation = await settle(cloud, ctx.out, response, { wait: o.wait });
  if (!operation) return;
  const after = (await cloud.srs.call.getSr({ id: sr?.id ?? ref })).sr;
  if (ctx.out.json) return ctx.out.printJson({ operation, sr: after });
  ctx.out.line(scanSummary(sr?.name ?? ref, operation.result ?? {}));
  for (const [key, reason] of Object.entries(operation.result ?? {}))
    if (key.startsWith('refused.')) ctx.out.note(`  refused ${key.slice('refused.'.length)}: ${reason}`);
}

/** "sr local scanned: 2 introduced, 0 missing, 1 recovered, 1 refused". */
export function scanSummary(name: string, result: Record<string, string>): string {
  const n = (k: string) => Number(result[k] ?? 0);
  const refused = Object.keys(result).filter((k) => k.startsWith('refused.')).length;
  return (
    `sr ${name} scanned: ${n('introduced')} introduced, ${n('missing')} missing, ${n('recovered')} recovered` +
    (refused ? `, ${refused} refused` : '')
  );
}

async function forgetSr(ctx: CommandContext, ref: string, o: { etag?: string }): Promise<void> {
  const cloud = ctx.cloud();
  const { sr } = await cloud.srs.call.getSr({ id: ref });
  const res = await cloud.srs.call.forgetSr({ id: sr?.id ?? ref, etag: o.etag ?? '' });
  if (ctx.out.json) return ctx.out.printJson(res);
  ctx.out.line(`sr ${sr?.name ?? ref} forgotten; its files stay in ${sr?.path || 'its directory'}`);
}

async function destroySr(
  ctx: CommandContext,
  ref: string,
  o: { destroyVdis?: boolean; etag?: string; wait: boolean },
): Promise<void> {
  const cloud = ctx.cloud();
  const { sr } = await cloud.srs.call.getSr({ id: ref });
  const response = await cloud.srs.call.destroySr({
    id: sr?.id ?? ref,
    requestId: `cli-${randomUUID()}`,
    etag: o.etag ?? '',
    destroyVdis: Boolean(o.destroyVdis),
  });
  const operation = await settle(cloud, ctx.out, response, { wait: o.wait });
  if (!operation) return;
  if (ctx.out.json) return ctx.out.printJson({ operation });
  ctx.out.line(`sr ${sr?.name ?? ref} destroyed`);
}
