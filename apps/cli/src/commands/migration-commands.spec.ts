import { CommanderError } from 'commander';
import { CliError, ExitCode } from '../errors';
import { parseCli } from '../cli.testing';
import { migrationOptions } from './migration';

// Pure: flag parsing of the migration and evacuation commands. No cloud: every case fails or is decided
// before the CLI would connect (the endpoint points nowhere).

const run = async (...args: string[]) => parseCli(args);

describe('migration command flags', () => {
  it.each<[string, string[], string]>([
    [
      'post-copy with an offline move',
      ['--offline', '--post-copy'],
      '--post-copy applies to live migrations, not --offline',
    ],
    ['rounds without post-copy', ['--post-copy-after', '4'], '--post-copy-after goes with --post-copy'],
    [
      'a disk map without storage',
      ['--map', 'disk-1=sr-2'],
      '--map says where copied disks go: add --with-storage',
    ],
    [
      'a name on a dry run',
      ['--dry-run', '--name', 'x'],
      '--dry-run starts nothing: leave out --name and --request-id',
    ],
  ])('refuses %s as a usage error before connecting', async (_, flags, message) => {
    const { error } = await run('vm', 'migrate', 'web-1', ...flags);
    expect(error).toEqual(new CliError(message, ExitCode.Usage));
  });

  it.each<[string, string[], RegExp]>([
    ['a bandwidth it cannot read', ['--bandwidth', 'fast'], /expected a bandwidth such as 1G\/s/],
    ['a downtime limit above a minute', ['--downtime-limit', '60001'], /must be from 1 to 60000/],
    ['post-copy after 0 rounds', ['--post-copy', '--post-copy-after', '0'], /must be from 1 to 100/],
    ['a map entry without "="', ['--with-storage', '--map', 'disk-1'], /expected key=value/],
  ])('refuses %s, saying what it expects', async (_, flags, message) => {
    const { error, output } = await run('vm', 'migrate', 'web-1', ...flags);
    expect(error).toBeInstanceOf(CommanderError);
    expect(output).toMatch(message);
  });

  it('sends 0 for every option left out, so the server applies its defaults', () => {
    expect(migrationOptions({ wait: true })).toEqual({
      downtimeLimitMs: 0,
      bandwidthBytesPerSec: 0,
      autoConverge: false,
      postCopy: false,
      postCopyAfterRounds: 0,
      timeoutMs: 0,
      shutdownTimeoutMs: 0,
    });
    expect(migrationOptions({ wait: true, timeout: 90, bandwidth: 1024 })).toMatchObject({
      timeoutMs: 90_000,
      bandwidthBytesPerSec: 1024,
    });
  });

  it('takes only the blocked-VM policies that exist for an evacuation', async () => {
    const { error, output } = await run('host', 'evacuate', 'host-1', '--on-blocked', 'ignore');
    expect(error).toBeInstanceOf(CommanderError);
    expect(output).toMatch(/Allowed choices are fail, skip, shutdown/);
    expect((await run('host', 'evacuate', 'host-1', '--max-parallel', '17')).output).toMatch(
      /must be from 1 to 16/,
    );
  });

  it.each([
    ['vm', 'migrate'],
    ['migration', 'list'],
    ['migration', 'show'],
    ['migration', 'cancel'],
    ['host', 'evacuate'],
    ['host', 'maintenance'],
    ['host', 'enable'],
    ['evacuation', 'list'],
    ['evacuation', 'show'],
    ['evacuation', 'cancel'],
  ])('documents `flotilla %s %s` in --help, with --json among its options', async (...words) => {
    const { output } = await run(...words, '--help');
    expect(output).toMatch(new RegExp(`^Usage: flotilla ${words.join(' ')}`, 'm'));
    expect(output).toMatch(/--json/);
  });
});
