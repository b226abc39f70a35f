import { Command, Option } from 'commander';
import { adminCommands } from './commands/admin';
import { credentialCommand } from './commands/credential';
import { evacuationCommand } from './commands/evacuation';
import { imageCommand } from './commands/image';
import { migrationCommand } from './commands/migration';
import { opCommand } from './commands/op';
import { flavorCommand, hostCommand } from './commands/pool';
import { snapshotCommand } from './commands/snapshot';
import { srCommand } from './commands/sr';
import { upCommand } from './commands/up';
import { vbdCommand } from './commands/vbd';
import { vdiCommand } from './commands/vdi';
import { vmCommand } from './commands/vm';
import { watchCommand } from './commands/watch';
import { exitCodeHelp } from './errors';

/** The `flotilla` command tree. */
export function buildProgram(): Command {
  const program = new Command('flotilla')
    .description('Flotilla: a federated cloud of real virtual machines. Drives a Flotilla gateway over gRPC.')
    .addOption(
      new Option(
        '--endpoint <host:port>',
        "gateway gRPC endpoint (default: the profile's, else 127.0.0.1:7400)",
      ).env('FLOTILLA_ENDPOINT'),
    )
    .addOption(
      new Option('--token <token>', "API bearer token (default: the profile's)").env('FLOTILLA_TOKEN'),
    )
    .addOption(
      new Option('--profile <name>', 'profile of the config file to use (default: its current one)').env(
        'FLOTILLA_PROFILE',
      ),
    )
    .option('--json', 'print raw API responses as JSON (for scripts) instead of tables')
    .configureHelp({ showGlobalOptions: true, sortSubcommands: false })
    .showSuggestionAfterError(true)
    // Usage errors and --help throw instead of exiting, so main() decides the exit code in one place.
    .exitOverride()
    .configureOutput({ outputError: (text, write) => write(`flotilla: ${text.replace(/^error: /, '')}`) })
    .addHelpText(
      'after',
      `
Profiles: ${'$'}FLOTILLA_CONFIG, else ${'$'}XDG_CONFIG_HOME/flotilla/config.json, else ~/.config/flotilla/config.json
  {"current": "local", "profiles": {"local": {"endpoint": "127.0.0.1:7400", "token": "flt_…"}}}
  \`flotilla up\` writes profile "local". Flags and FLOTILLA_* variables override the profile.

${exitCodeHelp}

Errors print one line, "flotilla: <message>", on stderr.`,
    );

  program.addCommand(upCommand());
  program.addCommand(vmCommand());
  program.addCommand(hostCommand());
  program.addCommand(flavorCommand());
  program.addCommand(imageCommand());
  program.addCommand(srCommand());
  program.addCommand(vdiCommand());
  program.addCommand(snapshotCommand());
  program.addCommand(vbdCommand());
  program.addCommand(migrationCommand());
  program.addCommand(evacuationCommand());
  program.addCommand(opCommand());
  program.addCommand(watchCommand());
  for (const c of adminCommands()) program.addCommand(c);
  program.addCommand(credentialCommand());
  inheritSettings(program);
  return program;
}

/** Commands added with addCommand do not inherit settings: hand them down the whole tree. */
function inheritSettings(parent: Command): void {
  for (const child of parent.commands) {
    child.copyInheritedSettings(parent);
    inheritSettings(child);
  }
}
