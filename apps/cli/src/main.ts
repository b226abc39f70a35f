// The `flotilla` command. Errors end as one line, "flotilla: <message>", and an exit code scripts rely on.
import { CommanderError } from 'commander';
import { lastEndpoint } from './context';
import { describeError } from './errors';
import { buildProgram } from './program';

async function main(): Promise<void> {
  const program = buildProgram();
  try {
    await program.parseAsync(process.argv);
  } catch (e) {
    // Commander already printed its own usage errors and help; it only tells the exit code.
    if (e instanceof CommanderError) {
      process.exitCode = e.exitCode;
      return;
    }
    const { exitCode, message } = describeError(e, { endpoint: lastEndpoint });
    process.stderr.write(`flotilla: ${message}\n`);
    process.exitCode = exitCode;
  }
}

// `flotilla vm list | head`: a reader that goes away is not an error worth a stack trace.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw e;
});

void main();
