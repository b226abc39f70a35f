import { findOnPath } from '../qemu/real-qemu';
import { describeWhenAvailable } from '../qemu/real-qemu.testing';

/** Why qemu-img suites cannot run here (a missing tool and how to get it), or undefined when they can. */
export function qemuImgMissing(searchPath = process.env.PATH ?? ''): string | undefined {
  const missing = ['qemu-img', 'qemu-io', 'prlimit'].filter((tool) => !findOnPath(tool, searchPath));
  return missing.length
    ? `${missing.join(', ')} not on PATH: on Debian, apt-get install qemu-utils util-linux (.ci/run does)`
    : undefined;
}

/** `describe` for suites that run the real qemu-img on real files (see describeWhenAvailable). */
export function describeWithQemuImg(name: string, suite: () => void): void {
  describeWhenAvailable('qemu-img', qemuImgMissing(), name, suite);
}
