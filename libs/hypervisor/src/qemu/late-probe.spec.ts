import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DriverVmSpec } from '../driver';
import { demoImageForTests, demoImagePaths, demoProbeGuest } from './demo-image';
import { ProbeGuest } from './accel-probe';
import { QemuDriver } from './qemu-driver';
import { describeWithRealQemu } from './real-qemu.testing';

describeWithRealQemu('late accelerator probe', () => {
  // Real QEMU: an agent that started before its host had a probe kernel says so, and probes for real at the
  // first VM start after the kernel arrived (here: TCG, since this machine's /dev/kvm runs no stock kernel;
  // on a normal KVM host: KVM) instead of staying on an untested verdict until a restart.

  let stateDir: string;

  afterAll(() => {
    if (stateDir) fs.rmSync(stateDir, { recursive: true, force: true });
  });

  it('probes when the probe guest arrives after the driver started, and uses the new verdict', async () => {
    const image = await demoImageForTests();
    stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-lp-'));
    const host: { probeGuest?: ProbeGuest } = {};
    const driver = await QemuDriver.create({
      stateDir,
      accelerator: 'auto',
      probeGuest: async () => host.probeGuest,
    });
    expect(driver.capabilities().acceleratorReason).toContain('no probe kernel');

    host.probeGuest = demoProbeGuest(image.catalogueDir, image);
    const paths = demoImagePaths(image.catalogueDir, image);
    const spec: DriverVmSpec = {
      vmId: `late-probe-${process.pid}`,
      name: 'late-probe',
      vcpus: 1,
      memoryMib: 128,
      boot: { kind: 'kernel', kernel: paths.kernel, initrd: paths.initrd, cmdline: 'console=ttyS0 panic=-1' },
      disks: [],
      nics: [],
    };
    try {
      expect((await driver.start(spec)).powerState).toBe('RUNNING');
      const caps = driver.capabilities();
      expect(caps.acceleratorReason).not.toContain('no probe kernel');
      expect(caps.acceleratorReason).toMatch(/kvm probe|\/dev\/kvm/);
    } finally {
      await driver.destroy(spec.vmId);
      await driver.close();
    }
  }, 120_000);
});
