import { findOnPath } from '../qemu/real-qemu';

let warned = false;

/** Why qemu-img suites cannot run here (a missing tool and how to get it), or undefined when they can. */
export function qemuImgMissing(searchPath = process.env.PATH ?? ''): string | undefined {
  const missing = ['qemu-img', 'qemu-io', 'prlimit'].filter((tool) => !findOnPath(tool, searchPath));
  return missing.length
    ? `${missing.join(', ')} not on PATH: on Debian, apt-get install qemu-utils util-linux (.ci/run does)`
    : undefined;
}

/**
 * `describe` for suites that run the real qemu-img on real files. Skipped with the reason printed where it
 * is missing; with FLOTILLA_REQUIRE_QEMU=1 (CI) a missing tool fails the suite instead.
 */
export function describeWithQemuImg(name: string, suite: () => void): void {
  const missing = qemuImgMissing();
  if (!missing) return describe(name, suite);
  if (process.env.FLOTILLA_REQUIRE_QEMU === '1')
    return describe(name, () =>
      it('needs qemu-img (FLOTILLA_REQUIRE_QEMU=1)', () => {
        throw new Error(missing);
      }),
    );
  if (!warned) {
    warned = true;
    process.stderr.write(`qemu-img suites skipped on this machine: ${missing}\n`);
  }
  describe.skip(`${name} (skipped: ${missing})`, suite);
}
