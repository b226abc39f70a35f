import { realQemuMissing } from './real-qemu';

const warned = new Set<string>();

/**
 * `describe` for suites that need tools of the machine: where `missing` names what is absent they are
 * skipped with the reason printed, so `npm test` works on a machine with Node alone; with
 * FLOTILLA_REQUIRE_QEMU=1 (CI) a missing tool fails the suite instead: real behaviour is never skipped there.
 */
export function describeWhenAvailable(
  kind: string,
  missing: string | undefined,
  name: string,
  suite: () => void,
): void {
  if (!missing) return describe(name, suite);
  if (process.env.FLOTILLA_REQUIRE_QEMU === '1')
    return describe(name, () =>
      it(`needs ${kind} (FLOTILLA_REQUIRE_QEMU=1)`, () => {
        throw new Error(missing);
      }),
    );
  if (!warned.has(kind)) {
    warned.add(kind);
    process.stderr.write(`${kind} suites skipped on this machine: ${missing}\n`);
  }
  describe.skip(`${name} (skipped: ${missing})`, suite);
}

/** `describe` for suites that run real VMs (see describeWhenAvailable). */
export function describeWithRealQemu(name: string, suite: () => void): void {
  describeWhenAvailable('real QEMU', realQemuMissing(), name, suite);
}
