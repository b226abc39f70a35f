import { cpuIncompatibility, HostCpuView } from './cpu-compatibility';

// Pure: whether a running guest's CPU carries from one host to another of the same driver and accelerator.

const cpu = (name: string, cpuModel: string, cpuFlags: string[] = []): HostCpuView => ({
  name,
  cpuModel,
  cpuFlags,
});

describe('cpuIncompatibility', () => {
  it('lets a guest move between hosts giving one fixed model (TCG: qemu64 everywhere)', () => {
    expect(cpuIncompatibility('web-1', cpu('h1', 'qemu64'), cpu('h2', 'qemu64'))).toBeUndefined();
  });

  it('blocks a guest from a host giving another fixed model, naming both and what to do', () => {
    expect(cpuIncompatibility('web-1', cpu('h1', 'qemu64'), cpu('h2', 'max'))).toBe(
      "host h2 gives guests CPU model max and vm web-1 runs with qemu64 on host h1: a running guest keeps the CPU it booted with. Choose a host giving qemu64, or restart the VM on host h2 (shut it down, then start it there: it boots with that host's CPU)",
    );
  });

  it("lets a guest move to a host with every flag of the source's, whatever its model name (KVM)", () => {
    expect(
      cpuIncompatibility(
        'web-1',
        cpu('h1', 'host: Xeon 6338', ['sse4_2', 'avx2']),
        cpu('h2', 'host: Xeon 8380', ['avx512f', 'avx2', 'sse4_2']),
      ),
    ).toBeUndefined();
  });

  it('lists the flags the destination lacks, the first 10 and their count', () => {
    const flags = Array.from({ length: 13 }, (_, i) => `f${i}`);
    const why = cpuIncompatibility(
      'web-1',
      cpu('h1', 'host: New', ['fpu', ...flags]),
      cpu('h2', 'host: Old', ['fpu']),
    );
    expect(why).toContain(
      'host h2 (host: Old) lacks 13 CPU flags that vm web-1 sees on host h1 (host: New): f0, f1, f2, f3, f4, f5, f6, f7, f8, f9 (first 10 of 13);',
    );
    expect(why).toContain('Choose a host of the same CPU family, or restart the VM on host h2');
    expect(
      cpuIncompatibility('web-1', cpu('h1', 'host: New', ['fpu', 'avx2']), cpu('h2', 'host: Old', ['fpu'])),
    ).toContain('lacks 1 CPU flag that vm web-1 sees on host h1 (host: New): avx2;');
  });

  it('does not judge a host that reported no CPU (an agent older than the report)', () => {
    expect(cpuIncompatibility('web-1', cpu('h1', ''), cpu('h2', 'qemu64'))).toBeUndefined();
    expect(cpuIncompatibility('web-1', cpu('h1', 'host: New', ['avx2']), cpu('h2', ''))).toBeUndefined();
  });
});
