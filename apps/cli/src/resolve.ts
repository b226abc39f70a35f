import { computeV1, storageV1 } from '@flotilla/contracts';
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

/** VM id → name, for tables of migrations; empty when VMs cannot be read. */
export async function vmNames(cloud: Cloud): Promise<Map<string, string>> {
  try {
    const { vms } = await cloud.vms.call.listVms({ page: { pageSize: 1000, pageToken: '', filter: '' } });
    return new Map(vms.map((v) => [v.id, v.name]));
  } catch {
    return new Map();
  }
}

/** A host by id or name (HostService answers both), as its id. */
export async function findHostId(cloud: Cloud, ref: string): Promise<string> {
  const { host } = await cloud.hosts.call.getHost({ id: ref });
  if (!host) throw new CliError(`no host ${ref} (see \`flotilla host list\`)`, ExitCode.NotFound);
  return host.id;
}

/**
 * Finds a VDI (snapshots included) by id, or by name through ListVdis. Names are not unique: several
 * matches are a usage error listing their ids. `what` names the kind in messages ("VDI", "snapshot").
 */
export async function findVdi(cloud: Cloud, ref: string, what = 'VDI'): Promise<storageV1.Vdi> {
  if (looksLikeId(ref)) {
    const { vdi } = await cloud.vdis.call.getVdi({ id: ref });
    if (vdi) return vdi;
  }
  if (/[,=]/.test(ref))
    throw new CliError(`"${ref}" is neither a ${what} id nor a ${what} name`, ExitCode.Usage);
  const { vdis } = await cloud.vdis.call.listVdis({
    page: { pageSize: 100, pageToken: '', filter: `name=${ref}` },
  });
  const matches = vdis.filter((v) => v.name === ref);
  if (matches.length === 1) return matches[0];
  if (!matches.length)
    throw new CliError(
      `no ${what} named "${ref}" (see \`flotilla ${what === 'snapshot' ? 'snapshot' : 'vdi'} list\`)`,
      ExitCode.NotFound,
    );
  throw new CliError(
    `${matches.length} ${what}s are named "${ref}" (${matches.map((v) => v.id).join(', ')}): give the id`,
    ExitCode.Usage,
  );
}

/** Finds a VBD by id, or as "<vm>:<position>" (the VM by id or name, its device position). */
export async function findVbd(cloud: Cloud, ref: string): Promise<storageV1.Vbd> {
  const at = /^(.+):(\d{1,2})$/.exec(ref);
  if (!at || looksLikeId(ref)) {
    const { vbd } = await cloud.vbds.call.getVbd({ id: ref });
    if (vbd) return vbd;
    throw new CliError(`no VBD ${ref}`, ExitCode.NotFound);
  }
  const vm = await findVm(cloud, at[1]);
  const position = Number(at[2]);
  const { vbds } = await cloud.vbds.call.listVbds({
    page: { pageSize: 100, pageToken: '', filter: `vm_id=${vm.id}` },
  });
  const vbd = vbds.find((b) => b.devicePosition === position);
  if (!vbd)
    throw new CliError(
      `VM ${vm.name} has no disk at position ${position} (see \`flotilla vbd list --vm ${vm.name}\`)`,
      ExitCode.NotFound,
    );
  return vbd;
}
