import type { Metadata } from '@grpc/grpc-js';
import { computeV1 } from '@flotilla/contracts';
import type { PoolApi } from '../compat/pool-api';
import { OpenStackError } from './errors';
import { serverState } from './nova-documents';
import { isObject } from './request';

const { VmOperation: Op, ShutdownMode: Mode } = computeV1;
type Vms = PoolApi['vms']['call'];
type Call = { metadata: Metadata };

interface ServerAction {
  /** Nova's word for it in a 409 ("Cannot 'stop' instance …"). */
  verb: string;
  /** The VM operation it needs in allowed_operations; the action's argument may choose it (reboot type). */
  operation(arg: unknown): computeV1.VmOperation;
  run(vms: Vms, id: string, arg: unknown, call: Call): Promise<unknown>;
}

const rebootType = (arg: unknown): 'SOFT' | 'HARD' => {
  const type = isObject(arg) ? arg.type : undefined;
  if (type !== 'SOFT' && type !== 'HARD')
    throw new OpenStackError(
      400,
      "Invalid input for field/attribute type: 'reboot.type' must be SOFT or HARD.",
    );
  return type;
};

/** The server actions served, each mapped to one VmService call (Nova's stop is a clean shutdown). */
const actions: Record<string, ServerAction> = {
  'os-start': {
    verb: 'start',
    operation: () => Op.VM_OPERATION_START,
    run: (vms, id, _arg, call) => vms.startVm({ id, requestId: '', hostId: '' }, call),
  },
  'os-stop': {
    verb: 'stop',
    operation: () => Op.VM_OPERATION_CLEAN_SHUTDOWN,
    run: (vms, id, _arg, call) =>
      vms.shutdownVm({ id, requestId: '', mode: Mode.SHUTDOWN_MODE_CLEAN, timeoutMs: 0 }, call),
  },
  reboot: {
    verb: 'reboot',
    operation: (arg) =>
      rebootType(arg) === 'HARD' ? Op.VM_OPERATION_HARD_REBOOT : Op.VM_OPERATION_CLEAN_REBOOT,
    run: (vms, id, arg, call) =>
      vms.rebootVm(
        {
          id,
          requestId: '',
          mode: rebootType(arg) === 'HARD' ? Mode.SHUTDOWN_MODE_HARD : Mode.SHUTDOWN_MODE_CLEAN,
        },
        call,
      ),
  },
  pause: {
    verb: 'pause',
    operation: () => Op.VM_OPERATION_PAUSE,
    run: (vms, id, _arg, call) => vms.pauseVm({ id, requestId: '' }, call),
  },
  unpause: {
    verb: 'unpause',
    operation: () => Op.VM_OPERATION_UNPAUSE,
    run: (vms, id, _arg, call) => vms.unpauseVm({ id, requestId: '' }, call),
  },
  suspend: {
    verb: 'suspend',
    operation: () => Op.VM_OPERATION_SUSPEND,
    run: (vms, id, _arg, call) => vms.suspendVm({ id, requestId: '' }, call),
  },
  resume: {
    verb: 'resume',
    operation: () => Op.VM_OPERATION_RESUME,
    run: (vms, id, _arg, call) => vms.resumeVm({ id, requestId: '' }, call),
  },
};

/** The action a POST /servers/{id}/action body names; 400 for a body that names none or an unknown one. */
export function actionOf(body: unknown): { action: ServerAction; arg: unknown } {
  if (!isObject(body) || Object.keys(body).length !== 1)
    throw new OpenStackError(400, 'Invalid input: the action body must have exactly one key, the action.');
  const [name] = Object.keys(body);
  const action = actions[name];
  if (!action) throw new OpenStackError(400, `There is no such action: ${name}`);
  return { action, arg: body[name] };
}

/**
 * Runs the action if the VM allows it now; otherwise 409 conflictingRequest in Nova's words (compute
 * would refuse too, but its message names Flotilla's states, not Nova's).
 */
export async function runServerAction(o: {
  vms: Vms;
  vm: computeV1.Vm;
  body: unknown;
  call: Call;
}): Promise<void> {
  const { action, arg } = actionOf(o.body);
  const operation = action.operation(arg);
  if (!(o.vm.allowedOperations ?? []).includes(operation) || o.vm.currentOperationId)
    throw new OpenStackError(
      409,
      `Cannot '${action.verb}' instance ${o.vm.id} while it is in vm_state ${serverState({ vm: o.vm }).vmState}` +
        (o.vm.currentOperationId ? ' (an operation is in progress)' : ''),
    );
  await action.run(o.vms, o.vm.id, arg, o.call);
}
