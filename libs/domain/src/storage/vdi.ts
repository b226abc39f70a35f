import { DomainError, ErrorCode } from '../errors';

export type VdiState = 'CREATING' | 'READY' | 'MISSING';
export type VdiOperation =
  'SNAPSHOT' | 'CLONE' | 'COPY' | 'RESIZE' | 'REVERT' | 'EXPORT' | 'DESTROY' | 'ATTACH';

/** How a VDI is attached right now, from its VBDs: none, only read-only, or read-write by a running VM. */
export type VdiAttachment = 'NONE' | 'RO' | 'RW';

export interface VdiLifecycleView {
  id: string;
  name: string;
  state: VdiState;
  readOnly: boolean;
  isSnapshot: boolean;
  /** False for hidden chain nodes: no RPC may change them. */
  managed: boolean;
  /** The base VDI of a catalogue image: destroy and forget are refused while the image exists. */
  imageBase: boolean;
  attachment: VdiAttachment;
  /** The SR is AVAILABLE or DEGRADED: its hosts can do file work. */
  srUsable: boolean;
  currentOperationId?: string | null;
}

/**
 * The VDI lifecycle as one table (XAPI's xapi_vdi_helpers): what a READY VDI allows, narrowed by being
 * read-only, attached, an image base or busy. Published as allowed_operations and checked by one guard.
 */
export function vdiAllowedOperations(v: Omit<VdiLifecycleView, 'id' | 'name'>): VdiOperation[] {
  if (!v.managed || v.state === 'CREATING' || v.currentOperationId || !v.srUsable) return [];
  if (v.state === 'MISSING') return v.imageBase ? [] : ['DESTROY'];
  const ops: VdiOperation[] = [];
  const writable = !v.readOnly;
  if (writable) ops.push('SNAPSHOT');
  if (!(writable && v.attachment === 'RW')) ops.push('CLONE');
  if (v.attachment !== 'RW') ops.push('COPY', 'EXPORT');
  if (writable) ops.push('RESIZE');
  if (writable && v.attachment === 'NONE') ops.push('REVERT');
  if (v.attachment === 'NONE' && !v.imageBase) ops.push('DESTROY');
  ops.push('ATTACH');
  return ops;
}

const verb: Record<VdiOperation, string> = {
  SNAPSHOT: 'snapshotted',
  CLONE: 'cloned',
  COPY: 'copied',
  RESIZE: 'resized',
  REVERT: 'reverted',
  EXPORT: 'exported',
  DESTROY: 'destroyed',
  ATTACH: 'attached',
};

/** FAILED_PRECONDITION saying what blocks `op` on this VDI and what to do instead. */
export function assertVdiOperationAllowed(v: VdiLifecycleView, op: VdiOperation): void {
  if (vdiAllowedOperations(v).includes(op)) return;
  const fail = (why: string) =>
    new DomainError(ErrorCode.FailedPrecondition, `vdi ${v.name} (${v.id}) cannot be ${verb[op]}: ${why}`, {
      resource: `vdi ${v.id}`,
      ...(v.currentOperationId ? { metadata: { current_operation_id: v.currentOperationId } } : {}),
    });
  if (!v.managed) throw fail('it is a hidden chain node that Flotilla manages itself');
  if (v.state === 'CREATING')
    throw fail(
      `it is CREATING${v.currentOperationId ? ` (operation ${v.currentOperationId})` : ''}: wait for that operation${op === 'DESTROY' ? ', or cancel it instead' : ''}`,
    );
  if (v.currentOperationId)
    throw fail(`operation ${v.currentOperationId} is in progress on it: wait for it and retry`);
  if (!v.srUsable) throw fail('its SR is UNAVAILABLE: no host sees it; fix the SR and scan it');
  if (v.state === 'MISSING')
    throw fail('it is MISSING (its file was not found by the last scan): only destroy is allowed');
  if (v.readOnly && (op === 'SNAPSHOT' || op === 'RESIZE' || op === 'REVERT'))
    throw fail(
      `it is read-only (${v.isSnapshot ? 'a snapshot' : v.imageBase ? 'an image base' : 'read-only'}): clone it and ${op === 'SNAPSHOT' ? 'snapshot' : op === 'RESIZE' ? 'resize' : 'revert'} the clone instead`,
    );
  if (v.imageBase && op === 'DESTROY')
    throw fail('it is the base of a catalogue image: deregister the image first');
  if (v.attachment === 'RW' && (op === 'COPY' || op === 'EXPORT' || op === 'CLONE'))
    throw fail(`it is attached read-write to a running VM: snapshot it and ${op.toLowerCase()} the snapshot`);
  if (v.attachment !== 'NONE' && (op === 'DESTROY' || op === 'REVERT'))
    throw fail(
      `a VBD of it is attached: ${op === 'REVERT' ? 'shut the VM down first' : 'unplug it or halt the VM first'}`,
    );
  throw fail(`not allowed while ${v.state}`);
}
