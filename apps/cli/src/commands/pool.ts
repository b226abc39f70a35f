import { Command } from 'commander';
import { computeV1 } from '@flotilla/contracts';
import { action, type CommandContext } from '../context';
import { age, labels, mebibytes, timestamp, word } from '../format';
import { addEvacuateCommand } from './evacuation';
import { listWith, noteMore, withListOptions, type ListOptions } from './list-options';

const hostState = (h: Pick<computeV1.Host, 'state'>): string => word(h.state, 'HOST_STATE_');

export function hostCommand(): Command {
  const host = new Command('host').description("the pool's hypervisor hosts (pool-operator and above)");
  withListOptions(
    host.command('list').description('list hosts with their state and capacity'),
    'fields: name, state (e.g. ENABLED), driver, label.<key>',
  ).action(action(listHosts));
  host
    .command('show')
    .description('show one host')
    .argument('<host>', 'host id or name')
    .action(action(showHost));
  host
    .command('enable')
    .description('let the scheduler place VMs on a disabled host, or one in maintenance, again')
    .argument('<host>', 'host id or name')
    .action(action(enableHost));
  host
    .command('disable')
    .description('keep the scheduler away from a host; its VMs keep running (see also `host maintenance`)')
    .argument('<host>', 'host id or name')
    .option('--reason <text>', 'why, shown as the state reason')
    .action(
      action((ctx: CommandContext, ref: string, o: { reason?: string }) => disableHost(ctx, ref, o, false)),
    );
  host
    .command('maintenance')
    .description(
      'put a host in maintenance: the scheduler keeps away (new VMs, starts, migrations to it) until `host enable`; ' +
        'its VMs keep running (`host evacuate` moves them)',
    )
    .argument('<host>', 'host id or name')
    .option('--reason <text>', 'why, shown as the state reason (default "maintenance")')
    .action(
      action((ctx: CommandContext, ref: string, o: { reason?: string }) => disableHost(ctx, ref, o, true)),
    );
  addEvacuateCommand(host);
  return host;
}

async function enableHost(ctx: CommandContext, ref: string): Promise<void> {
  const { host } = await ctx.cloud().hosts.call.enableHost({ id: ref });
  if (ctx.out.json) return ctx.out.printJson({ host });
  if (host) ctx.out.line(`host ${host.name} is ${hostState(host)}`);
}

async function disableHost(
  ctx: CommandContext,
  ref: string,
  o: { reason?: string },
  maintenance: boolean,
): Promise<void> {
  const { host } = await ctx.cloud().hosts.call.disableHost({ id: ref, maintenance, reason: o.reason ?? '' });
  if (ctx.out.json) return ctx.out.printJson({ host });
  if (!host) return;
  ctx.out.line(`host ${host.name} is ${hostState(host)}${host.stateReason ? ` (${host.stateReason})` : ''}`);
  if (host.vmCount && ctx.out.interactive)
    ctx.out.note(
      `its ${host.vmCount} VM${host.vmCount === 1 ? '' : 's'} keep running: \`flotilla host evacuate ${host.name}\` moves them`,
    );
}

export function flavorCommand(): Command {
  const flavor = new Command('flavor').description('named VM sizes');
  withListOptions(
    flavor.command('list').description('list flavors'),
    'terms as the server accepts them',
  ).action(action(listFlavors));
  return flavor;
}

async function listHosts(ctx: CommandContext, o: ListOptions): Promise<void> {
  const cloud = ctx.cloud();
  const page = await listWith(o, async (p) => {
    const res = await cloud.hosts.call.listHosts({ page: p });
    return { items: res.hosts, nextPageToken: res.nextPageToken };
  });
  if (ctx.out.json) return ctx.out.printJson({ hosts: page.items, nextPageToken: page.nextPageToken });
  ctx.out.table(
    ['NAME', 'ID', 'STATE', 'DRIVER', 'VCPUS USED', 'MEMORY USED', 'VMS', 'HEARTBEAT', 'ADDRESS'],
    page.items.map((h) => [
      h.name,
      h.id,
      hostState(h),
      // accelerator reads "kvm", "tcg" or "sim", then why the agent chose it (shown by `host show`).
      [h.driver, h.accelerator.split(/\s/)[0]].filter(Boolean).join('/'),
      `${h.vcpusAllocated}/${Math.floor(h.cpus * (h.cpuOvercommitRatio || 1))}`,
      `${mebibytes(h.memoryMibAllocated)}/${mebibytes(Math.floor(h.memoryMib * (h.memoryOvercommitRatio || 1)))}`,
      h.vmCount,
      age(h.lastHeartbeatAt) ? `${age(h.lastHeartbeatAt)} ago` : '',
      h.address,
    ]),
    "no hosts registered (host agents register themselves with the pool's compute service)",
  );
  noteMore(ctx.out, page);
}

async function showHost(ctx: CommandContext, ref: string): Promise<void> {
  const { host } = await ctx.cloud().hosts.call.getHost({ id: ref });
  if (ctx.out.json) return ctx.out.printJson({ host });
  if (!host) return;
  ctx.out.details([
    ['name', host.name],
    ['id', host.id],
    ['pool', host.pool],
    ['state', hostState(host) + (host.stateReason ? ` (${host.stateReason})` : '')],
    ['address', host.address],
    ['driver', host.driver],
    ['accelerator', host.accelerator],
    // What running VMs keep: a live migration needs a host giving the same (flags listed by --json).
    [
      'guest cpu',
      `${host.cpuModel || 'not reported'}${host.cpuFlags.length ? ` (${host.cpuFlags.length} flags)` : ''}`,
    ],
    ['cpus', `${host.cpus} (overcommit ${host.cpuOvercommitRatio}x, ${host.vcpusAllocated} vCPUs allocated)`],
    [
      'memory',
      `${mebibytes(host.memoryMib)} (overcommit ${host.memoryOvercommitRatio}x, ${mebibytes(host.memoryMibAllocated)} allocated)`,
    ],
    ['vms', host.vmCount],
    ['labels', labels(host.labels)],
    ['last heartbeat', timestamp(host.lastHeartbeatAt)],
    ['epoch', host.epoch],
    ['created', timestamp(host.createdAt)],
    ['updated', timestamp(host.updatedAt)],
  ]);
}

async function listFlavors(ctx: CommandContext, o: ListOptions): Promise<void> {
  const cloud = ctx.cloud();
  const page = await listWith(o, async (p) => {
    const res = await cloud.flavors.call.listFlavors({ page: p });
    return { items: res.flavors, nextPageToken: res.nextPageToken };
  });
  if (ctx.out.json) return ctx.out.printJson({ flavors: page.items, nextPageToken: page.nextPageToken });
  ctx.out.table(
    ['NAME', 'ID', 'VCPUS', 'MEMORY', 'ROOT DISK'],
    page.items.map((f) => [
      f.name,
      f.id,
      f.vcpus,
      mebibytes(f.memoryMib),
      f.rootDiskGib ? `${f.rootDiskGib} GiB` : '',
    ]),
    'no flavors',
  );
  noteMore(ctx.out, page);
}
