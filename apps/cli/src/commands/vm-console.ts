import { status } from '@grpc/grpc-js';
import { Command } from 'commander';
import { computeV1 } from '@flotilla/contracts';
import { intInRange } from '../args';
import { action, type CommandContext } from '../context';
import { CliError, ExitCode } from '../errors';
import { mebibytes } from '../format';
import { findVm } from '../resolve';

/** Ctrl-] detaches from an interactive console, as in virsh and telnet. */
const detachKey = 0x1d;

interface ConsoleOptions {
  lingerMs: number;
}

/** `vm log`, `vm console`, `vm metrics`: what the VM's host sees of the guest. */
export function addGuestCommands(vm: Command): void {
  vm.command('log')
    .description("print the VM's serial console history (kept on its host, also across agent restarts)")
    .argument('<vm>', 'VM id or name')
    .option(
      '--bytes <n>',
      'how much of the end to print (default 65536, at most 1048576)',
      intInRange(1, 1048576),
    )
    .action(action(consoleLog));

  vm.command('console')
    .description(
      "attach to the VM's serial console: keys go to the guest, its output comes back. Ctrl-] detaches. " +
        'With stdin not a terminal, stdin is sent and the output printed until --linger-ms after stdin ends',
    )
    .argument('<vm>', 'VM id or name')
    .option(
      '--linger-ms <ms>',
      'non-interactive: keep printing output this long after stdin ends',
      intInRange(0, 600_000),
      2000,
    )
    .action(action(attachConsole));

  vm.command('metrics')
    .description(
      "show a running VM's counters: CPU time, resident memory, disk I/O (read live from its host)",
    )
    .argument('<vm>', 'VM id or name')
    .action(action(showMetrics));
}

async function consoleLog(ctx: CommandContext, ref: string, o: { bytes?: number }): Promise<void> {
  const cloud = ctx.cloud();
  const vm = await findVm(cloud, ref);
  const { data } = await cloud.vms.call.getVmConsoleLog({ id: vm.id, maxBytes: o.bytes ?? 0 });
  if (ctx.out.json) return ctx.out.printJson({ vm_id: vm.id, log: Buffer.from(data).toString('utf8') });
  process.stdout.write(Buffer.from(data));
}

async function showMetrics(ctx: CommandContext, ref: string): Promise<void> {
  const cloud = ctx.cloud();
  const vm = await findVm(cloud, ref);
  const { metrics } = await cloud.vms.call.getVmMetrics({ id: vm.id });
  if (ctx.out.json) return ctx.out.printJson({ metrics });
  if (!metrics) return;
  ctx.out.details([
    ['vm', `${vm.name} (${vm.id})`],
    ['cpu time', `${(metrics.cpuTimeNs / 1e9).toFixed(2)} s`],
    ['resident memory', mebibytes(Math.round(metrics.residentMemoryBytes / 1048576))],
    ...metrics.disks.map((d): [string, string] => [
      `disk ${d.device}`,
      `read ${d.readBytes} B in ${d.readOps} ops, written ${d.writeBytes} B in ${d.writeOps} ops`,
    ]),
    ...metrics.nics.map((n): [string, string] => [`nic ${n.mac}`, `rx ${n.rxBytes} B, tx ${n.txBytes} B`]),
    ['sampled', metrics.sampledAt?.toISOString() ?? ''],
  ]);
}

async function attachConsole(ctx: CommandContext, ref: string, o: ConsoleOptions): Promise<void> {
  if (ctx.out.json) throw new CliError('vm console is interactive: --json does not apply', ExitCode.Usage);
  const cloud = ctx.cloud();
  const vm = await findVm(cloud, ref);
  const stream = cloud.vms.duplex<computeV1.AttachVmConsoleRequest, computeV1.AttachVmConsoleResponse>(
    'AttachVmConsole',
  );
  const stdin = process.stdin;
  const interactive = stdin.isTTY && process.stdout.isTTY;
  stream.write({ id: vm.id, data: Buffer.alloc(0) });
  if (interactive) {
    process.stderr.write(`connected to vm ${vm.name}'s console (Ctrl-] to detach)\r\n`);
    stdin.setRawMode(true);
  }
  const onKeys = (chunk: Buffer) => {
    if (interactive && chunk.includes(detachKey)) return void stream.end();
    stream.write({ id: '', data: chunk });
  };
  stdin.on('data', onKeys);
  let linger: NodeJS.Timeout | undefined;
  stdin.once('end', () => {
    if (!interactive) linger = setTimeout(() => stream.cancel(), o.lingerMs);
  });
  try {
    for await (const r of stream) process.stdout.write(Buffer.from(r.data));
  } catch (e) {
    // Cancelled by us (detach or linger over) ends quietly; anything else is an error.
    if ((e as { code?: number }).code !== status.CANCELLED) throw e;
  } finally {
    clearTimeout(linger);
    stdin.off('data', onKeys);
    if (interactive) {
      stdin.setRawMode(false);
      process.stderr.write('\r\ndetached\r\n');
    }
    stdin.pause();
  }
}
