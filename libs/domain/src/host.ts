export type HostState = 'ENABLED' | 'DISABLED' | 'MAINTENANCE' | 'DOWN';

/** A host is DOWN once it has missed its heartbeats for `timeoutMs`. */
export function isHeartbeatExpired(lastHeartbeatAt: Date, now: Date, timeoutMs: number): boolean {
  return now.getTime() - lastHeartbeatAt.getTime() > timeoutMs;
}

/** State a host takes when it (re-)registers: an operator's DISABLED or MAINTENANCE outlives restarts. */
export function stateOnRegister(previous: HostState | undefined): HostState {
  return previous === 'DISABLED' || previous === 'MAINTENANCE' ? previous : 'ENABLED';
}
