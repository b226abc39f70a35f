import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DiskFiles } from './disk-files';
import { describeWithQemuImg } from './qemu-img.testing';
import {
  attachSrDirectory,
  detachSrDirectory,
  scanSrDirectory,
  srMarkerOf,
  statSrDirectory,
} from './sr-directory';
import { SR_MARKER, TEMP_PREFIX } from './sr-files';

// Real: directories and files in a temporary directory, qemu-img making the images scanned.

describeWithQemuImg('SR directories', () => {
  let root: string;
  const disks = new DiskFiles();
  const qemuImg = (...args: string[]) => execFileSync('qemu-img', args, { stdio: 'pipe' });

  beforeEach(() => (root = fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-sr-'))));
  afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

  it('creates a missing SR directory with mode 0700 and marks it; a repeat is success', () => {
    const dir = path.join(root, 'sr-1');
    const first = attachSrDirectory({ dir, srId: 'sr-1', createDirectory: true, adoptExisting: false });
    expect(first).toMatchObject({ srId: 'sr-1', createdDirectory: true });
    expect(first.capacityBytes).toBeGreaterThan(first.freeBytes);
    expect(fs.statSync(dir).mode & 0o777).toBe(0o700);
    expect(srMarkerOf(dir)).toBe('sr-1');
    const again = attachSrDirectory({ dir, srId: 'sr-1', createDirectory: true, adoptExisting: false });
    expect(again).toMatchObject({ srId: 'sr-1', createdDirectory: false });
    expect(fs.readdirSync(dir)).toEqual([SR_MARKER]);
  });

  it('refuses a missing directory without create_directory, and a directory of another SR unless adopting', () => {
    const dir = path.join(root, 'sr');
    expect(() => attachSrDirectory({ dir, srId: 'a', createDirectory: false, adoptExisting: false })).toThrow(
      /does not exist on this host/,
    );
    attachSrDirectory({ dir, srId: 'a', createDirectory: true, adoptExisting: false });
    expect(() => attachSrDirectory({ dir, srId: 'b', createDirectory: false, adoptExisting: false })).toThrow(
      /already belongs to SR a/,
    );
    expect(attachSrDirectory({ dir, srId: 'b', createDirectory: false, adoptExisting: true }).srId).toBe('a');
    expect(srMarkerOf(dir)).toBe('a');
  });

  it('reports the space of the file system and the bytes the files occupy on disk', () => {
    const dir = path.join(root, 'sr');
    attachSrDirectory({ dir, srId: 'a', createDirectory: true, adoptExisting: false });
    fs.writeFileSync(path.join(dir, 'data'), Buffer.alloc(3 * 1024 * 1024, 1));
    fs.writeFileSync(path.join(dir, 'sparse'), Buffer.alloc(0));
    fs.truncateSync(path.join(dir, 'sparse'), 1024 ** 3);
    const stat = statSrDirectory(dir);
    expect(stat.physicalUtilisationBytes).toBeGreaterThanOrEqual(3 * 1024 * 1024);
    expect(stat.physicalUtilisationBytes).toBeLessThan(4 * 1024 * 1024);
    expect(stat.freeBytes).toBeLessThanOrEqual(stat.capacityBytes);
  });

  it('scans every file: qcow2 disks described, others refused with the reason, temporaries skipped', async () => {
    const dir = path.join(root, 'sr');
    attachSrDirectory({ dir, srId: 'a', createDirectory: true, adoptExisting: false });
    await disks.create({ dir, file: 'base.qcow2', virtualSizeBytes: 1024 * 1024 });
    await disks.create({ dir, file: 'top.qcow2', virtualSizeBytes: 0, backingFile: 'base.qcow2' });
    fs.writeFileSync(path.join(root, 'host-file'), 'secret');
    qemuImg(
      'create',
      '-q',
      '-f',
      'qcow2',
      '-b',
      path.join(root, 'host-file'),
      '-F',
      'raw',
      '-u',
      path.join(dir, 'evil.qcow2'),
      '1M',
    );
    fs.writeFileSync(path.join(dir, 'notes.txt'), 'not a disk');
    fs.symlinkSync(path.join(dir, 'base.qcow2'), path.join(dir, 'link.qcow2'));
    fs.writeFileSync(path.join(dir, `${TEMP_PREFIX}otherhost.1.ab.copy.x`), 'in progress elsewhere');
    const scanned = scanSrDirectory(dir, disks);
    expect(scanned.map((f) => f.file)).toEqual([
      'base.qcow2',
      'evil.qcow2',
      'link.qcow2',
      'notes.txt',
      'top.qcow2',
    ]);
    const byName = Object.fromEntries(scanned.map((f) => [f.file, f]));
    expect(byName['top.qcow2'].info).toMatchObject({
      backingFile: 'base.qcow2',
      virtualSizeBytes: 1024 * 1024,
    });
    expect(byName['evil.qcow2'].refusedReason).toContain('not a file of its SR');
    expect(byName['notes.txt'].refusedReason).toContain('no qcow2 header');
    expect(byName['link.qcow2'].refusedReason).toContain('symbolic link');
  });

  it('detaches by removing the marker, and the directory only when asked and empty', async () => {
    const dir = path.join(root, 'sr');
    attachSrDirectory({ dir, srId: 'a', createDirectory: true, adoptExisting: false });
    await disks.create({ dir, file: 'left.qcow2', virtualSizeBytes: 1024 * 1024 });
    expect(detachSrDirectory({ dir, removeDirectory: true })).toEqual({ removedDirectory: false });
    expect(fs.readdirSync(dir)).toEqual(['left.qcow2']);
    fs.rmSync(path.join(dir, 'left.qcow2'));
    expect(detachSrDirectory({ dir, removeDirectory: true })).toEqual({ removedDirectory: true });
    expect(fs.existsSync(dir)).toBe(false);
    expect(detachSrDirectory({ dir, removeDirectory: true })).toEqual({ removedDirectory: false });
  });
});
