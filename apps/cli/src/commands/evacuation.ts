import { Command, Option } from 'commander';
import { randomUUID } from 'node:crypto';
import { migrationV1 } from '@flotilla/contracts';
import { intInRange } from '../args';
import type { Cloud } from '../cloud';
import { action, type CommandContext } from '../context';
import { CliError, ExitCode, grpcCodeName } from '../errors';
import { follow } from '../follow';
import { age, labels, percent, timestamp, word } from '../format';
import { evacuationProgress, evacuationRows, evacuationState, isEvacuationDone } from '../migration-format';
import type { Output } from '../output';
import { printStarted } from '../operations';
import { findHostId, hostNames, vmNames } from '../resolve';
import { listWith, noteMore, withListOptions, type ListOptions } from './list-options';
import { printBlockerDetails } from './migration';

type Evacuation = migrationV1.Evacuation;
const { EvacuationBlockedPolicy, EvacuationState } = migrationV1;

const onBlockedPolicies = {
  fail: EvacuationBlockedPolicy.EVACUATION_BLOCKED_POLICY_FAIL,
  skip: EvacuationBlockedPolicy.EVACUATION_BLOCKED_POLICY_SKIP,
  shutdown: EvacuationBlockedPolicy.EVACUATION_BLOCKED_POLICY_SHUTDOWN,
} as const;

interface EvacuateOptions {
  maxParallel?: number;
  withStorage?: boolean;
  onBlocked: keyof typeof onBlockedPolicies;
  maintenance?: boolean;
  name?: string;
  requestId?: string;
  wait: boolean;
}

/** `flotilla host evacuate`: added to the host command by pool.ts. */
export function addEvacuateCommand(host: Command): void {
  host
    .command('evacuate')
    .description(
      'move every running VM off a host (live migrations, destinations chosen by the scheduler), following ' +
        'them and printing per VM what happened; the host is disabled first and stays so',
    )
    .argument('<host>', 'host id or name')
    .option('--max-parallel <n>', 'migrations at once, 1..16 (server default 2)', intInRange(1, 16))
    .option('--with-storage', 'also move VMs whose disks are on a local SR of the host, with their disks')
    .addOption(
      new Option(
        '--on-blocked <policy>',
        'VMs that cannot move: fail (refuse the whole evacuation), skip (leave them running here), shutdown (shut them down)',
      )
        .choices(Object.keys(onBlockedPolicies))
        .default('fail'),
    )
    .option(
      '--maintenance',
      'put the host in maintenance once it is empty (the scheduler keeps away until `host enable`)',
    )
    .option('--name <name>', 'a name for the evacuation, for people')
    .option(
      '--request-id <id>',
      'idempotency key: repeating the command with the same id returns the first evacuation',
    )
    .option(
      '--no-wait',
      'do not follow: print the operation id and return (follow with `flotilla evacuation show <id>` or `flotilla op wait <id>`)',
    )
    .action(action(evacuateHost));
}

export function evacuationCommand(): Command {
  const evacuation = new Command('evacuation').description(
    'host evacuations (pool-operator and above): list, inspect, cancel',
  );
  withListOptions(
    evacuation.command('list').description('list evacuations, newest first'),
    'fields: host_id, state (e.g. RUNNING), label.<key>',
  ).action(action(listEvacuations));
  evacuation
    .command('show')
    .description('show an evacuation and what happened to each VM')
    .argument('<id>', 'evacuation id')
    .action(action(showEvacuation));
  evacuation
    .command('cancel')
    .description(
      'stop an evacuation: no new migration starts, running ones roll back unless past their point of no return; the host stays disabled',
    )
    .argument('<id>', 'evacuation id')
    .option('--no-wait', 'do not wait for the running migrations to end')
    .action(action(cancelEvacuation));
  return evacuation;
}

async function evacuateHost(ctx: CommandContext, ref: string, o: EvacuateOptions): Promise<void> {
  const cloud = ctx.cloud();
  const hostId = await findHostId(cloud, ref);
  let response: migrationV1.EvacuateHostResponse;
  try {
    response = await cloud.evacuations.call.evacuateHost({
      requestId: o.requestId ?? `cli-${randomUUID()}`,
      hostId,
      maxParallel: o.maxParallel ?? 0,
      onBlocked: onBlockedPolicies[o.onBlocked],
      withStorage: Boolean(o.withStorage),
      enterMaintenance: Boolean(o.maintenance),
      migrationOptions: undefined,
      name: o.name ?? '',
      labels: {},
    });
  } catch (e) {
    printBlockerDetails(ctx.out, e);
    throw e;
  }
  const { evacuation, operation } = response;
  if (!evacuation || !operation)
    throw new CliError('the server answered without an evacuation', ExitCode.Other);
  if (!o.wait) {
    printStarted(ctx.out, response, operation);
    if (ctx.out.interactive) ctx.out.note(`evacuation id: ${evacuation.id}`);
    return;
  }
  const done = await followEvacuation(cloud, ctx.out, evacuation, `evacuating ${ref}:`);
  await printOutcome(ctx, cloud, done, ref);
}

function followEvacuation(cloud: Cloud, out: Output, first: Evacuation, label: string): Promise<Evacuation> {
  return follow<Evacuation>(cloud, out, {
    first,
    read: async (signal) =>
      (await cloud.evacuations.call.getEvacuation({ id: first.id }, { signal })).evacuation ?? first,
    done: isEvacuationDone,
    operationId: (e) => e.operationId,
    line: (e) => `${label} ${evacuationProgress(e)}`,
    detached: (e) =>
      `stopped following; evacuation ${e.id} goes on (follow it with \`flotilla evacuation show ${e.id}\`, ` +
      `cancel it with \`flotilla evacuation cancel ${e.id}\`)`,
  });
}

/** The per-VM table, then exit 6 unless every VM left the host. */
async function printOutcome(
  ctx: CommandContext,
  cloud: Cloud,
  e: Evacuation,
  hostRef: string,
): Promise<void> {
  if (ctx.out.json) ctx.out.printJson({ evacuation: e });
  else await printVmTable(ctx.out, cloud, e);
  if (e.state === EvacuationState.EVACUATION_STATE_SUCCEEDED) {
    if (!ctx.out.json)
      ctx.out.line(
        `host ${hostRef} evacuated${e.enterMaintenance ? ' and in maintenance' : ''} (evacuation ${e.id})`,
      );
    return;
  }
  const left = e.vms.filter(
    (v) =>
      v.outcome !== migrationV1.EvacuationVmOutcome.EVACUATION_VM_OUTCOME_MIGRATED &&
      v.outcome !== migrationV1.EvacuationVmOutcome.EVACUATION_VM_OUTCOME_SHUT_DOWN,
  ).length;
  const why = e.error?.message || e.stateReason;
  throw new CliError(
    `evacuation ${e.id} of host ${hostRef} ended ${evacuationState(e)}${why ? `: ${why}` : ''}` +
      `${e.error?.code ? ` [${grpcCodeName(e.error.code)}]` : ''}; ${left} VM${left === 1 ? '' : 's'} still on the host`,
    ExitCode.OperationFailed,
  );
}

async function printVmTable(out: Output, cloud: Cloud, e: Evacuation): Promise<void> {
  const [vms, hosts] = await Promise.all([vmNames(cloud), hostNames(cloud)]);
  out.table(
    ['VM', 'OUTCOME', 'DESTINATION', 'MIGRATION', 'REASON'],
    evacuationRows(e, vms, hosts),
    'no VMs were running on the host',
  );
}

async function listEvacuations(ctx: CommandContext, o: ListOptions): Promise<void> {
  const cloud = ctx.cloud();
  const page = await listWith(o, async (p) => {
    const res = await cloud.evacuations.call.listEvacuations({ page: p });
    return { items: res.evacuations, nextPageToken: res.nextPageToken };
  });
  if (ctx.out.json) return ctx.out.printJson({ evacuations: page.items, nextPageToken: page.nextPageToken });
  const hosts = page.items.length ? await hostNames(cloud) : new Map<string, string>();
  ctx.out.table(
    ['ID', 'HOST', 'STATE', 'PROGRESS', 'VMS', 'ON BLOCKED', 'AGE'],
    page.items.map((e) => [
      e.id,
      hosts.get(e.hostId) ?? e.hostId,
      evacuationState(e),
      percent(e.progress),
      e.vms.length,
      word(e.onBlocked, 'EVACUATION_BLOCKED_POLICY_'),
      age(e.createdAt),
    ]),
    'no evacuations (start one with `flotilla host evacuate <host>`)',
  );
  noteMore(ctx.out, page);
}

async function showEvacuation(ctx: CommandContext, id: string): Promise<void> {
  const cloud = ctx.cloud();
  const { evacuation: e } = await cloud.evacuations.call.getEvacuation({ id });
  if (!e) throw new CliError(`no evacuation ${id}`, ExitCode.NotFound);
  if (ctx.out.json) return ctx.out.printJson({ evacuation: e });
  const hosts = await hostNames(cloud);
  ctx.out.details([
    ['id', e.id],
    ['name', e.name],
    ['host', `${hosts.get(e.hostId) ?? ''} ${e.hostId}`.trim()],
    ['state', evacuationState(e) + (e.stateReason ? ` (${e.stateReason})` : '')],
    ['progress', percent(e.progress)],
    ['max parallel', e.maxParallel],
    ['on blocked', word(e.onBlocked, 'EVACUATION_BLOCKED_POLICY_')],
    ['with storage', e.withStorage ? 'yes' : ''],
    ['maintenance after', e.enterMaintenance ? 'yes' : ''],
    ['error', e.error?.message ? `${e.error.message} [${grpcCodeName(e.error.code)}]` : ''],
    ['operation', e.operationId],
    ['labels', labels(e.labels)],
    ['created', timestamp(e.createdAt)],
    ['started', timestamp(e.startedAt)],
    ['finished', timestamp(e.finishedAt)],
  ]);
  ctx.out.line('');
  await printVmTable(ctx.out, cloud, e);
}

async function cancelEvacuation(ctx: CommandContext, id: string, o: { wait: boolean }): Promise<void> {
  const cloud = ctx.cloud();
  const { evacuation } = await cloud.evacuations.call.cancelEvacuation({ id });
  if (!evacuation) throw new CliError(`no evacuation ${id}`, ExitCode.NotFound);
  const done = o.wait ? await followEvacuation(cloud, ctx.out, evacuation, `cancelling ${id}:`) : evacuation;
  if (ctx.out.json) return ctx.out.printJson({ evacuation: done });
  if (isEvacuationDone(done)) await printVmTable(ctx.out, cloud, done);
  ctx.out.line(
    `evacuation ${id} is ${evacuationState(done)}; the host stays disabled (\`flotilla host enable\` lets VMs back)`,
  );
}
