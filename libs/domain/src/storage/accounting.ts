import { DomainError, ErrorCode } from '../errors';
import { formatBytes } from './names';

/**
 * Space of one SR as the storage service last measured and reserved it. Virtual allocation counts the
 * guest-writable VDIs (snapshots, image bases and hidden chain nodes are frozen: their bytes are in the
 * physical utilisation); reservedPhysicalBytes is what in-flight full copies and imports may still write.
 */
export interface SrSpace {
  name: string;
  /** Size of the file system; 0 when not measured yet (then no ceiling is checked). */
  capacityBytes: number;
  /** Free bytes of the file system as last measured. */
  freeBytes: number;
  /** 0: no ceiling. */
  overprovisionRatio: number;
  virtualAllocationBytes: number;
  reservedPhysicalBytes: number;
}

/** The most virtual size the SR may hold, or undefined for no ceiling. */
export function virtualCeilingBytes(
  sr: Pick<SrSpace, 'capacityBytes' | 'overprovisionRatio'>,
): number | undefined {
  if (sr.overprovisionRatio <= 0 || sr.capacityBytes <= 0) return undefined;
  return Math.floor(sr.capacityBytes * sr.overprovisionRatio);
}

/**
 * RESOURCE_EXHAUSTED when adding `addBytes` of writable virtual size would pass the overprovision
 * ceiling (capacity × ratio). Checked in the transaction that records the new size, before any file.
 */
export function checkVirtualAllocation(sr: SrSpace, addBytes: number, what: string): void {
  const ceiling = virtualCeilingBytes(sr);
  if (ceiling === undefined || addBytes <= 0) return;
  if (sr.virtualAllocationBytes + addBytes <= ceiling) return;
  throw new DomainError(
    ErrorCode.ResourceExhausted,
    `SR ${sr.name}: ${what} needs ${formatBytes(addBytes)} of virtual allocation, but the SR's overprovision ceiling (capacity ${formatBytes(sr.capacityBytes)} × ratio ${sr.overprovisionRatio} = ${formatBytes(ceiling)}) leaves ${formatBytes(Math.max(0, ceiling - sr.virtualAllocationBytes))}: choose a smaller size or another SR, destroy unused VDIs, or raise the SR's overprovision_ratio`,
    { resource: `sr ${sr.name}`, metadata: { limit: 'overprovision_ceiling' } },
  );
}

/**
 * RESOURCE_EXHAUSTED when a full copy or import of up to `needBytes` does not fit the SR's free physical
 * space minus what other in-flight copies reserved.
 */
export function checkPhysicalSpace(sr: SrSpace, needBytes: number, what: string): void {
  if (sr.capacityBytes <= 0 || needBytes <= 0) return;
  const available = sr.freeBytes - sr.reservedPhysicalBytes;
  if (needBytes <= available) return;
  throw new DomainError(
    ErrorCode.ResourceExhausted,
    `SR ${sr.name}: ${what} may write ${formatBytes(needBytes)}, but the SR has ${formatBytes(Math.max(0, available))} of free physical space (${formatBytes(sr.freeBytes)} free, ${formatBytes(sr.reservedPhysicalBytes)} reserved by copies in progress): free space or choose another SR`,
    { resource: `sr ${sr.name}`, metadata: { limit: 'free_physical_space' } },
  );
}

/**
 * What a full (flattened) copy of a chain may write: at most the virtual size, and at most what the chain
 * holds on disk (qemu-img convert writes only allocated clusters, plus metadata).
 */
export function fullCopyBytes(virtualSizeBytes: number, chainPhysicalBytes: number): number {
  const metadata = 1024 * 1024 + Math.ceil(virtualSizeBytes / (64 * 1024)) * 8;
  return Math.min(virtualSizeBytes + metadata, chainPhysicalBytes + metadata);
}
