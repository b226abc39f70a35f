/**
 * Whether a running guest's CPU carries from one host to another of the same driver and accelerator. A
 * guest keeps the CPU it booted with: under TCG the model QEMU emulates (qemu64 everywhere), under KVM the
 * host's own (-cpu host), whose feature flags the guest may use at any moment. So where the source reports
 * flags the destination must have each of them (the model name may differ: a newer CPU of the family
 * serves); where it reports none the model fixes the features and the models must match. A host that
 * reported no CPU (an agent older than the report) is not judged.
 */

export interface HostCpuView {
  name: string;
  cpuModel: string;
  cpuFlags: string[];
}

/** Missing flags named in a blocker; the rest are counted. */
const flagsShown = 10;

/** Why a guest running on `source` cannot run on `destination`, or undefined when it can. */
export function cpuIncompatibility(
  vmName: string,
  source: HostCpuView,
  destination: HostCpuView,
): string | undefined {
  if (!source.cpuModel || !destination.cpuModel) return undefined;
  const restart = `, or restart the VM on host ${destination.name} (shut it down, then start it there: it boots with that host's CPU)`;
  if (source.cpuFlags.length) {
    const has = new Set(destination.cpuFlags);
    const missing = source.cpuFlags.filter((f) => !has.has(f));
    if (!missing.length) return undefined;
    const shown = missing.slice(0, flagsShown).join(', ');
    const more = missing.length > flagsShown ? ` (first ${flagsShown} of ${missing.length})` : '';
    return `host ${destination.name} (${destination.cpuModel}) lacks ${missing.length} CPU flag${missing.length === 1 ? '' : 's'} that vm ${vmName} sees on host ${source.name} (${source.cpuModel}): ${shown}${more}; a running guest may use any of them. Choose a host of the same CPU family${restart}`;
  }
  if (source.cpuModel === destination.cpuModel) return undefined;
  return `host ${destination.name} gives guests CPU model ${destination.cpuModel} and vm ${vmName} runs with ${source.cpuModel} on host ${source.name}: a running guest keeps the CPU it booted with. Choose a host giving ${source.cpuModel}${restart}`;
}
