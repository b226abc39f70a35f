import * as fs from 'node:fs';
import * as path from 'node:path';

/** The executable's path when `name` is on PATH, else undefined. */
export function findOnPath(name: string, searchPath = process.env.PATH ?? ''): string | undefined {
  for (const dir of searchPath.split(path.delimiter).filter(Boolean)) {
    const candidate = path.join(dir, name);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      if (fs.statSync(candidate).isFile()) return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** What the real-VM tests run: QEMU itself, and the Debian tools the demo guest is built with. */
const needed = ['qemu-system-x86_64', 'qemu-img', 'apt-get', 'dpkg-deb'];

/**
 * Why this machine cannot run real VMs for the tests (a missing tool, and how to get it), or undefined
 * when it can. `.ci/run` installs everything and sets FLOTILLA_REQUIRE_QEMU=1, so CI never skips.
 */
export function realQemuMissing(searchPath = process.env.PATH ?? ''): string | undefined {
  const missing = needed.filter((tool) => !findOnPath(tool, searchPath));
  return missing.length
    ? `${missing.join(', ')} not on PATH: on Debian, apt-get install qemu-system-x86 qemu-utils busybox-static syslinux syslinux-common mtools dosfstools (.ci/run does)`
    : undefined;
}
