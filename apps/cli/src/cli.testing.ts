import type { Command } from 'commander';
import { describeError } from './errors';
import { buildProgram } from './program';

/** For the CLI's tests: the `flotilla` command tree run in this process. */

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** `flotilla <args>` as main() runs it: stdout and stderr captured, errors as exit codes and one line. */
export async function runCli(args: string[]): Promise<CliRun> {
  let stdout = '';
  let stderr = '';
  const out = jest.spyOn(process.stdout, 'write').mockImplementation((s) => ((stdout += String(s)), true));
  const err = jest.spyOn(process.stderr, 'write').mockImplementation((s) => ((stderr += String(s)), true));
  try {
    await buildProgram().parseAsync(['node', 'flotilla', ...args]);
    return { code: 0, stdout, stderr };
  } catch (e) {
    const { exitCode, message } = describeError(e);
    return { code: exitCode, stdout, stderr: `${stderr}flotilla: ${message}\n` };
  } finally {
    out.mockRestore();
    err.mockRestore();
  }
}

/**
 * `flotilla <args>` against an endpoint that answers nothing, for flags decided before the CLI connects:
 * what it threw, and what commander wrote (usage errors, --help).
 */
export async function parseCli(args: string[]): Promise<{ error: unknown; output: string }> {
  const program = buildProgram();
  let output = '';
  const capture = (c: Command) => {
    c.configureOutput({ writeErr: (s) => (output += s), writeOut: (s) => (output += s) });
    c.commands.forEach(capture);
  };
  capture(program);
  try {
    await program.parseAsync(['node', 'flotilla', '--endpoint', '127.0.0.1:1', '--token', 't', ...args]);
    return { error: undefined, output };
  } catch (error) {
    return { error, output };
  }
}

/**
 * `flotilla` against one cloud (the connection is read at each call: tests start the cloud in beforeAll),
 * and `json`, which runs with --json and parses the answer; a non-zero exit throws with its stderr.
 */
export function cliFor(connection: () => { endpoint: string; token: string }) {
  const flotilla = (...args: string[]): Promise<CliRun> => {
    const { endpoint, token } = connection();
    return runCli(['--endpoint', endpoint, '--token', token, ...args]);
  };
  const json = async <T>(...args: string[]): Promise<T> => {
    const r = await flotilla(...args, '--json');
    if (r.code !== 0) throw new Error(`flotilla ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
    return JSON.parse(r.stdout) as T;
  };
  return { flotilla, json };
}
