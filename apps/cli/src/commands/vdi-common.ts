import { randomUUID } from 'node:crypto';
import { storageV1 } from '@flotilla/contracts';
import type { Cloud } from '../cloud';
import type { CommandContext } from '../context';
import { CliError, ExitCode } from '../errors';
import { age, labels, timestamp, word } from '../format';
import { settle } from '../operations';
import { findVdi } from '../resolve';
import { formatBytes } from '../size';
import { listWith, noteMore, type ListOptions } from './list-options';

/** What the vdi, snapshot and vbd commands share: names, tables, details, the wait for a disk's operation. */

type Vdi = storageV1.Vdi;

export const requestIdHelp =
  'idempotency key: repeating the command with the same id returns the first result';
export const noWaitHelp =
  'do not wait: print the operation id and return (follow it with `flotilla op wait <id>`)';

export const vdiState = (v: Pick<Vdi, 'state'>): string => word(v.state, 'VDI_STATE_');

/** "snapshot,ro,sharable": what sets the disk apart. */
export function vdiFlags(v: Pick<Vdi, 'isSnapshot' | 'readOnly' | 'sharable' | 'managed'>): string {
  return [
    v.isSnapshot && 'snapshot',
    v.readOnly && !v.isSnapshot && 'ro',
    v.sharable && 'sharable',
    v.managed === false && 'hidden',
  ]
    .filter(Boolean)
    .join(',');
}

/** SR id → name, for tables; empty when SRs cannot be read. */
export async function srNames(cloud: Cloud): Promise<Map<string, string>> {
  try {
    const { srs } = await cloud.srs.call.listSrs({ page: { pageSize: 1000, pageToken: '', filter: '' } });
    return new Map(srs.map((s) => [s.id, s.name]));
  } catch {
    return new Map();
  }
}

export async function srId(cloud: Cloud, ref: string): Promise<string> {
  const { sr } = await cloud.srs.call.getSr({ id: ref });
  if (!sr) throw new CliError(`no SR ${ref}`, ExitCode.NotFound);
  return sr.id;
}

/** Waits for a VDI-making operation and shows the VDI it made (result vdi_id, else the one known). */
export async function finish(
  ctx: CommandContext,
  cloud: Cloud,
  response: { operation?: storageV1.CreateVdiResponse['operation'] },
  knownId: string | undefined,
  wait: boolean,
): Promise<void> {
  const operation = await settle(cloud, ctx.out, response, { wait });
  if (!operation) return;
  const id = operation.result?.vdi_id || knownId;
  const vdi = id ? (await cloud.vdis.call.getVdi({ id })).vdi : undefined;
  if (ctx.out.json) return ctx.out.printJson({ vdi, operation });
  if (vdi) await printVdi(ctx, cloud, vdi);
}

/** The filter terms of `vdi list`/`snapshot list` and the user's own, as one filter. */
export function joinFilter(...terms: Array<string | undefined>): string {
  return terms.filter(Boolean).join(',');
}

/** `vdi list` and `snapshot list`: the VDIs matching `filter` (with the paging flags), as JSON or a table. */
export async function listVdiPage(
  ctx: CommandContext,
  cloud: Cloud,
  o: ListOptions & { filter: string },
  empty: string,
): Promise<void> {
  const page = await listWith(o, async (p) => {
    const res = await cloud.vdis.call.listVdis({ page: p });
    return { items: res.vdis, nextPageToken: res.nextPageToken };
  });
  if (ctx.out.json) return ctx.out.printJson({ vdis: page.items, nextPageToken: page.nextPageToken });
  await vdiTable(ctx, cloud, page.items, empty);
  noteMore(ctx.out, page);
}

export async function vdiTable(ctx: CommandContext, cloud: Cloud, vdis: Vdi[], empty: string): Promise<void> {
  const srs = vdis.length ? await srNames(cloud) : new Map<string, string>();
  ctx.out.table(
    ['NAME', 'ID', 'SR', 'STATE', 'SIZE', 'PHYSICAL', 'FLAGS', 'VBDS', 'AGE'],
    vdis.map((v) => [
      v.name,
      v.id,
      srs.get(v.srId) ?? v.srId,
      vdiState(v) + (v.currentOperationId ? '*' : ''),
      formatBytes(v.virtualSizeBytes),
      formatBytes(v.physicalUtilisationBytes),
      vdiFlags(v),
      (v.vbdIds ?? []).length || '',
      age(v.createdAt),
    ]),
    empty,
  );
  if (vdis.some((v) => v.currentOperationId)) ctx.out.note('* an operation is in progress');
}

export async function printVdi(ctx: CommandContext, cloud: Cloud, v: Vdi): Promise<void> {
  const srs = await srNames(cloud);
  ctx.out.details([
    ['name', v.name],
    ['id', v.id],
    ['sr', srs.get(v.srId) ? `${srs.get(v.srId)} (${v.srId})` : v.srId],
    ['state', vdiState(v) + (v.stateReason ? ` (${v.stateReason})` : '')],
    ['virtual size', formatBytes(v.virtualSizeBytes)],
    ['physical use', formatBytes(v.physicalUtilisationBytes)],
    ['format', word(v.format, 'DISK_FORMAT_')],
    ['flags', vdiFlags(v)],
    ['parent', v.parentId],
    ['snapshot of', v.snapshotOf],
    ['snapshot time', timestamp(v.snapshotTime)],
    ['snapshots', (v.snapshotIds ?? []).join(', ')],
    ['image', v.imageId],
    ['vbds', (v.vbdIds ?? []).join(', ')],
    ['tenant', v.tenantId],
    ['description', v.description],
    ['labels', labels(v.labels)],
    ['allowed operations', (v.allowedOperations ?? []).map((op) => word(op, 'VDI_OPERATION_')).join(', ')],
    ['current operation', v.currentOperationId],
    ['created', timestamp(v.createdAt)],
    ['updated', timestamp(v.updatedAt)],
    ['etag', v.etag],
  ]);
}

/** `vdi destroy` and `snapshot delete` (`what` 'snapshot': refuses a disk that is not one). */
export async function destroyVdi(
  ctx: CommandContext,
  ref: string,
  o: { etag?: string; wait: boolean },
  what = 'VDI',
): Promise<void> {
  const cloud = ctx.cloud();
  const vdi = await findVdi(cloud, ref, what);
  if (what === 'snapshot' && !vdi.isSnapshot)
    throw new CliError(`${vdi.name} is a disk, not a snapshot: use \`flotilla vdi destroy\``, ExitCode.Usage);
  const response = await cloud.vdis.call.destroyVdi({
    id: vdi.id,
    requestId: `cli-${randomUUID()}`,
    etag: o.etag ?? '',
  });
  const operation = await settle(cloud, ctx.out, response, { wait: o.wait });
  if (!operation) return;
  if (ctx.out.json) return ctx.out.printJson({ operation });
  ctx.out.line(`${vdi.isSnapshot ? 'snapshot' : 'vdi'} ${vdi.name} destroyed`);
}

export async function cloneVdi(
  ctx: CommandContext,
  ref: string,
  o: { name?: string; sharable?: boolean; label?: Record<string, string>; wait: boolean },
  what = 'VDI',
): Promise<void> {
  const cloud = ctx.cloud();
  const vdi = await findVdi(cloud, ref, what);
  if (what === 'snapshot' && !vdi.isSnapshot)
    throw new CliError(`${vdi.name} is not a snapshot: use \`flotilla vdi clone\``, ExitCode.Usage);
  const response = await cloud.vdis.call.cloneVdi({
    id: vdi.id,
    requestId: `cli-${randomUUID()}`,
    name: o.name ?? '',
    labels: o.label ?? {},
    sharable: Boolean(o.sharable),
  });
  await finish(ctx, cloud, response, response.vdi?.id, o.wait);
}
