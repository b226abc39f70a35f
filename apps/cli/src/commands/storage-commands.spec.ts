import { CommanderError } from 'commander';
import { storageV1 } from '@flotilla/contracts';
import { CliError, ExitCode } from '../errors';
import { parseCli } from '../cli.testing';
import { scanSummary, srSpace } from './sr';
import { joinFilter, vdiFlags } from './vdi-common';

// Pure: formatting and flag parsing of the storage commands. No cloud: every case fails or is decided before
// the CLI would connect (the profile points nowhere).

const GiB = 1024 ** 3;

/** Runs `flotilla <args>` in-process and returns what it threw, with commander's error output captured. */
async function run(...args: string[]): Promise<{ error: unknown; stderr: string }> {
  const { error, output } = await parseCli(args);
  return { error, stderr: output };
}

describe('storage command flags', () => {
  it('refuses a size it cannot read, saying what a size looks like', async () => {
    const { error, stderr } = await run('vdi', 'create', 'd', '--sr', 'local', '--size', '10X');
    expect(error).toBeInstanceOf(CommanderError);
    expect(stderr).toMatch(/expected a size such as 10G, 512M, 1T or a number of bytes/);
  });

  it('asks for --size or --image when creating a disk', async () => {
    const { error } = await run('vdi', 'create', 'd', '--sr', 'local');
    expect(error).toEqual(
      new CliError('give --size (or --image, whose size is the default)', ExitCode.Usage),
    );
  });

  it('requires a host for a file SR and refuses one for a shared SR', async () => {
    expect((await run('sr', 'create', 's', '--type', 'file', '--path', '/srv/sr')).error).toMatchObject({
      exitCode: ExitCode.Usage,
      message: "a file SR is one host's directory: give --host <host>",
    });
    expect(
      (await run('sr', 'create', 's', '--type', 'shared', '--path', '/srv/sr', '--host', 'h1')).error,
    ).toMatchObject({ message: 'a shared SR is seen by every host: leave out --host' });
  });

  it('refuses a relative SR path before asking the cloud', async () => {
    expect((await run('sr', 'create', 's', '--type', 'shared', '--path', 'sr')).error).toMatchObject({
      exitCode: ExitCode.Usage,
    });
  });

  it('takes only the SR types and image formats that exist', async () => {
    expect((await run('sr', 'create', 's', '--type', 'nfs', '--path', '/a')).stderr).toMatch(
      /Allowed choices are file, shared/,
    );
    expect((await run('vdi', 'export', 'd', '--format', 'vhd')).stderr).toMatch(
      /Allowed choices are raw, qcow2, vmdk/,
    );
    expect((await run('vdi', 'import', 'f.img', '--sr', 'local')).stderr).toMatch(/--format <format>/);
  });

  it('refuses to import what is not a regular file', async () => {
    const { error } = await run('vdi', 'import', '/nonexistent/disk.img', '--sr', 'local', '--format', 'raw');
    expect(error).toMatchObject({ exitCode: ExitCode.Usage });
    expect((error as Error).message).toMatch(/is not a regular file/);
  });

  it('refuses --compress for formats other than qcow2', async () => {
    const { error } = await run('vdi', 'export', 'd', '--format', 'raw', '--compress');
    expect(error).toEqual(new CliError('--compress applies to --format qcow2 only', ExitCode.Usage));
  });

  it('keeps VBD positions within 0..15 and unplug timeouts within 1..600 s', async () => {
    expect((await run('vbd', 'create', 'vm', 'd', '--position', '16')).stderr).toMatch(
      /must be from 0 to 15/,
    );
    expect((await run('vbd', 'unplug', 'x', '--timeout', '0')).stderr).toMatch(/must be from 1 to 600/);
  });

  it('takes --disk-size as a size on vm create', async () => {
    expect((await run('vm', 'create', 'v', '--disk-size', 'big')).stderr).toMatch(/expected a size/);
  });
});

describe('storage formatting', () => {
  const sr = (o: Partial<storageV1.Sr>): storageV1.Sr => ({ ...({} as storageV1.Sr), ...o });

  it('shows an SR’s space with shares of its capacity and the ceiling thin provisioning may reach', () => {
    expect(
      Object.fromEntries(
        srSpace(
          sr({
            capacityBytes: 100 * GiB,
            physicalUtilisationBytes: 25 * GiB,
            virtualAllocationBytes: 150 * GiB,
            overprovisionRatio: 2,
          }),
        ),
      ),
    ).toEqual({
      capacity: '100 GiB',
      free: '75 GiB',
      'physical use': '25 GiB (25% of capacity)',
      'virtual allocation': '150 GiB (150% of capacity)',
      'allocation ceiling': '200 GiB (2× capacity)',
    });
  });

  it('says there is no ceiling when the SR has none', () => {
    expect(Object.fromEntries(srSpace(sr({ capacityBytes: GiB })))['allocation ceiling']).toBe('none');
  });

  it('summarises a scan, counting refused files', () => {
    expect(
      scanSummary('local', {
        introduced: '2',
        missing: '0',
        recovered: '1',
        'refused.evil.qcow2': 'data file',
      }),
    ).toBe('sr local scanned: 2 introduced, 0 missing, 1 recovered, 1 refused');
    expect(scanSummary('local', {})).toBe('sr local scanned: 0 introduced, 0 missing, 0 recovered');
  });

  it('flags snapshots, read-only, sharable and hidden disks', () => {
    expect(vdiFlags({ isSnapshot: true, readOnly: true, sharable: false, managed: true })).toBe('snapshot');
    expect(vdiFlags({ isSnapshot: false, readOnly: true, sharable: true, managed: true })).toBe(
      'ro,sharable',
    );
    expect(vdiFlags({ isSnapshot: false, readOnly: false, sharable: false, managed: false })).toBe('hidden');
  });

  it('joins list filters, leaving out the empty terms', () => {
    expect(joinFilter('is_snapshot=false', undefined, 'name=a')).toBe('is_snapshot=false,name=a');
    expect(joinFilter(undefined, '')).toBe('');
  });
});
