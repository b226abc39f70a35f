import { Metadata, status } from '@grpc/grpc-js';
import { CommanderError } from 'commander';
import { CliError, describeError, ExitCode, exitCodeForGrpc } from './errors';

function grpcError(code: status, details: string, field?: string) {
  const metadata = new Metadata();
  if (field) metadata.set('x-flotilla-field', field);
  return Object.assign(new Error(`${code} ${status[code]}: ${details}`), { code, details, metadata });
}

describe('exit codes', () => {
  it.each([
    [status.INVALID_ARGUMENT, ExitCode.Usage],
    [status.OUT_OF_RANGE, ExitCode.Usage],
    [status.NOT_FOUND, ExitCode.NotFound],
    [status.FAILED_PRECONDITION, ExitCode.Conflict],
    [status.ABORTED, ExitCode.Conflict],
    [status.ALREADY_EXISTS, ExitCode.Conflict],
    [status.UNAUTHENTICATED, ExitCode.Denied],
    [status.PERMISSION_DENIED, ExitCode.Denied],
    [status.UNAVAILABLE, ExitCode.Unavailable],
    [status.DEADLINE_EXCEEDED, ExitCode.Unavailable],
    [status.RESOURCE_EXHAUSTED, ExitCode.Exhausted],
    [status.INTERNAL, ExitCode.Other],
    [status.UNKNOWN, ExitCode.Other],
    [status.UNIMPLEMENTED, ExitCode.Other],
  ])('gRPC code %s exits with %s', (code, exit) => {
    expect(exitCodeForGrpc(code)).toBe(exit);
  });
});

describe('error lines', () => {
  it('prints the server details, not the grpc-js message with its code prefix', () => {
    expect(describeError(grpcError(status.NOT_FOUND, 'vm web-1 not found'))).toEqual({
      exitCode: ExitCode.NotFound,
      message: 'vm web-1 not found',
    });
  });

  it('names the field the server blamed', () => {
    expect(describeError(grpcError(status.INVALID_ARGUMENT, 'must be 1..64', 'vcpus')).message).toBe(
      'must be 1..64 (field vcpus)',
    );
  });

  it('does not repeat a field the message already names', () => {
    expect(
      describeError(grpcError(status.INVALID_ARGUMENT, 'page.filter: unknown field "x"', 'page.filter'))
        .message,
    ).toBe('page.filter: unknown field "x"');
  });

  it('says how to start a cloud when nothing answers at the endpoint', () => {
    const e = grpcError(
      status.UNAVAILABLE,
      'No connection established. Last error: connect ECONNREFUSED 127.0.0.1:7400',
    );
    const d = describeError(e, { endpoint: '127.0.0.1:7400' });
    expect(d.exitCode).toBe(ExitCode.Unavailable);
    expect(d.message).toContain('cannot reach the Flotilla gateway at 127.0.0.1:7400');
    expect(d.message).toContain('npx flotilla up');
  });

  it('relays an UNAVAILABLE answer of a running service without the start hint', () => {
    const d = describeError(grpcError(status.UNAVAILABLE, 'host host-1 is unreachable'));
    expect(d).toEqual({ exitCode: ExitCode.Unavailable, message: 'host host-1 is unreachable' });
  });

  it('keeps the exit code of a CLI error', () => {
    expect(describeError(new CliError('no such profile', ExitCode.Usage))).toEqual({
      exitCode: ExitCode.Usage,
      message: 'no such profile',
    });
  });

  it('reports commander usage errors as exit 1 without its "error:" prefix', () => {
    const e = new CommanderError(1, 'commander.missingArgument', "error: missing required argument 'name'");
    expect(describeError(e)).toEqual({
      exitCode: ExitCode.Usage,
      message: "missing required argument 'name'",
    });
  });

  it('reports an unexpected error as one line with exit 10, without its stack', () => {
    expect(describeError(new TypeError('boom\nsecond line'))).toEqual({
      exitCode: ExitCode.Other,
      message: 'boom second line',
    });
  });
});
