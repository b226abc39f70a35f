import * as net from 'node:net';
import { CliError, ExitCode } from '../errors';
import { sleep } from '../sleep';

/** Resolves with the error code when nothing may listen on 127.0.0.1:port, undefined when it is free. */
function tryListen(port: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    server.listen({ port, host: '127.0.0.1', exclusive: true }, () => server.close(() => resolve(undefined)));
  });
}

/** Fails with one clear line (exit 1) when a port `up` needs is taken. */
export async function assertPortsFree(ports: Array<{ port: number; what: string }>): Promise<void> {
  for (const { port, what } of ports) {
    const problem = await tryListen(port);
    if (problem === 'EADDRINUSE')
      throw new CliError(
        `port ${port} (${what}) is already in use on 127.0.0.1: is another \`flotilla up\` running? ` +
          'Stop it, or shift every port with --base-port',
        ExitCode.Usage,
      );
    if (problem)
      throw new CliError(`cannot listen on 127.0.0.1:${port} (${what}): ${problem}`, ExitCode.Usage);
  }
}

/** True when something accepts TCP connections on 127.0.0.1:port. */
export function portOpen(port: number, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1' });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/** Polls until the port accepts connections; false if the signal aborted first. */
export async function waitForPort(port: number, signal: AbortSignal, intervalMs = 250): Promise<boolean> {
  while (!signal.aborted) {
    if (await portOpen(port)) return true;
    await sleep(intervalMs, signal);
  }
  return false;
}
