/**
 * Keeps `up`'s children running: restarts one that exits unexpectedly with backoff, and stops them all in
 * phases (SIGTERM, then SIGKILL for stragglers after the grace period). Processes and time come in through
 * Spawner and Clock so the policy is tested without real processes or waiting.
 */

export interface ChildSpec {
  name: string;
  command: string;
  args: string[];
  env: NodeJS.ProcessEnv;
  /** Children stop in ascending phases, each phase after the previous one exited: 0 first, the database last. */
  stopPhase: number;
}

export interface ChildHandlers {
  line(stream: 'stdout' | 'stderr', text: string): void;
  /** Called exactly once, when the process is gone (or could not be started: code and signal null). */
  exit(code: number | null, signal: NodeJS.Signals | null): void;
}

export interface RunningChild {
  readonly pid?: number;
  kill(signal: NodeJS.Signals): void;
}

export interface Spawner {
  spawn(spec: ChildSpec, handlers: ChildHandlers): RunningChild;
}

export interface Clock {
  now(): number;
  /** Runs fn after ms; returns a function that cancels it. */
  setTimer(ms: number, fn: () => void): () => void;
}

export const realClock: Clock = {
  now: () => Date.now(),
  setTimer(ms, fn) {
    const t = setTimeout(fn, ms);
    return () => clearTimeout(t);
  },
};

export interface RestartPolicy {
  initialDelayMs: number;
  maxDelayMs: number;
  /** A child that stayed up this long is healthy again: its next restart waits initialDelayMs. */
  resetAfterMs: number;
}

/** 1 s doubling to 30 s, back to 1 s after a minute up. */
export const defaultRestartPolicy: RestartPolicy = {
  initialDelayMs: 1000,
  maxDelayMs: 30_000,
  resetAfterMs: 60_000,
};

/** The wait before restarting a child that exited after uptimeMs, given the wait before its last restart. */
export function nextRestartDelay(
  previousDelayMs: number | undefined,
  uptimeMs: number,
  policy: RestartPolicy = defaultRestartPolicy,
): number {
  if (previousDelayMs === undefined || uptimeMs >= policy.resetAfterMs) return policy.initialDelayMs;
  return Math.min(previousDelayMs * 2, policy.maxDelayMs);
}

export interface SupervisorDeps {
  spawner: Spawner;
  clock: Clock;
  /** The supervisor's own messages (restarts, kills). */
  log(message: string): void;
  /** Every output line of every child. */
  onLine(name: string, stream: 'stdout' | 'stderr', text: string): void;
  /** Called at every (re)start of a child, e.g. to wait for its readiness again. */
  onSpawn?(name: string, restarts: number): void;
  policy?: RestartPolicy;
}

interface Managed {
  spec: ChildSpec;
  child?: RunningChild;
  startedAt: number;
  lastDelayMs?: number;
  restarts: number;
  cancelRestart?: () => void;
  /** Resolves when the current process is gone. */
  exited: Promise<void>;
  markExited: () => void;
}

export class Supervisor {
  private readonly children = new Map<string, Managed>();
  private stopping = false;

  constructor(private readonly deps: SupervisorDeps) {}

  /** Starts a child and keeps it running until stop(). */
  start(spec: ChildSpec): void {
    if (this.stopping) return;
    if (this.children.has(spec.name)) throw new Error(`${spec.name} is already supervised`);
    const managed: Managed = {
      spec,
      startedAt: 0,
      restarts: 0,
      exited: Promise.resolve(),
      markExited: () => undefined,
    };
    this.children.set(spec.name, managed);
    this.spawn(managed);
  }

  isRunning(name: string): boolean {
    return Boolean(this.children.get(name)?.child);
  }

  /** Names of the children with a live process. */
  running(): string[] {
    return [...this.children.values()].filter((m) => m.child).map((m) => m.spec.name);
  }

  /** Every live process, for a last-resort kill when the supervisor itself goes away. */
  killAll(signal: NodeJS.Signals): void {
    for (const m of this.children.values()) m.child?.kill(signal);
  }

  /**
   * SIGTERM phase by phase, each phase after the previous one exited. A phase still running when graceMs
   * (counted from the call) has passed gets SIGKILL; a phase reached only after that still gets SIGTERM and
   * lastPhaseGraceMs, so the database always has a chance to close its files. Resolves when all are gone.
   */
  async stop(graceMs = 10_000, lastPhaseGraceMs = 2000): Promise<void> {
    this.stopping = true;
    for (const m of this.children.values()) {
      m.cancelRestart?.();
      m.cancelRestart = undefined;
    }
    const deadline = this.deps.clock.now() + graceMs;
    const phases = [...new Set([...this.children.values()].map((m) => m.spec.stopPhase))].sort(
      (a, b) => a - b,
    );
    for (const phase of phases) {
      const group = [...this.children.values()].filter((m) => m.spec.stopPhase === phase && m.child);
      if (!group.length) continue;
      for (const m of group) m.child?.kill('SIGTERM');
      const waitMs = Math.max(deadline - this.deps.clock.now(), lastPhaseGraceMs);
      const cancelKill = this.deps.clock.setTimer(waitMs, () => {
        for (const m of group) {
          if (!m.child) continue;
          this.deps.log(`${m.spec.name} did not stop within ${seconds(waitMs)} of SIGTERM: killing it`);
          m.child.kill('SIGKILL');
        }
      });
      await Promise.all(group.map((m) => m.exited));
      cancelKill();
    }
  }

  private spawn(m: Managed): void {
    m.startedAt = this.deps.clock.now();
    m.exited = new Promise((resolve) => (m.markExited = resolve));
    const name = m.spec.name;
    let reported = false;
    const child = this.deps.spawner.spawn(m.spec, {
      line: (stream, text) => this.deps.onLine(name, stream, text),
      exit: (code, signal) => {
        if (reported) return;
        reported = true;
        this.onExit(m, code, signal);
      },
    });
    // The spawner may report a failed start synchronously, before returning.
    if (!reported) m.child = child;
    this.deps.onSpawn?.(name, m.restarts);
  }

  private onExit(m: Managed, code: number | null, signal: NodeJS.Signals | null): void {
    m.child = undefined;
    m.markExited();
    if (this.stopping) return;
    const uptimeMs = this.deps.clock.now() - m.startedAt;
    const delayMs = nextRestartDelay(m.lastDelayMs, uptimeMs, this.deps.policy);
    m.lastDelayMs = delayMs;
    m.restarts += 1;
    this.deps.log(
      `${m.spec.name} exited unexpectedly (${describeExit(code, signal)}) after ${seconds(uptimeMs)}; ` +
        `restarting in ${seconds(delayMs)} (restart ${m.restarts})`,
    );
    m.cancelRestart = this.deps.clock.setTimer(delayMs, () => {
      m.cancelRestart = undefined;
      if (!this.stopping) this.spawn(m);
    });
  }
}

export function describeExit(code: number | null, signal: NodeJS.Signals | null): string {
  if (signal) return `signal ${signal}`;
  if (code === null) return 'could not start';
  return `code ${code}`;
}

function seconds(ms: number): string {
  return `${+(ms / 1000).toFixed(1)} s`;
}
