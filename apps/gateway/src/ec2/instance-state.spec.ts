import { computeV1 } from '@flotilla/contracts';
import { ec2StateOf } from './instance-state';

const P = computeV1.PowerState;

describe('EC2 state of a VM', () => {
  it.each<[computeV1.PowerState, string | undefined, string, number]>([
    [P.POWER_STATE_HALTED, 'vm.create', 'pending', 0],
    [P.POWER_STATE_HALTED, 'vm.start', 'pending', 0],
    [P.POWER_STATE_RUNNING, 'vm.start', 'running', 16],
    [P.POWER_STATE_RUNNING, undefined, 'running', 16],
    [P.POWER_STATE_RUNNING, 'vm.reboot', 'running', 16],
    [P.POWER_STATE_RUNNING, 'vm.shutdown', 'stopping', 64],
    [P.POWER_STATE_HALTED, 'vm.shutdown', 'stopped', 80],
    [P.POWER_STATE_HALTED, undefined, 'stopped', 80],
    [P.POWER_STATE_RUNNING, 'vm.destroy', 'shutting-down', 32],
    [P.POWER_STATE_HALTED, 'vm.destroy', 'shutting-down', 32],
    [P.POWER_STATE_PAUSED, undefined, 'stopped', 80],
    [P.POWER_STATE_SUSPENDED, undefined, 'stopped', 80],
    [P.POWER_STATE_PAUSED, 'vm.unpause', 'pending', 0],
    [P.POWER_STATE_SUSPENDED, 'vm.resume', 'pending', 0],
    [P.POWER_STATE_UNKNOWN, undefined, 'running', 16],
  ])('a %s VM with %s in flight is %s (%d)', (powerState, kind, name, code) => {
    expect(ec2StateOf({ powerState }, kind)).toEqual({ name, code });
  });

  it('never reports stopping for a booting instance', () => {
    for (const powerState of [P.POWER_STATE_HALTED, P.POWER_STATE_RUNNING])
      for (const kind of ['vm.create', 'vm.start'])
        expect(ec2StateOf({ powerState }, kind).name).not.toBe('stopping');
  });
});
