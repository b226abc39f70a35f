import { computeV1 } from '@flotilla/contracts';

/**
 * The EC2 instance state of a Flotilla VM, from compute's stable power state and the kind of the operation
 * in flight (SDK waiters depend on this being truthful: a booting instance is never "stopping").
 *
 * UNKNOWN (the host stopped reporting) is shown as running: the VM was running when last heard of and may
 * still be; the reason element carries compute's power_state_reason. PAUSED and SUSPENDED are stopped (the
 * guest runs no code); StartInstances unpauses or resumes them.
 */

export type Ec2StateName = 'pending' | 'running' | 'shutting-down' | 'terminated' | 'stopping' | 'stopped';

export const ec2StateCodes: Record<Ec2StateName, number> = {
  pending: 0,
  running: 16,
  'shutting-down': 32,
  terminated: 48,
  stopping: 64,
  stopped: 80,
};

export interface Ec2State {
  code: number;
  name: Ec2StateName;
}

export function ec2State(name: Ec2StateName): Ec2State {
  return { code: ec2StateCodes[name], name };
}

const P = computeV1.PowerState;

/** Operation kinds whose success leaves the VM running, and those that stop it. */
const starting = new Set(['vm.create', 'vm.start', 'vm.unpause', 'vm.resume', 'vm.revert', 'vm.clone']);
const stopping = new Set(['vm.shutdown', 'vm.suspend', 'vm.pause']);

/** `inFlightKind`: the kind of the VM's current operation, undefined when none is in flight. */
export function ec2StateOf(vm: Pick<computeV1.Vm, 'powerState'>, inFlightKind: string | undefined): Ec2State {
  const running = vm.powerState === P.POWER_STATE_RUNNING || vm.powerState === P.POWER_STATE_UNKNOWN;
  if (inFlightKind === 'vm.destroy') return ec2State('shutting-down');
  if (inFlightKind && starting.has(inFlightKind))
    // Already running while the operation records its last step: running, as compute will say next.
    return running ? ec2State('running') : ec2State('pending');
  if (inFlightKind && stopping.has(inFlightKind)) return running ? ec2State('stopping') : ec2State('stopped');
  // No operation in flight, or one that keeps the power state (reboot, snapshot, migration).
  if (running) return ec2State('running');
  return ec2State('stopped');
}
