import { computeV1 } from '@flotilla/contracts';
import { looksLikeId } from './args';
import type { Cloud } from './cloud';
import { CliError, ExitCode } from './errors';

/** Finds a VM by id, or by name through ListVms with the filter name=<name>. */
export async function findVm(cloud: Cloud, ref: string): Promise<computeV1.Vm> {
  if (looksLikeId(ref)) {
    const { vm } = await cloud.vms.call.getVm({ id: ref });
    if (vm) return vm;
  }
  if (/[,=]/.test(ref)) throw new CliError(`"${ref}" is neither a VM id nor a VM name`, ExitCode.Usage);
  const { vms } = await cloud.vms.call.listVms({
    page: { pageSize: 10, pageToken: '', filter: `name=${ref}` },
  });
  const matches = vms.filter((v) => v.name === ref);
  if (matches.length === 1) return matches[0];
  if (!matches.length)
    throw new CliError(`no VM named "${ref}" (see \`flotilla vm list\`)`, ExitCode.NotFound);
  throw new CliError(
    `${matches.length} VMs are named "${ref}" (${matches.map((v) => v.id).join(', ')}): give the id`,
    ExitCode.Usage,
  );
}

/** Host id → name, for showing where VMs run; empty when the token may not read hosts. */
export async function hostNames(cloud: Cloud): Promise<Map<string, string>> {
  try {
    const { hosts } = await cloud.hosts.call.listHosts({
      page: { pageSize: 1000, pageToken: '', filter: '' },
    });
    return new Map(hosts.map((h) => [h.id, h.name]));
  } catch {
    // Tenants below pool-operator may not read hosts: show ids instead.
    return new Map();
  }
}
