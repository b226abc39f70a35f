import { EntityManager } from 'typeorm';
import type { VdiAttachment } from '@flotilla/domain';
import type { Emit } from '@flotilla/platform';

/** One VBD of a VDI, as the VDI side needs to know it. */
export interface VbdOfVdi {
  vbdId: string;
  vdiId: string;
  vmId: string;
  /** DETACHED, ATTACHED or UNKNOWN (the VM's host stopped reporting: the disk may be in use). */
  state: 'DETACHED' | 'ATTACHED' | 'UNKNOWN';
  readWrite: boolean;
  /** The host the VDI is attached on while ATTACHED or UNKNOWN. */
  hostId: string | null;
}

/**
 * The seam between VDIs and VBDs (implemented by the VBD module over its records, in the same database and
 * transaction). A VDI is attached while a VBD of it is ATTACHED or UNKNOWN.
 */
export interface VbdHook {
  /** Every VBD of these VDIs, attached or not. */
  vbdsOf(m: EntityManager, vdiIds: readonly string[]): Promise<VbdOfVdi[]>;
  /** Removes the (detached) VBDs of these VDIs: the VDIs are being destroyed or forgotten. */
  removeVbdsOf(m: EntityManager, emit: Emit, vdiIds: readonly string[]): Promise<void>;
}

/** Until VBDs exist: no VDI is attached. */
export const noVbds: VbdHook = {
  vbdsOf: () => Promise.resolve([]),
  removeVbdsOf: () => Promise.resolve(),
};

/** How a VDI is attached, from its VBDs. */
export function attachmentOf(vbds: readonly VbdOfVdi[]): VdiAttachment {
  const live = vbds.filter((v) => v.state !== 'DETACHED');
  if (live.some((v) => v.readWrite)) return 'RW';
  return live.length ? 'RO' : 'NONE';
}

/** The running VM that writes the VDI, if one does: live snapshot, resize and coalesce go through it. */
export function liveWriter(vbds: readonly VbdOfVdi[]): { vmId: string; hostId: string } | undefined {
  for (const v of vbds)
    if (v.state === 'ATTACHED' && v.readWrite && v.hostId) return { vmId: v.vmId, hostId: v.hostId };
  return undefined;
}
