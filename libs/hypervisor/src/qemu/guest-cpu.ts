import { TCG_CPU_MODEL } from './qemu-command';

/** The host CPU as /proc/cpuinfo describes it. */
export interface HostCpu {
  /** "model name" of the first processor; empty where the kernel gives none. */
  modelName: string;
  /** "flags" of the first processor, in the kernel's order, without repeats. */
  flags: string[];
}

/** The CPU guests of this host see (DriverCapabilities.cpuModel, cpuFlags). */
export interface GuestCpu {
  model: string;
  flags: string[];
}

/**
 * Reads the first processor's model name and flags from /proc/cpuinfo text (x86: every processor of a
 * host lists the same). Text without them (another architecture, an unreadable file) gives empty values.
 */
export function parseCpuinfo(text: string): HostCpu {
  const firstProcessor = text.split(/\n\s*\n/)[0] ?? '';
  const field = (name: string) => {
    const line = firstProcessor.split('\n').find((l) => l.split(':')[0]?.trim() === name);
    return line === undefined ? '' : line.slice(line.indexOf(':') + 1).trim();
  };
  return {
    modelName: field('model name').replace(/\s+/g, ' '),
    flags: [...new Set(field('flags').split(/\s+/).filter(Boolean))],
  };
}

/**
 * What guests see under `accelerator`: under TCG the fixed model QEMU emulates (its features are the
 * model's, whatever the host has: no flags to compare); under KVM `-cpu host`, the host's own CPU.
 */
export function guestCpuOf(accelerator: 'kvm' | 'tcg', host: HostCpu): GuestCpu {
  return accelerator === 'kvm'
    ? { model: `host: ${host.modelName || 'unknown model'}`, flags: host.flags }
    : { model: TCG_CPU_MODEL, flags: [] };
}
