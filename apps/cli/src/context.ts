import type { Command } from 'commander';
import { Cloud } from './cloud';
import { Output } from './output';
import { configPath, readConfig, resolveConnection, type Connection } from './profile';

/** The global options every command accepts (flags, with their environment variables folded in). */
export interface GlobalOptions {
  endpoint?: string;
  token?: string;
  profile?: string;
  json?: boolean;
}

/** What a command's action works with. */
export interface CommandContext {
  out: Output;
  /** The cloud, connected on first use (so usage errors come before any connection). */
  cloud(): Cloud;
  connection(): Connection;
}

/** Endpoint of the last context built, for error messages that say where the CLI tried to connect. */
export let lastEndpoint: string | undefined;

export function contextFor(command: Command): CommandContext & { close(): void } {
  const globals = command.optsWithGlobals<GlobalOptions>();
  const out = new Output(Boolean(globals.json));
  let connection: Connection | undefined;
  let cloud: Cloud | undefined;
  const connect = (): Connection => {
    if (!connection) {
      const file = configPath();
      connection = resolveConnection(globals, readConfig(file), file);
      lastEndpoint = connection.endpoint;
    }
    return connection;
  };
  return {
    out,
    connection: connect,
    cloud: () => (cloud ??= new Cloud(connect())),
    close: () => cloud?.close(),
  };
}

/**
 * Wraps a command action: builds its context from the command's options and closes its connections after.
 * Commander calls actions with the positional arguments, then the options, then the command.
 */
export function action<A extends unknown[]>(
  run: (ctx: CommandContext, ...args: A) => Promise<void>,
): (...args: unknown[]) => Promise<void> {
  return async (...args: unknown[]) => {
    const command = args[args.length - 1] as Command;
    const ctx = contextFor(command);
    try {
      await run(ctx, ...(args.slice(0, -1) as A));
    } finally {
      ctx.close();
    }
  };
}
