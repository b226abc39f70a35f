import { DomainError, ErrorCode } from '../errors';
import {
  checkPhysicalSpace,
  checkVirtualAllocation,
  fullCopyBytes,
  SrSpace,
  virtualCeilingBytes,
} from './accounting';
import { formatBytes } from './names';
import { SrType } from './sr';

/**
 * The storage side of a VM's migration, planned as data: which disks stay on an SR the destination host
 * sees, which are copied (disks on a FILE SR of the source, with storage) and to which SR, and what blocks
 * the move. The storage service reads the records, asks this, and records the answer.
 *
 *   SHARED SR seen by the destination       stays
 *   SHARED SR not seen by the destination   SR_NOT_VISIBLE
 *   FILE SR of another host, writable       with_storage: copied to vdi_map's SR, else to the destination's
 *                                           FILE SR with the most free space; without: LOCAL_STORAGE
 *   FILE SR of another host, read-only      LOCAL_STORAGE (other VMs of the source may read it)
 */

export type DiskMigrationBlockerKind = 'LOCAL_STORAGE' | 'SR_NOT_VISIBLE' | 'INSUFFICIENT_STORAGE';

export interface DiskMigrationBlocker {
  kind: DiskMigrationBlockerKind;
  message: string;
  resourceKind: 'vdi' | 'sr';
  resourceId: string;
}

/** An SR as the planner needs it; `seenByDestination` and `usable` are read by the caller. */
export interface MigrationSr {
  id: string;
  name: string;
  type: SrType;
  /** FILE: the host whose directory it is. */
  hostId: string | null;
  /** Empty: pool-wide; else only that tenant's VDIs go there. */
  tenantId: string;
  /** VMs on the destination host may open its files (FILE of the destination, or SHARED it sees). */
  seenByDestination: boolean;
  /** AVAILABLE or DEGRADED, and not being destroyed: new files may go there. */
  usable: boolean;
  space: SrSpace;
}

export interface MigrationDisk {
  vbdId: string;
  vdiId: string;
  vdiName: string;
  tenantId: string;
  /** The VBD is RO or the VDI is read-only (an image base, a snapshot, an ISO). */
  readOnly: boolean;
  virtualSizeBytes: number;
  /** Bytes on disk of the VDI's whole chain: a flattened copy writes at most that (plus metadata). */
  chainPhysicalBytes: number;
  sr: MigrationSr;
}

export interface DiskMigrationPlanEntry {
  vbdId: string;
  vdiId: string;
  srId: string;
  /** Where the disk is copied; undefined when it stays on srId (or is blocked). */
  targetSrId?: string;
  /** Bytes to copy (the virtual size; the copy is thin); 0 when it stays. */
  sizeBytes: number;
}

export interface DiskMigrationPlan {
  disks: DiskMigrationPlanEntry[];
  blockers: DiskMigrationBlocker[];
  storageBytesToCopy: number;
}

export interface DiskMigrationInput {
  disks: readonly MigrationDisk[];
  /** Every SR the destination could receive copies in (vdi_map targets and the destination's FILE SRs). */
  srs: readonly MigrationSr[];
  destinationHostName: string;
  withStorage: boolean;
  /** VDI id -> SR id, already checked to name disks of the VM and existing SRs. */
  vdiMap: Readonly<Record<string, string>>;
}

export function planDiskMigration(input: DiskMigrationInput): DiskMigrationPlan {
  const { disks, srs, destinationHostName: dest, withStorage, vdiMap } = input;
  const blockers: DiskMigrationBlocker[] = [];
  const plan: DiskMigrationPlanEntry[] = [];
  const byId = new Map(srs.map((s) => [s.id, s]));
  /** What this plan puts in each target SR so far. */
  const taken = new Map<string, { virtual: number; physical: number; vdis: string[] }>();
  const take = (sr: MigrationSr, d: MigrationDisk) => {
    const t = taken.get(sr.id) ?? { virtual: 0, physical: 0, vdis: [] };
    t.virtual += d.virtualSizeBytes;
    t.physical += fullCopyBytes(d.virtualSizeBytes, d.chainPhysicalBytes);
    t.vdis.push(d.vdiName);
    taken.set(sr.id, t);
  };
  const available = (sr: MigrationSr) =>
    sr.space.freeBytes - sr.space.reservedPhysicalBytes - (taken.get(sr.id)?.physical ?? 0);
  const vdiBlocker = (d: MigrationDisk, kind: DiskMigrationBlockerKind, message: string) =>
    blockers.push({ kind, message, resourceKind: 'vdi', resourceId: d.vdiId });

  for (const d of disks) {
    const entry: DiskMigrationPlanEntry = { vbdId: d.vbdId, vdiId: d.vdiId, srId: d.sr.id, sizeBytes: 0 };
    plan.push(entry);
    const what = `vdi ${d.vdiName} (${d.vdiId})`;
    if (d.sr.seenByDestination) continue;
    if (d.sr.type === 'SHARED') {
      blockers.push({
        kind: 'SR_NOT_VISIBLE',
        message: `${what} is on SHARED SR ${d.sr.name}, which host ${dest} does not see: mount the share there and scan the SR`,
        resourceKind: 'sr',
        resourceId: d.sr.id,
      });
      continue;
    }
    if (d.readOnly) {
      vdiBlocker(
        d,
        'LOCAL_STORAGE',
        `${what} is read-only on FILE SR ${d.sr.name} of another host: other VMs there may read it, so it is not moved; copy it to a SHARED SR and attach the copy`,
      );
      continue;
    }
    if (!withStorage) {
      vdiBlocker(
        d,
        'LOCAL_STORAGE',
        `${what} is on FILE SR ${d.sr.name} of the source host: migrate with storage (its disks are copied to host ${dest}), or move the disk to a SHARED SR first`,
      );
      continue;
    }
    const target = vdiMap[d.vdiId]
      ? byId.get(vdiMap[d.vdiId])
      : bestFileSr(srs, d, available, (sr) => taken.get(sr.id));
    if (!target) {
      const own = srs.filter((s) => s.type === 'FILE' && s.seenByDestination);
      vdiBlocker(
        d,
        own.some((s) => s.usable && tenantMay(s, d)) ? 'INSUFFICIENT_STORAGE' : 'SR_NOT_VISIBLE',
        own.length
          ? `${what}: no FILE SR of host ${dest} can take it (${own.map((s) => `${s.name}: ${s.usable ? (tenantMay(s, d) ? 'full' : "another tenant's") : 'unusable'}`).join('; ')}): give vdi_map a SHARED SR, or free space`
          : `${what}: host ${dest} has no FILE SR to copy it to: create one there, or give vdi_map an SR host ${dest} sees`,
      );
      continue;
    }
    const refusal = targetRefusal(target, d, dest);
    if (refusal) {
      blockers.push({ kind: 'SR_NOT_VISIBLE', message: refusal, resourceKind: 'sr', resourceId: target.id });
      continue;
    }
    entry.targetSrId = target.id;
    entry.sizeBytes = d.virtualSizeBytes;
    take(target, d);
  }

  for (const [srId, t] of taken) {
    const sr = byId.get(srId) as MigrationSr;
    const what = `the copy of ${t.vdis.join(', ')} (${formatBytes(t.virtual)})`;
    for (const check of [
      () => checkVirtualAllocation(sr.space, t.virtual, what),
      () => checkPhysicalSpace(sr.space, t.physical, what),
    ]) {
      try {
        check();
      } catch (e) {
        if (!(e instanceof DomainError) || e.code !== ErrorCode.ResourceExhausted) throw e;
        blockers.push({
          kind: 'INSUFFICIENT_STORAGE',
          message: e.message,
          resourceKind: 'sr',
          resourceId: srId,
        });
        break;
      }
    }
  }
  return {
    disks: plan,
    blockers,
    storageBytesToCopy: plan.reduce((sum, p) => sum + p.sizeBytes, 0),
  };
}

function tenantMay(sr: Pick<MigrationSr, 'tenantId'>, d: Pick<MigrationDisk, 'tenantId'>): boolean {
  return sr.tenantId === '' || sr.tenantId === d.tenantId;
}

/** Why `sr` cannot receive the disk's copy, or undefined when it can. */
function targetRefusal(sr: MigrationSr, d: MigrationDisk, dest: string): string | undefined {
  const what = `vdi_map sends vdi ${d.vdiName} (${d.vdiId}) to SR ${sr.name}`;
  if (!sr.seenByDestination)
    return `${what}, which host ${dest} does not see${sr.type === 'FILE' ? ' (a FILE SR of another host)' : ''}: choose a FILE SR of host ${dest} or a SHARED SR it sees`;
  if (!sr.usable) return `${what}, which is not usable now: fix and scan the SR, or choose another`;
  if (!tenantMay(sr, d)) return `${what}, which is dedicated to another tenant: choose another SR`;
  return undefined;
}

/** The destination's usable FILE SR with the most free physical space left, if any fits the copy. */
function bestFileSr(
  srs: readonly MigrationSr[],
  d: MigrationDisk,
  available: (sr: MigrationSr) => number,
  planned: (sr: MigrationSr) => { virtual: number } | undefined,
): MigrationSr | undefined {
  const need = fullCopyBytes(d.virtualSizeBytes, d.chainPhysicalBytes);
  const fits = (s: MigrationSr) => {
    const ceiling = virtualCeilingBytes(s.space);
    const virtual = s.space.virtualAllocationBytes + (planned(s)?.virtual ?? 0) + d.virtualSizeBytes;
    return (
      (s.space.capacityBytes <= 0 || available(s) >= need) && (ceiling === undefined || virtual <= ceiling)
    );
  };
  return srs
    .filter((s) => s.type === 'FILE' && s.seenByDestination && s.usable && tenantMay(s, d) && fits(s))
    .sort((a, b) => available(b) - available(a) || a.name.localeCompare(b.name))[0];
}
