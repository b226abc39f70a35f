import { realQemuMissing } from './real-qemu';

let warned = false;

/**
 * `describe` for suites that run real VMs. Where QEMU (or the Debian tools of the demo guest) is missing
 * they are skipped with the reason printed, so `npm test` works on a machine with Node alone; with
 * FLOTILLA_REQUIRE_QEMU=1 (CI) a missing tool fails the suite instead: real behaviour is never skipped there.
 */
export function describeWithRealQemu(name: string, suite: () => void): void {
  const missing = realQemuMissing();
  if (!missing) return describe(name, suite);
  if (process.env.FLOTILLA_REQUIRE_QEMU === '1')
    return describe(name, () =>
      it('needs real QEMU (FLOTILLA_REQUIRE_QEMU=1)', () => {
        throw new Error(missing);
      }),
    );
  if (!warned) {
    warned = true;
    process.stderr.write(`real-VM suites skipped on this machine: ${missing}\n`);
  }
  describe.skip(`${name} (skipped: ${missing})`, suite);
}
