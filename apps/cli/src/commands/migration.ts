import { Command } from 'commander';
import { randomUUID } from 'node:crypto';
import { commonV1, migrationV1 } from '@flotilla/contracts';
import { errorDetailsOf } from '@flotilla/platform';
import { bandwidthArg, collectKeyValues, intInRange } from '../args';
import type { Cloud } from '../cloud';
import { action, type CommandContext } from '../context';
import { CliError, ExitCode, grpcCodeName } from '../errors';
import { follow } from '../follow';
import { age, labels, percent, timestamp, word } from '../format';
import {
  duration,
  findingRows,
  isMigrationDone,
  migrationFailure,
  migrationPhase,
  migrationState,
  phaseRows,
  progressLine,
  rate,
  route,
  statsPairs,
} from '../migration-format';
import type { Output } from '../output';
import { printStarted } from '../operations';
import { findHostId, findVdi, findVm, hostNames, vmNames } from '../resolve';
import { formatBytes } from '../size';
import { srId } from './vdi-common';
import { listWith, noteMore, withListOptions, type ListOptions } from './list-options';

type Migration = migrationV1.Migration;
const { MigrationMode, MigrationState } = migrationV1;

export interface MigrateOptions {
  to?: string;
  dryRun?: boolean;
  offline?: boolean;
  withStorage?: boolean;
  map?: Record<string, string>;
  downtimeLimit?: number;
  bandwidth?: number;
  autoConverge?: boolean;
  postCopy?: boolean;
  postCopyAfter?: number;
  timeout?: number;
  name?: string;
  requestId?: string;
  wait: boolean;
}

/** `flotilla vm migrate`: added to the vm command by vm.ts. */
export function addMigrateCommand(vm: Command): void {
  vm.command('migrate')
    .description(
      'move a VM to another host of the pool: live (it keeps running; memory is copied while it runs), or ' +
        'offline; with its disks when they are on a local SR. Follows the migration and prints its statistics',
    )
    .argument('<vm>', 'VM id or name')
    .option('--to <host>', 'destination host, id or name (default: the scheduler picks one)')
    .option(
      '--dry-run',
      'only check: print every reason the VM cannot move now, warnings and estimates (exit 3, or 7 for capacity, when it cannot)',
    )
    .option(
      '--offline',
      'shut the VM down, move it and start it there (the whole move is downtime); not built yet: the server answers UNIMPLEMENTED',
    )
    .option('--with-storage', 'also copy disks that are on a local (file) SR of the source host')
    .option(
      '--map <vdi=sr>',
      'with --with-storage: copy this disk (VDI id or name) to this SR (id or name); repeatable. Default: the destination SR with most free space',
      collectKeyValues,
    )
    .option(
      '--downtime-limit <ms>',
      'longest the VM may be paused at the switch, 1..60000 ms (server default 300)',
      intInRange(1, 60_000),
    )
    .option(
      '--bandwidth <size/s>',
      "cap on migration traffic, e.g. 1G/s or 500M/s (default: the pool's)",
      bandwidthArg,
    )
    .option(
      '--auto-converge',
      'slow the guest down, more each round, when it dirties memory faster than it can be sent (refused on TCG hosts: QEMU loses guest writes there)',
    )
    .option(
      '--post-copy',
      'switch to post-copy when pre-copy does not converge (live only; the VM is lost if the source host fails meanwhile; refused on TCG hosts: QEMU corrupts some guests there)',
    )
    .option(
      '--post-copy-after <rounds>',
      'with --post-copy: pre-copy rounds before switching, 1..100 (server default 3)',
      intInRange(1, 100),
    )
    .option(
      '--timeout <s>',
      'give up and roll back if the switch is not reached in time, 1..86400 s (server default 3600)',
      intInRange(1, 86_400),
    )
    .option('--name <name>', 'a name for the migration, for people')
    .option(
      '--request-id <id>',
      'idempotency key: repeating the command with the same id returns the first migration',
    )
    .option(
      '--no-wait',
      'do not follow: print the operation id and return (follow with `flotilla migration show <id>` or `flotilla op wait <id>`)',
    )
    .action(action(migrateVm));
}

export function migrationCommand(): Command {
  const migration = new Command('migration').description(
    'VM migrations between hosts: list, inspect, cancel',
  );
  withListOptions(
    migration
      .command('list')
      .description('list migrations, newest first')
      .option('--vm <vm>', 'only the migrations of this VM (id or name)'),
    'fields: vm_id, state (e.g. RUNNING), phase, mode, source_host_id, destination_host_id, evacuation_id, label.<key>',
  ).action(action(listMigrations));
  migration
    .command('show')
    .description('show a migration: its phases with their timings, statistics and error')
    .argument('<id>', 'migration id')
    .action(action(showMigration));
  migration
    .command('cancel')
    .description(
      'cancel a migration before its point of no return: it rolls back and the VM stays on its source host',
    )
    .argument('<id>', 'migration id')
    .option('--no-wait', 'do not wait for the rollback to finish')
    .action(action(cancelMigration));
  return migration;
}

/** Flag combinations the server would refuse anyway, refused before connecting. */
export function checkMigrateOptions(o: MigrateOptions): void {
  if (o.offline && o.postCopy)
    throw new CliError('--post-copy applies to live migrations, not --offline', ExitCode.Usage);
  if (o.postCopyAfter !== undefined && !o.postCopy)
    throw new CliError('--post-copy-after goes with --post-copy', ExitCode.Usage);
  if (o.map && !o.withStorage)
    throw new CliError('--map says where copied disks go: add --with-storage', ExitCode.Usage);
  if (o.dryRun && (o.name || o.requestId))
    throw new CliError('--dry-run starts nothing: leave out --name and --request-id', ExitCode.Usage);
}

/** The request's MigrationOptions: 0 leaves a value to the server's default. */
export function migrationOptions(o: MigrateOptions): migrationV1.MigrationOptions {
  return {
    downtimeLimitMs: o.downtimeLimit ?? 0,
    bandwidthBytesPerSec: o.bandwidth ?? 0,
    autoConverge: Boolean(o.autoConverge),
    postCopy: Boolean(o.postCopy),
    postCopyAfterRounds: o.postCopyAfter ?? 0,
    timeoutMs: o.timeout ? o.timeout * 1000 : 0,
    shutdownTimeoutMs: 0,
  };
}

async function migrateVm(ctx: CommandContext, ref: string, o: MigrateOptions): Promise<void> {
  checkMigrateOptions(o);
  const cloud = ctx.cloud();
  const vm = await findVm(cloud, ref);
  const vdiMap: Record<string, string> = {};
  for (const [vdi, sr] of Object.entries(o.map ?? {}))
    vdiMap[(await findVdi(cloud, vdi)).id] = await srId(cloud, sr);
  const spec: migrationV1.MigrationSpec = {
    vmId: vm.id,
    destinationHostId: o.to ? await findHostId(cloud, o.to) : '',
    mode: o.offline ? MigrationMode.MIGRATION_MODE_OFFLINE : MigrationMode.MIGRATION_MODE_LIVE,
    withStorage: Boolean(o.withStorage),
    vdiMap,
    options: migrationOptions(o),
  };
  if (o.dryRun) return preflight(ctx, cloud, vm.name, spec);

  let response: migrationV1.CreateMigrationResponse;
  try {
    response = await cloud.migrations.call.createMigration({
      requestId: o.requestId ?? `cli-${randomUUID()}`,
      spec,
      name: o.name ?? '',
      labels: {},
    });
  } catch (e) {
    printBlockerDetails(ctx.out, e);
    throw e;
  }
  const { migration, operation } = response;
  if (!migration || !operation) throw new CliError('the server answered without a migration', ExitCode.Other);
  if (!o.wait) {
    printStarted(ctx.out, response, operation);
    if (ctx.out.interactive) ctx.out.note(`migration id: ${migration.id}`);
    return;
  }
  const hosts = await hostNames(cloud);
  const done = await followMigration(cloud, ctx.out, migration, `${vm.name} ${route(migration, hosts)}:`);
  const after = await hostNames(cloud).catch(() => hosts);
  printOutcome(ctx.out, done, vm.name, after, operation);
}

async function preflight(
  ctx: CommandContext,
  cloud: Cloud,
  vmName: string,
  spec: migrationV1.MigrationSpec,
): Promise<void> {
  const { check } = await cloud.migrations.call.preflightMigration({ spec });
  if (!check) throw new CliError('the server answered without a preflight check', ExitCode.Other);
  if (ctx.out.json) ctx.out.printJson({ check });
  else {
    const hosts = await hostNames(cloud);
    const to = hosts.get(check.destinationHostId) ?? check.destinationHostId;
    ctx.out.line(
      check.migratable
        ? `vm ${vmName} can migrate${to ? ` to ${to}` : ''} now`
        : `vm ${vmName} cannot migrate${to ? ` to ${to}` : ''} now: ${check.blockers.length} blocker${check.blockers.length === 1 ? '' : 's'}`,
    );
    if (check.blockers.length) {
      ctx.out.line('');
      ctx.out.table(['BLOCKER', 'RESOURCE', 'MESSAGE'], findingRows(check.blockers, 'BLOCKER_KIND_'));
    }
    if (check.warnings.length) {
      ctx.out.line('');
      ctx.out.table(['WARNING', 'RESOURCE', 'MESSAGE'], findingRows(check.warnings, 'WARNING_KIND_'));
    }
    ctx.out.line('');
    ctx.out.details([
      ['destination', to],
      ['memory', check.memoryBytes ? formatBytes(check.memoryBytes) : ''],
      ['storage to copy', check.storageBytesToCopy ? formatBytes(check.storageBytesToCopy) : ''],
      ['disks to copy', labels(check.vdiMap)],
      ['estimated total time', check.estimatedTotalTimeMs ? duration(check.estimatedTotalTimeMs) : ''],
      ['estimated downtime', check.estimatedDowntimeMs ? duration(check.estimatedDowntimeMs) : ''],
      ['checked', timestamp(check.checkedAt)],
    ]);
  }
  if (!check.migratable)
    throw new CliError(`vm ${vmName} cannot migrate now`, preflightExitCode(check.blockers));
}

const capacityBlockers = new Set<string>([
  migrationV1.BlockerKind.BLOCKER_KIND_NO_DESTINATION,
  migrationV1.BlockerKind.BLOCKER_KIND_INSUFFICIENT_MEMORY,
  migrationV1.BlockerKind.BLOCKER_KIND_INSUFFICIENT_CPU,
  migrationV1.BlockerKind.BLOCKER_KIND_INSUFFICIENT_STORAGE,
]);

/** The exit code CreateMigration's refusal would give: 7 when only capacity blocks it, else 3. */
export function preflightExitCode(blockers: Array<Pick<migrationV1.Blocker, 'kind'>>): ExitCode {
  return blockers.length && blockers.every((b) => capacityBlockers.has(b.kind))
    ? ExitCode.Exhausted
    : ExitCode.Conflict;
}

/** A refusal with one ErrorDetail per blocker: each on its own line (stderr) before the one-line error. */
export function printBlockerDetails(out: Output, e: unknown): void {
  const details = errorDetailsOf(e);
  if (!details.length || out.json) return;
  for (const d of details) {
    const about = [d.metadata.resource_kind, d.metadata.resource_id || d.metadata.vm_id]
      .filter(Boolean)
      .join(' ');
    out.note(`  ${word(d.reason, 'BLOCKER_KIND_')}${about ? ` (${about})` : ''}: ${d.description}`);
  }
}

/** Follows a migration until it ends; Ctrl-C stops following, not the migration. */
export function followMigration(
  cloud: Cloud,
  out: Output,
  first: Migration,
  label: string,
): Promise<Migration> {
  return follow<Migration>(cloud, out, {
    first,
    read: async (signal) =>
      (await cloud.migrations.call.getMigration({ id: first.id }, { signal })).migration ?? first,
    done: isMigrationDone,
    operationId: (m) => m.operationId,
    line: (m) => `${label} ${progressLine(m)}`,
    detached: (m) =>
      `stopped following; migration ${m.id} goes on (follow it with \`flotilla migration show ${m.id}\`, ` +
      `cancel it with \`flotilla migration cancel ${m.id}\`)`,
  });
}

/** The end of a followed migration: statistics when it succeeded, else its error and exit 6. */
function printOutcome(
  out: Output,
  m: Migration,
  vmName: string,
  hosts: Map<string, string>,
  operation?: commonV1.Operation,
): void {
  if (out.json) out.printJson({ migration: m, ...(operation ? { operationId: operation.id } : {}) });
  if (m.state !== MigrationState.MIGRATION_STATE_SUCCEEDED)
    throw new CliError(migrationFailure(m, vmName, hosts), ExitCode.OperationFailed);
  if (out.json) return;
  out.line(`vm ${vmName} migrated: ${route(m, hosts)} (migration ${m.id})`);
  out.details(statsPairs(m.stats));
}

async function listMigrations(ctx: CommandContext, o: ListOptions & { vm?: string }): Promise<void> {
  const cloud = ctx.cloud();
  const vmFilter = o.vm ? `vm_id=${(await findVm(cloud, o.vm)).id}` : '';
  const filter = [vmFilter, o.filter].filter(Boolean).join(',');
  const page = await listWith({ ...o, filter }, async (p) => {
    const res = await cloud.migrations.call.listMigrations({ page: p });
    return { items: res.migrations, nextPageToken: res.nextPageToken };
  });
  if (ctx.out.json) return ctx.out.printJson({ migrations: page.items, nextPageToken: page.nextPageToken });
  const [vms, hosts] = page.items.length
    ? await Promise.all([vmNames(cloud), hostNames(cloud)])
    : [new Map<string, string>(), new Map<string, string>()];
  ctx.out.table(
    ['ID', 'VM', 'ROUTE', 'MODE', 'STATE', 'PHASE', 'PROGRESS', 'DOWNTIME', 'AGE'],
    page.items.map((m) => [
      m.id,
      vms.get(m.vmId) ?? m.vmId,
      route(m, hosts),
      word(m.mode, 'MIGRATION_MODE_') + (m.withStorage ? '+storage' : ''),
      migrationState(m),
      migrationPhase(m),
      percent(m.progress),
      m.stats?.downtimeMs ? duration(m.stats.downtimeMs) : '',
      age(m.createdAt),
    ]),
    'no migrations (start one with `flotilla vm migrate <vm>`)',
  );
  noteMore(ctx.out, page);
}

async function getMigration(cloud: Cloud, id: string): Promise<Migration> {
  const { migration } = await cloud.migrations.call.getMigration({ id });
  if (!migration) throw new CliError(`no migration ${id}`, ExitCode.NotFound);
  return migration;
}

async function showMigration(ctx: CommandContext, id: string): Promise<void> {
  const cloud = ctx.cloud();
  const m = await getMigration(cloud, id);
  if (ctx.out.json) return ctx.out.printJson({ migration: m });
  const [vms, hosts] = await Promise.all([vmNames(cloud), hostNames(cloud)]);
  printMigration(ctx.out, m, vms, hosts);
}

export function printMigration(
  out: Output,
  m: Migration,
  vms: Map<string, string>,
  hosts: Map<string, string>,
): void {
  const opt = m.options;
  const err = m.error;
  out.details([
    ['id', m.id],
    ['name', m.name],
    ['vm', `${vms.get(m.vmId) ?? ''} ${m.vmId}`.trim()],
    ['route', route(m, hosts)],
    ['mode', word(m.mode, 'MIGRATION_MODE_') + (m.withStorage ? ', with storage' : '')],
    ['disks copied', labels(m.vdiMap)],
    ['state', migrationState(m) + (m.stateReason ? ` (${m.stateReason})` : '')],
    ['phase', migrationPhase(m)],
    ['progress', percent(m.progress)],
    [
      'point of no return',
      m.pointOfNoReturnPassed ? `passed at ${timestamp(m.pointOfNoReturnAt)}` : 'not passed',
    ],
    [
      'options',
      [
        opt?.downtimeLimitMs ? `downtime limit ${opt.downtimeLimitMs} ms` : '',
        opt?.bandwidthBytesPerSec ? `bandwidth ${rate(opt.bandwidthBytesPerSec)}` : '',
        opt?.autoConverge ? 'auto-converge' : '',
        opt?.postCopy ? `post-copy after ${opt.postCopyAfterRounds || 3} rounds` : '',
        opt?.timeoutMs ? `timeout ${duration(opt.timeoutMs)}` : '',
      ]
        .filter(Boolean)
        .join(', '),
    ],
    ['error', err?.message ? `${err.message}${err.code ? ` [${grpcCodeName(err.code)}]` : ''}` : ''],
    ...(err?.details ?? []).map((d): [string, string] => [
      '  detail',
      [word(d.reason, 'BLOCKER_KIND_'), d.description, labels(d.metadata)].filter(Boolean).join(' · '),
    ]),
    ['operation', m.operationId],
    ['evacuation', m.evacuationId],
    ['labels', labels(m.labels)],
    ['created', timestamp(m.createdAt)],
    ['started', timestamp(m.startedAt)],
    ['finished', timestamp(m.finishedAt)],
  ]);
  if (m.phases.length) {
    out.line('');
    out.table(['PHASE', 'STARTED', 'DURATION', 'DETAIL'], phaseRows(m.phases));
  }
  const stats = statsPairs(m.stats);
  if (stats.some(([, v]) => v !== '' && v !== undefined)) {
    out.line('');
    out.details(stats);
  }
}

async function cancelMigration(ctx: CommandContext, id: string, o: { wait: boolean }): Promise<void> {
  const cloud = ctx.cloud();
  const { migration } = await cloud.migrations.call.cancelMigration({ id });
  if (!migration) throw new CliError(`no migration ${id}`, ExitCode.NotFound);
  const hosts = await hostNames(cloud);
  const vmName = (await vmNames(cloud)).get(migration.vmId) ?? migration.vmId;
  const done = o.wait ? await followMigration(cloud, ctx.out, migration, `cancelling ${id}:`) : migration;
  if (ctx.out.json) ctx.out.printJson({ migration: done });
  if (done.state === MigrationState.MIGRATION_STATE_SUCCEEDED)
    throw new CliError(
      `migration ${id} passed its point of no return before the cancel: vm ${vmName} now runs on ${hosts.get(done.destinationHostId) ?? done.destinationHostId}`,
      ExitCode.Conflict,
    );
  if (done.state === MigrationState.MIGRATION_STATE_FAILED)
    throw new CliError(migrationFailure(done, vmName, hosts), ExitCode.OperationFailed);
  if (ctx.out.json) return;
  ctx.out.line(
    isMigrationDone(done)
      ? `migration ${id} cancelled; vm ${vmName} stays on ${hosts.get(done.sourceHostId) ?? done.sourceHostId}`
      : `migration ${id} is ${migrationState(done)}: it rolls back and vm ${vmName} stays on ${hosts.get(done.sourceHostId) ?? done.sourceHostId}`,
  );
}
