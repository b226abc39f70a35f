import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { guestCpuOf, parseCpuinfo } from './guest-cpu';
import { QemuDriver } from './qemu-driver';

// Pure: /proc/cpuinfo text in, the CPU guests see out. The driver's capabilities are read from a QemuDriver
// with the accelerator set by override, which starts no QEMU.

const cpuinfo = [
  'processor\t: 0',
  'vendor_id\t: AuthenticAMD',
  'model\t\t: 2',
  'model name\t: AMD EPYC   7B13 64-Core Processor',
  'flags\t\t: fpu vme sse sse2 avx2 avx2',
  'bugs\t\t: sysret_ss_attrs spectre_v1',
  '',
  'processor\t: 1',
  'model name\t: Another CPU',
  'flags\t\t: fpu',
  '',
].join('\n');

describe('parseCpuinfo', () => {
  it("reads the first processor's model name and flags, without repeats", () => {
    expect(parseCpuinfo(cpuinfo)).toEqual({
      modelName: 'AMD EPYC 7B13 64-Core Processor',
      flags: ['fpu', 'vme', 'sse', 'sse2', 'avx2'],
    });
  });

  it('gives empty values for text without them (another architecture, an unreadable file)', () => {
    expect(parseCpuinfo('processor\t: 0\nFeatures\t: fp asimd\n')).toEqual({ modelName: '', flags: [] });
    expect(parseCpuinfo('')).toEqual({ modelName: '', flags: [] });
  });
});

describe('guestCpuOf', () => {
  const host = parseCpuinfo(cpuinfo);

  it("gives guests the host's CPU and flags under KVM (-cpu host)", () => {
    expect(guestCpuOf('kvm', host)).toEqual({
      model: 'host: AMD EPYC 7B13 64-Core Processor',
      flags: ['fpu', 'vme', 'sse', 'sse2', 'avx2'],
    });
  });

  it('gives guests qemu64 and no flags under TCG, whatever the host CPU', () => {
    expect(guestCpuOf('tcg', host)).toEqual({ model: 'qemu64', flags: [] });
  });
});

describe('QemuDriver capabilities', () => {
  it('report the CPU guests get under the chosen accelerator, read from cpuinfo', async () => {
    const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-cpu-'));
    try {
      for (const [accelerator, model, flags] of [
        ['kvm', 'host: AMD EPYC 7B13 64-Core Processor', ['fpu', 'vme', 'sse', 'sse2', 'avx2']],
        ['tcg', 'qemu64', []],
      ] as const) {
        const driver = await QemuDriver.create({ stateDir, accelerator, readCpuinfo: () => cpuinfo });
        expect(driver.capabilities()).toMatchObject({ accelerator, cpuModel: model, cpuFlags: flags });
        await driver.close();
      }
    } finally {
      fs.rmSync(stateDir, { recursive: true, force: true });
    }
  });
});
