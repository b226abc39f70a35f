export type OperationState = 'PENDING' | 'RUNNING' | 'SUCCEEDED' | 'FAILED' | 'CANCELLED';

export function isTerminal(state: OperationState): boolean {
  return state === 'SUCCEEDED' || state === 'FAILED' || state === 'CANCELLED';
}

/** An operation may be cancelled until it reaches its point of no return (the first outside effect). */
export function isCancellable(op: { state: OperationState; pointOfNoReturnPassed: boolean }): boolean {
  return !isTerminal(op.state) && !op.pointOfNoReturnPassed;
}
