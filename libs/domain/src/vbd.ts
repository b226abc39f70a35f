import { DomainError, ErrorCode, invalidArgument } from './errors';

/** A VBD (XAPI's virtual block device): the attachment of a VDI to a VM at a device position. */
export type VbdType = 'DISK' | 'CDROM';
export type VbdMode = 'RO' | 'RW';
export type VbdState = 'DETACHED' | 'ATTACHED' | 'UNKNOWN';
export type VbdOperation = 'PLUG' | 'UNPLUG' | 'DESTROY';

/** XAPI's userdevice range: the guest sees at most 16 disks, position 0 boots by default. */
export const vbdPositions = { min: 0, max: 15 } as const;

export interface VbdLifecycleView {
  id: string;
  state: VbdState;
  unpluggable: boolean;
  /** The plug or unplug in flight, if any: one at a time per VBD. */
  currentOperationId?: string | null;
}

/**
 * The VBD lifecycle as a table: which operations each state allows (XAPI's xapi_vbd_helpers). Whether the
 * VM runs is compute's to say and is checked when a plug or unplug is asked; this table is what the VBD
 * record alone allows, and is published as allowed_operations. UNKNOWN (the VM's host stopped reporting)
 * allows nothing: the disk may still be in use.
 */
const allowedByState: Record<VbdState, readonly VbdOperation[]> = {
  DETACHED: ['PLUG', 'DESTROY'],
  ATTACHED: ['UNPLUG'],
  UNKNOWN: [],
};

export function vbdAllowedOperations(vbd: Omit<VbdLifecycleView, 'id'>): VbdOperation[] {
  if (vbd.currentOperationId) return [];
  return allowedByState[vbd.state].filter((op) => op !== 'UNPLUG' || vbd.unpluggable);
}

/** Throws FAILED_PRECONDITION naming the VBD's state and what to do when `op` is not allowed now. */
export function assertVbdOperationAllowed(vbd: VbdLifecycleView, op: VbdOperation): void {
  if (vbd.currentOperationId)
    throw new DomainError(
      ErrorCode.FailedPrecondition,
      `vbd ${vbd.id} has operation ${vbd.currentOperationId} in progress: wait for it and retry`,
      { resource: `vbd ${vbd.id}`, metadata: { current_operation_id: vbd.currentOperationId } },
    );
  if (op === 'UNPLUG' && vbd.state === 'ATTACHED' && !vbd.unpluggable)
    throw new DomainError(
      ErrorCode.FailedPrecondition,
      `vbd ${vbd.id} is not unpluggable (the guest cannot lose it, e.g. its root disk): shut the VM down instead`,
      { resource: `vbd ${vbd.id}` },
    );
  if (!allowedByState[vbd.state].includes(op))
    throw new DomainError(
      ErrorCode.FailedPrecondition,
      `vbd ${vbd.id} is ${vbd.state}: ${op} is not allowed${
        op === 'DESTROY' ? '; unplug it or halt its VM first' : ''
      }`,
      { resource: `vbd ${vbd.id}`, metadata: { state: vbd.state } },
    );
}

export function validateDevicePosition(field: string, position: number): number {
  if (!Number.isInteger(position) || position < vbdPositions.min || position > vbdPositions.max)
    throw invalidArgument(
      field,
      `${position} is out of range: use ${vbdPositions.min}..${vbdPositions.max}, or leave it out for the lowest free position`,
    );
  return position;
}

/** The lowest position no VBD of the VM holds; undefined when all 16 are taken. */
export function lowestFreePosition(taken: Iterable<number>): number | undefined {
  const used = new Set(taken);
  for (let p = vbdPositions.min; p <= vbdPositions.max; p++) if (!used.has(p)) return p;
  return undefined;
}

/**
 * The mode a new VBD gets: RO for CD-ROMs and read-only VDIs unless asked otherwise, RW otherwise. RW on a
 * CD-ROM is INVALID_ARGUMENT; RW on a read-only VDI (snapshot, image base) is FAILED_PRECONDITION.
 */
export function resolveVbdMode(
  requested: VbdMode | undefined,
  type: VbdType,
  vdi: { id: string; readOnly: boolean } | undefined,
): VbdMode {
  if (type === 'CDROM') {
    if (requested === 'RW') throw invalidArgument('mode', 'a CD-ROM is read-only: use VBD_MODE_RO');
    return 'RO';
  }
  if (requested === 'RW' && vdi?.readOnly)
    throw new DomainError(
      ErrorCode.FailedPrecondition,
      `vdi ${vdi.id} is read-only (a snapshot or an image base): attach it RO, or clone it for a writable disk`,
      { field: 'mode', resource: `vdi ${vdi.id}` },
    );
  return requested ?? (vdi?.readOnly ? 'RO' : 'RW');
}

/**
 * True when the VBD makes its VM a writer of the VDI that excludes every other writer: the rule "one
 * writer unless sharable". The storage database enforces it with a unique index over these VBDs.
 */
export function isExclusiveWriter(mode: VbdMode, vdi: { sharable: boolean }): boolean {
  return mode === 'RW' && !vdi.sharable;
}

/**
 * Guest device names of a VM's disks in device order as the qemu driver presents them: virtio disks
 * vda, vdb, … and CD-ROMs sr0, sr1, ….
 */
export function guestDeviceNames(vbds: ReadonlyArray<{ type: VbdType; devicePosition: number }>): string[] {
  let disks = 0;
  let cdroms = 0;
  return [...vbds]
    .map((v, i) => ({ v, i }))
    .sort((a, b) => a.v.devicePosition - b.v.devicePosition)
    .map(({ v, i }) => ({ i, name: v.type === 'CDROM' ? `sr${cdroms++}` : diskName(disks++) }))
    .sort((a, b) => a.i - b.i)
    .map((x) => x.name);
}

function diskName(index: number): string {
  return `vd${String.fromCharCode('a'.charCodeAt(0) + index)}`;
}
