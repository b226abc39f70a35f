import { Command } from 'commander';
import { randomUUID } from 'node:crypto';
import { commonV1, computeV1 } from '@flotilla/contracts';
import { collectKeyValues, intInRange, sizeArg } from '../args';
import type { Cloud } from '../cloud';
import { action, type CommandContext } from '../context';
import { CliError, ExitCode } from '../errors';
import { age, labels, mebibytes, timestamp, word } from '../format';
import { settle } from '../operations';
import { findVm, hostNames } from '../resolve';
import { listWith, noteMore, withListOptions, type ListOptions } from './list-options';
import { addMigrateCommand } from './migration';
import { disksOfVm } from './vbd';
import { addGuestCommands } from './vm-console';

const { ShutdownMode } = computeV1;

export const powerState = (vm: Pick<computeV1.Vm, 'powerState'>): string =>
  word(vm.powerState, 'POWER_STATE_');

interface CreateOptions {
  flavor?: string;
  vcpus?: number;
  memoryMib?: number;
  image: string;
  label?: Record<string, string>;
  antiAffinityGroup?: string;
  requireHostLabel?: Record<string, string>;
  start: boolean;
  forward?: number[];
  diskSize?: number;
  diskSr?: string;
  requestId?: string;
  wait: boolean;
}

interface MutateOptions {
  wait: boolean;
  requestId?: string;
}

const requestIdHelp = 'idempotency key: repeating the command with the same id returns the first result';
const noWaitHelp = 'do not wait: print the operation id and return (follow it with `flotilla op wait <id>`)';

export function vmCommand(): Command {
  const vm = new Command('vm').description('create, list, inspect and operate virtual machines');

  vm.command('create')
    .description('create a VM and start it, waiting until it runs (progress bar on a terminal)')
    .argument('<name>', "1..63 letters, digits, '-', '_', '.'; starts with a letter or digit")
    .option(
      '--flavor <flavor>',
      'size from a flavor, by id or name (see `flotilla flavor list`); default m1.tiny unless --vcpus and --memory-mib are given',
    )
    .option(
      '--vcpus <n>',
      'explicit size: virtual CPUs (with --memory-mib, instead of --flavor)',
      intInRange(1, 1024),
    )
    .option(
      '--memory-mib <mib>',
      'explicit size: memory in MiB (with --vcpus)',
      intInRange(1, 64 * 1024 * 1024),
    )
    .option(
      '--image <image>',
      'catalogue image to boot (KERNEL: direct kernel boot; DISK: from a copy-on-write root disk)',
      'demo',
    )
    .option(
      '--disk-size <size>',
      "DISK images: size of the VM's root disk, e.g. 2G, 512M (powers of 1024; default: the image's)",
      sizeArg,
    )
    .option(
      '--disk-sr <sr>',
      "DISK images: SR for the root disk, id or name (default: the pool's default SR)",
    )
    .option('--label <key=value>', 'label the VM (repeatable)', collectKeyValues)
    .option('--anti-affinity-group <group>', 'never share a host with other VMs of this group')
    .option(
      '--require-host-label <key=value>',
      'only run on hosts carrying this label (repeatable)',
      collectKeyValues,
    )
    .option(
      '--forward <port>',
      'make this guest TCP port reachable from its host on a loopback port shown by `vm show` (repeatable)',
      collectPorts,
    )
    .option('--no-start', 'create the VM halted')
    .option('--request-id <id>', `${requestIdHelp} (default: a new random id)`)
    .option('--no-wait', noWaitHelp)
    .action(action(createVm));

  withListOptions(
    vm
      .command('list')
      .description("list VMs (your tenant's; every tenant's for pool-admin)")
      .option('--snapshots', 'list VM snapshots instead of VMs'),
    'fields: name, power_state (e.g. RUNNING), host_id, flavor_id, snapshot_of, label.<key>',
  ).action(action(listVms));

  vm.command('snapshot')
    .description(
      'snapshot a VM with all its disks at once (a running VM is paused for the moment it takes) and its settings',
    )
    .argument('<vm>', 'VM id or name')
    .option('--name <name>', 'name of the snapshot (default: <vm>.snap-<UTC time>)')
    .option('--request-id <id>', `${requestIdHelp} (default: a new random id)`)
    .option('--no-wait', noWaitHelp)
    .action(action(snapshotVm));

  vm.command('clone')
    .description('make a new halted VM from a VM snapshot, with linked clones of its disks')
    .argument('<snapshot>', 'VM snapshot id or name (see `flotilla vm list --snapshots`)')
    .argument('<name>', "the new VM's name")
    .option('--label <key=value>', 'label the new VM (repeatable)', collectKeyValues)
    .option('--request-id <id>', `${requestIdHelp} (default: a new random id)`)
    .option('--no-wait', noWaitHelp)
    .action(action(cloneVm));

  vm.command('revert')
    .description("revert a halted VM's disks and settings to one of its snapshots (later writes are lost)")
    .argument('<vm>', 'VM id or name')
    .argument('<snapshot>', 'snapshot id or name (see `flotilla vm list --snapshots`)')
    .option('--request-id <id>', `${requestIdHelp} (default: a new random id)`)
    .option('--no-wait', noWaitHelp)
    .action(action(revertVm));

  vm.command('show')
    .description('show one VM and its disks')
    .argument('<vm>', 'VM id or name')
    .action(action(showVm));

  mutation(
    vm,
    'start',
    'start a halted VM (placed by the scheduler) and wait until it runs',
    (cloud, id, requestId) => cloud.vms.call.startVm({ id, requestId, hostId: '' }),
  );
  mutation(
    vm,
    'stop',
    'shut a VM down: cleanly (ACPI, then hard after --timeout-ms), or at once with --hard',
    (cloud, id, requestId, o) =>
      cloud.vms.call.shutdownVm({
        id,
        requestId,
        mode: o.hard ? ShutdownMode.SHUTDOWN_MODE_HARD : ShutdownMode.SHUTDOWN_MODE_CLEAN,
        timeoutMs: o.timeoutMs ?? 0,
      }),
    (c) =>
      c
        .option('--hard', 'power off at once instead of asking the guest')
        .option(
          '--timeout-ms <ms>',
          'how long the guest gets to shut down before a hard stop (server default 60000)',
          intInRange(1, 3_600_000),
        ),
    (o) => {
      if (o.hard && o.timeoutMs !== undefined)
        throw new CliError('--timeout-ms applies to clean shutdowns, not --hard', ExitCode.Usage);
    },
  );
  mutation(
    vm,
    'reboot',
    'reboot a running VM: cleanly, or at once with --hard',
    (cloud, id, requestId, o) =>
      cloud.vms.call.rebootVm({
        id,
        requestId,
        mode: o.hard ? ShutdownMode.SHUTDOWN_MODE_HARD : ShutdownMode.SHUTDOWN_MODE_CLEAN,
      }),
    (c) => c.option('--hard', 'reset at once instead of asking the guest'),
  );
  mutation(vm, 'pause', 'pause a running VM (its vCPUs stop; memory stays)', (cloud, id, requestId) =>
    cloud.vms.call.pauseVm({ id, requestId }),
  );
  mutation(vm, 'unpause', 'let a paused VM run again', (cloud, id, requestId) =>
    cloud.vms.call.unpauseVm({ id, requestId }),
  );
  mutation(
    vm,
    'suspend',
    "save a running VM's memory on its host and stop it (resume continues where it was)",
    (cloud, id, requestId) => cloud.vms.call.suspendVm({ id, requestId }),
  );
  mutation(vm, 'resume', 'resume a suspended VM where it was', (cloud, id, requestId) =>
    cloud.vms.call.resumeVm({ id, requestId }),
  );
  mutation(
    vm,
    'delete',
    'stop a VM if needed and delete it with everything it owns',
    (cloud, id, requestId) => cloud.vms.call.destroyVm({ id, requestId }),
  );
  addMigrateCommand(vm);
  addGuestCommands(vm);
  return vm;
}

type PowerOptions = MutateOptions & { hard?: boolean; timeoutMs?: number };

/** One power command: resolve the VM, call, wait, show the VM after (or that it is gone). */
function mutation(
  parent: Command,
  name: string,
  description: string,
  call: (
    cloud: Cloud,
    id: string,
    requestId: string,
    options: PowerOptions,
  ) => Promise<{ operation?: commonV1.Operation }>,
  extraOptions: (c: Command) => Command = (c) => c,
  check: (options: PowerOptions) => void = () => undefined,
): void {
  const c = parent.command(name).description(description).argument('<vm>', 'VM id or name');
  extraOptions(c)
    .option('--request-id <id>', `${requestIdHelp} (default: a new random id)`)
    .option('--no-wait', noWaitHelp)
    .action(
      action(async (ctx: CommandContext, ref: string, options: PowerOptions) => {
        check(options);
        const cloud = ctx.cloud();
        const vm = await findVm(cloud, ref);
        const response = await call(cloud, vm.id, options.requestId ?? `cli-${randomUUID()}`, options);
        const operation = await settle(cloud, ctx.out, response, { wait: options.wait });
        if (!operation) return;
        if (name === 'delete') {
          if (ctx.out.json) return ctx.out.printJson({ operation });
          return ctx.out.line(`vm ${vm.name} deleted`);
        }
        const after = (await cloud.vms.call.getVm({ id: vm.id })).vm;
        if (ctx.out.json) return ctx.out.printJson({ operation, vm: after });
        if (after) ctx.out.line(await summary(cloud, after));
      }),
    );
}

async function createVm(ctx: CommandContext, name: string, o: CreateOptions): Promise<void> {
  if (o.flavor && (o.vcpus !== undefined || o.memoryMib !== undefined))
    throw new CliError('give either --flavor or --vcpus with --memory-mib, not both', ExitCode.Usage);
  if ((o.vcpus === undefined) !== (o.memoryMib === undefined))
    throw new CliError('--vcpus and --memory-mib go together', ExitCode.Usage);
  const cloud = ctx.cloud();
  const response = await cloud.vms.call.createVm({
    requestId: o.requestId ?? `cli-${randomUUID()}`,
    name,
    labels: o.label ?? {},
    // Like `openstack server create` with a default flavor: the smallest one unless sized explicitly.
    flavorId: o.flavor ?? (o.vcpus === undefined ? 'm1.tiny' : ''),
    vcpus: o.vcpus ?? 0,
    memoryMib: o.memoryMib ?? 0,
    boot: { image: o.image, kernel: '', initrd: '', cmdline: '' },
    antiAffinityGroup: o.antiAffinityGroup ?? '',
    requiredHostLabels: o.requireHostLabel ?? {},
    start: o.start,
    nics: o.forward?.length
      ? [{ mac: '', forwards: o.forward.map((guestPort) => ({ guestPort, hostAddress: '' })) }]
      : [],
    rootDiskSizeBytes: o.diskSize ?? 0,
    rootDiskSr: o.diskSr ?? '',
  });
  const operation = await settle(cloud, ctx.out, response, { wait: o.wait });
  if (!operation) return;
  const id = response.vm?.id || operation.result?.vm_id || operation.target?.id;
  const after = id ? (await cloud.vms.call.getVm({ id })).vm : response.vm;
  if (ctx.out.json) return ctx.out.printJson({ vm: after, operation });
  if (after) ctx.out.line(await summary(cloud, after));
}

async function listVms(ctx: CommandContext, o: ListOptions & { snapshots?: boolean }): Promise<void> {
  const cloud = ctx.cloud();
  const filter = o.snapshots ? ['is_snapshot=true', o.filter].filter(Boolean).join(',') : o.filter;
  const page = await listWith({ ...o, filter }, async (p) => {
    const res = await cloud.vms.call.listVms({ page: p });
    return { items: res.vms, nextPageToken: res.nextPageToken };
  });
  if (ctx.out.json) return ctx.out.printJson({ vms: page.items, nextPageToken: page.nextPageToken });
  if (o.snapshots) {
    ctx.out.table(
      ['NAME', 'ID', 'SNAPSHOT OF', 'TAKEN', 'VCPUS', 'MEMORY'],
      page.items.map((v) => [
        v.name + (v.currentOperationId ? '*' : ''),
        v.id,
        v.snapshotOf,
        timestamp(v.snapshotTime),
        v.vcpus,
        mebibytes(v.memoryMib),
      ]),
      'no VM snapshots (take one with `flotilla vm snapshot <vm>`)',
    );
    if (page.items.some((v) => v.currentOperationId)) ctx.out.note('* an operation is in progress');
    return noteMore(ctx.out, page);
  }
  const hosts = page.items.some((v) => v.hostId) ? await hostNames(cloud) : new Map<string, string>();
  ctx.out.table(
    ['NAME', 'ID', 'STATE', 'VCPUS', 'MEMORY', 'HOST', 'AGE'],
    page.items.map((v) => [
      v.name,
      v.id,
      powerState(v) + (v.currentOperationId ? '*' : ''),
      v.vcpus,
      mebibytes(v.memoryMib),
      hosts.get(v.hostId) ?? v.hostId,
      age(v.createdAt),
    ]),
    'no VMs (create one with `flotilla vm create <name> --flavor <flavor>`)',
  );
  if (page.items.some((v) => v.currentOperationId)) ctx.out.note('* an operation is in progress');
  noteMore(ctx.out, page);
}

async function snapshotVm(
  ctx: CommandContext,
  ref: string,
  o: MutateOptions & { name?: string },
): Promise<void> {
  const cloud = ctx.cloud();
  const vm = await findVm(cloud, ref);
  const response = await cloud.vms.call.snapshotVm({
    id: vm.id,
    requestId: o.requestId ?? `cli-${randomUUID()}`,
    name: o.name ?? '',
    labels: {},
  });
  const operation = await settle(cloud, ctx.out, response, { wait: o.wait });
  if (!operation) return;
  if (ctx.out.json) return ctx.out.printJson({ snapshot: response.snapshot, operation });
  ctx.out.line(
    `snapshot ${response.snapshot?.name ?? ''} (${response.snapshot?.id ?? ''}) of vm ${vm.name} taken`,
  );
}

async function cloneVm(
  ctx: CommandContext,
  ref: string,
  name: string,
  o: MutateOptions & { label?: Record<string, string> },
): Promise<void> {
  const cloud = ctx.cloud();
  const snapshot = await findSnapshot(cloud, ref);
  const response = await cloud.vms.call.cloneVm({
    snapshotId: snapshot.id,
    requestId: o.requestId ?? `cli-${randomUUID()}`,
    name,
    labels: o.label ?? {},
  });
  const operation = await settle(cloud, ctx.out, response, { wait: o.wait });
  if (!operation) return;
  const after = response.vm ? (await cloud.vms.call.getVm({ id: response.vm.id })).vm : undefined;
  if (ctx.out.json) return ctx.out.printJson({ vm: after, operation });
  if (after) ctx.out.line(await summary(cloud, after));
}

async function revertVm(
  ctx: CommandContext,
  ref: string,
  snapshotRef: string,
  o: MutateOptions,
): Promise<void> {
  const cloud = ctx.cloud();
  const vm = await findVm(cloud, ref);
  const snapshot = await findSnapshot(cloud, snapshotRef);
  const response = await cloud.vms.call.revertVm({
    id: vm.id,
    requestId: o.requestId ?? `cli-${randomUUID()}`,
    snapshotId: snapshot.id,
  });
  const operation = await settle(cloud, ctx.out, response, { wait: o.wait });
  if (!operation) return;
  if (ctx.out.json) return ctx.out.printJson({ operation });
  ctx.out.line(`vm ${vm.name} reverted to snapshot ${snapshot.name}`);
}

/** A VM snapshot by id or name (ListVms shows snapshots only when asked for them). */
async function findSnapshot(cloud: Cloud, ref: string): Promise<computeV1.Vm> {
  if (/^[0-9a-f-]{36}$/i.test(ref)) {
    const { vm } = await cloud.vms.call.getVm({ id: ref });
    if (vm) return vm;
  }
  if (/[,=]/.test(ref)) throw new CliError(`"${ref}" is neither a snapshot id nor a name`, ExitCode.Usage);
  const { vms } = await cloud.vms.call.listVms({
    page: { pageSize: 10, pageToken: '', filter: `is_snapshot=true,name=${ref}` },
  });
  const found = vms.find((v) => v.name === ref);
  if (!found)
    throw new CliError(
      `no VM snapshot named "${ref}" (see \`flotilla vm list --snapshots\`)`,
      ExitCode.NotFound,
    );
  return found;
}

async function showVm(ctx: CommandContext, ref: string): Promise<void> {
  const cloud = ctx.cloud();
  const vm = await findVm(cloud, ref);
  if (ctx.out.json) return ctx.out.printJson({ vm });
  const hosts = vm.hostId ? await hostNames(cloud) : new Map<string, string>();
  ctx.out.details([
    ['name', vm.name],
    ['id', vm.id],
    ['tenant', vm.tenantId],
    ['state', powerState(vm) + (vm.powerStateReason ? ` (${vm.powerStateReason})` : '')],
    ['snapshot of', vm.isSnapshot ? `${vm.snapshotOf} at ${timestamp(vm.snapshotTime)}` : ''],
    ['host', vm.hostId ? `${hosts.get(vm.hostId) ?? ''} ${vm.hostId}`.trim() : ''],
    ['flavor', vm.flavorId ? await flavorName(cloud, vm.flavorId) : ''],
    ['vcpus', vm.vcpus],
    ['memory', mebibytes(vm.memoryMib)],
    ['root disk', vm.rootDiskGib ? `${vm.rootDiskGib} GiB` : ''],
    ['image', vm.boot?.image],
    ['kernel', vm.boot?.kernel],
    ['nics', nicSummary(vm.nics ?? [])],
    ['labels', labels(vm.labels)],
    ['anti-affinity group', vm.antiAffinityGroup],
    ['requires host labels', labels(vm.requiredHostLabels)],
    ['allowed operations', (vm.allowedOperations ?? []).map((op) => word(op, 'VM_OPERATION_')).join(', ')],
    ['current operation', vm.currentOperationId],
    ['created', timestamp(vm.createdAt)],
    ['updated', timestamp(vm.updatedAt)],
    ['etag', vm.etag],
  ]);
  const disks = await disksOfVm(cloud, vm.id);
  if (disks && 'note' in disks) ctx.out.note(disks.note);
  else if (disks?.rows.length) {
    ctx.out.line('');
    ctx.out.table(['POSITION', 'DEVICE', 'VDI', 'SIZE', 'MODE', 'STATE', 'FLAGS', 'VBD'], disks.rows);
  }
}

/** "52:54:00:12:34:56 (guest 80 at 127.0.0.1:40123)" per NIC. */
function nicSummary(nics: computeV1.Nic[]): string {
  return nics
    .map((n) => {
      const forwards = n.forwards.map(
        (f) => `guest ${f.guestPort}${f.hostAddress ? ` at ${f.hostAddress}` : ''}`,
      );
      return forwards.length ? `${n.mac} (${forwards.join(', ')})` : n.mac;
    })
    .join('; ');
}

/** A commander option parser collecting repeated TCP ports. */
function collectPorts(raw: string, previous: number[] | undefined): number[] {
  return [...(previous ?? []), intInRange(1, 65535)(raw)];
}

/** "m1.small (id)", or the id alone when the flavor cannot be read. */
async function flavorName(cloud: Cloud, id: string): Promise<string> {
  try {
    const { flavor } = await cloud.flavors.call.getFlavor({ id });
    return flavor ? `${flavor.name} (${id})` : id;
  } catch {
    return id;
  }
}

/** "vm web-1 (id) is running on host-1". */
async function summary(cloud: Cloud, vm: computeV1.Vm): Promise<string> {
  const hosts = vm.hostId ? await hostNames(cloud) : new Map<string, string>();
  const where = vm.hostId ? ` on ${hosts.get(vm.hostId) ?? vm.hostId}` : '';
  return `vm ${vm.name} (${vm.id}) is ${powerState(vm) || 'in an unknown state'}${where}`;
}
