import { DomainError, ErrorCode } from './errors';
import { allowedOperations, assertOperationAllowed, occupiesHost } from './vm-lifecycle';

describe('VM lifecycle', () => {
  it('allows start, destroy, snapshot and revert of a halted VM, and nothing else', () => {
    expect(allowedOperations({ powerState: 'HALTED' })).toEqual(['START', 'DESTROY', 'SNAPSHOT', 'REVERT']);
  });

  it('allows no operation while another one is in flight', () => {
    expect(allowedOperations({ powerState: 'RUNNING', currentOperationId: 'op-1' })).toEqual([]);
  });

  it('refuses pause of a halted VM naming the state and the allowed operations', () => {
    const attempt = () => assertOperationAllowed({ id: 'vm-1', powerState: 'HALTED' }, 'PAUSE');
    expect(attempt).toThrow(DomainError);
    expect(attempt).toThrow(
      'vm vm-1 is HALTED: PAUSE is not allowed; allowed operations: START, DESTROY, SNAPSHOT, REVERT',
    );
  });

  it('refuses any operation while one is in progress with FAILED_PRECONDITION', () => {
    try {
      assertOperationAllowed({ id: 'vm-1', powerState: 'RUNNING', currentOperationId: 'op-9' }, 'PAUSE');
      throw new Error('expected a refusal');
    } catch (e) {
      expect((e as DomainError).code).toBe(ErrorCode.FailedPrecondition);
      expect((e as DomainError).message).toContain('op-9');
    }
  });

  it('lets a VM on a host that stopped reporting only be hard-stopped or destroyed', () => {
    expect(allowedOperations({ powerState: 'UNKNOWN' })).toEqual(['HARD_SHUTDOWN', 'DESTROY']);
  });

  it('lets a VM snapshot only be cloned or destroyed, whatever its power state', () => {
    expect(allowedOperations({ powerState: 'HALTED', isSnapshot: true })).toEqual(['CLONE', 'DESTROY']);
    expect(() =>
      assertOperationAllowed({ id: 's-1', powerState: 'HALTED', isSnapshot: true }, 'START'),
    ).toThrow('vm s-1 is a snapshot: START is not allowed');
  });

  it('counts running, paused and unknown VMs against their host, not halted ones', () => {
    expect(occupiesHost('RUNNING')).toBe(true);
    expect(occupiesHost('PAUSED')).toBe(true);
    expect(occupiesHost('UNKNOWN')).toBe(true);
    expect(occupiesHost('HALTED')).toBe(false);
  });
});
