import { Command, Option } from 'commander';
import { intInRange } from '../args';
import { defaultBasePort, maxAgents, type Driver } from '../up/services';
import { runUp } from '../up/up';

export function upCommand(): Command {
  return new Command('up')
    .summary(
      'run the whole local private cloud on this machine (foreground; Ctrl-C stops it, VMs keep running)',
    )
    .description(
      'run the whole local private cloud on this machine in the foreground: embedded database, compute, ' +
        'storage, network, migration, gateway and host agents, each its own process, restarted if it dies. ' +
        'Writes the CLI profile "local" once the gateway serves. Ctrl-C or SIGTERM stops the services and ' +
        'agents; running VMs keep running (as on XCP-ng when its toolstack stops) and the next start ' +
        're-attaches them: stop them first with `flotilla vm stop` to free their memory',
    )
    .option(
      '--data-dir <dir>',
      'where the cloud keeps its state (database, tokens, agent state, SRs); default $FLOTILLA_DATA_DIR, else ./var',
      process.env.FLOTILLA_DATA_DIR || './var',
    )
    .option(
      '--agents <n>',
      `how many host agents to run (host-1, host-2, …), 0..${maxAgents}`,
      intInRange(0, maxAgents),
      2,
    )
    .option(
      '--base-port <port>',
      'gateway gRPC port; every other port keeps its distance (compute +1 … migration +4, agents +10…, admin HTTP +80, database +90, EC2 API +1373, OpenStack API +1374)',
      intInRange(1024, 65535 - 1374),
      defaultBasePort,
    )
    .addOption(
      new Option(
        '--driver <driver>',
        'hypervisor driver for the host agents: auto picks qemu when installed, else sim',
      )
        .choices(['auto', 'sim', 'qemu'])
        .default('auto'),
    )
    .addHelpText(
      'after',
      `
Environment:
  DATABASE_URL       use this PostgreSQL instead of the embedded one
  FLOTILLA_DB_PORT   port of the embedded database (default: base port + 90)
  FLOTILLA_LOG_LEVEL passed to every service (fatal, error, warn, info, debug, trace)

Ports (default base 7400): gateway 7400, compute 7401, storage 7402, network 7403, migration 7404,
host agents 7410…, gateway admin HTTP 7480, embedded database 7490. A port in use stops \`up\` with exit 1.`,
    )
    .action(async (o: { dataDir: string; agents: number; basePort: number; driver: Driver }) => {
      process.exitCode = await runUp(o);
    });
}
