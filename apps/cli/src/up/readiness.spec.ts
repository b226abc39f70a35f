import { describeHost } from './readiness';

describe('describeHost', () => {
  it('says the driver, the accelerator and why', () => {
    expect(
      describeHost({
        name: 'host-1',
        driver: 'qemu',
        accelerator: 'tcg (kvm probe: no ready marker within 8 s)',
      }),
    ).toBe('host-1: qemu, accelerator tcg (kvm probe: no ready marker within 8 s)');
    expect(describeHost({ name: 'host-2', driver: 'qemu', accelerator: 'kvm (FLOTILLA_ACCEL=kvm)' })).toBe(
      'host-2: qemu, accelerator kvm (FLOTILLA_ACCEL=kvm)',
    );
  });

  it('says that a sim host runs no guest', () => {
    expect(
      describeHost({ name: 'h', driver: 'sim', accelerator: 'sim (sim driver: no guest runs)' }),
    ).toMatch(/^h: sim driver \(no guest runs/);
  });
});
