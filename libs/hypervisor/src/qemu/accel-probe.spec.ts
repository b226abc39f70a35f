import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { bootProbeGuest, chooseAccelerator, ProbeGuest } from './accel-probe';
import { demoImageForTests, demoImagePaths, PROBE_MARKER } from './demo-image';
import { describeWithRealQemu } from './real-qemu.testing';

describeWithRealQemu('accelerator probe', () => {
  // Real: the probe boots the demo kernel (demo.probe=1) in a real QEMU. Nothing is faked; which verdict the
  // host gives depends on the host, so the KVM assertion only applies where the CPU has no vmx/svm.

  jest.setTimeout(120_000);

  describe('accelerator probe', () => {
    let dir: string;
    let guest: ProbeGuest;
    beforeAll(async () => {
      const built = await demoImageForTests();
      const { kernel, initrd } = demoImagePaths(built.catalogueDir, built);
      guest = { kernel, initrd, cmdline: 'console=ttyS0 panic=-1 demo.probe=1', marker: PROBE_MARKER };
    });
    beforeEach(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-accel-'))));
    afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

    it('takes an override as given, without probing, and says so', async () => {
      expect(await chooseAccelerator({ stateDir: dir, choice: 'tcg', guest })).toEqual({
        accelerator: 'tcg',
        reason: 'FLOTILLA_ACCEL=tcg',
      });
      expect(await chooseAccelerator({ stateDir: dir, choice: 'kvm' })).toEqual({
        accelerator: 'kvm',
        reason: 'FLOTILLA_ACCEL=kvm',
      });
      expect(fs.readdirSync(dir)).toEqual([]);
    });

    it('picks TCG without a probe kernel, and says why', async () => {
      const verdict = await chooseAccelerator({ stateDir: dir });
      expect(verdict.accelerator).toBe('tcg');
      expect(verdict.reason).toMatch(/^kvm probe: (no probe kernel|\/dev\/kvm does not exist)/);
    });

    it('picks TCG when /dev/kvm is absent', async () => {
      const verdict = await chooseAccelerator({ stateDir: dir, guest, kvmDevice: path.join(dir, 'no-kvm') });
      expect(verdict).toEqual({
        accelerator: 'tcg',
        reason: `kvm probe: ${path.join(dir, 'no-kvm')} does not exist`,
      });
    });

    it('has a probe guest that prints its marker under TCG: a KVM miss is the accelerator, not the guest', async () => {
      const verdict = await bootProbeGuest({ stateDir: dir, guest, accelerator: 'tcg', deadlineMs: 60_000 });
      expect(verdict.reason).toMatch(/^tcg probe: guest ready in \d+ ms$/);
    });

    it('decides by booting the guest under KVM, and caches the verdict by QEMU, kernel and /dev/kvm', async () => {
      const verdict = await chooseAccelerator({ stateDir: dir, guest });
      expect(verdict.reason).toMatch(/^kvm probe: /);
      const canVirtualise = /\b(vmx|svm)\b/.test(fs.readFileSync('/proc/cpuinfo', 'utf8'));
      // This host kind (HOST-NOTES §1): /dev/kvm is PVM, stock kernels do not run in it.
      if (!canVirtualise) expect(verdict.accelerator).toBe('tcg');
      const cache = JSON.parse(fs.readFileSync(path.join(dir, 'accel-probe.json'), 'utf8')) as {
        key: string;
      };
      expect(cache.key).toContain('QEMU emulator version');
      expect(cache.key).toContain(guest.kernel);

      // Cached: a second call gives the same verdict (reason included) without booting anything.
      expect(await chooseAccelerator({ stateDir: dir, guest })).toEqual(verdict);
      expect(fs.readdirSync(dir).filter((f) => f.startsWith('.accel-probe-'))).toEqual([]);

      // Another kernel is another question: the key changes.
      const otherKernel = path.join(dir, 'vmlinuz-copy');
      fs.copyFileSync(guest.kernel, otherKernel);
      await chooseAccelerator({ stateDir: dir, guest: { ...guest, kernel: otherKernel } });
      expect(JSON.parse(fs.readFileSync(path.join(dir, 'accel-probe.json'), 'utf8')).key).toContain(
        otherKernel,
      );
    });
  });
});
