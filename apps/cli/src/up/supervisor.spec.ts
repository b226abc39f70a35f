import { ChildHandlers, ChildSpec, Clock, nextRestartDelay, Spawner, Supervisor } from './supervisor';

// Fake processes and a fake clock: nothing is spawned and no test waits for real time.
class FakeClock implements Clock {
  private t = 0;
  private timers: Array<{ at: number; fn: () => void; cancelled: boolean }> = [];
  now(): number {
    return this.t;
  }
  setTimer(ms: number, fn: () => void): () => void {
    const timer = { at: this.t + ms, fn, cancelled: false };
    this.timers.push(timer);
    return () => {
      timer.cancelled = true;
    };
  }
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      const due = this.timers.filter((x) => !x.cancelled && x.at <= end).sort((a, b) => a.at - b.at)[0];
      if (!due) break;
      due.cancelled = true;
      this.t = due.at;
      due.fn();
    }
    this.t = end;
  }
  pending(): number {
    return this.timers.filter((x) => !x.cancelled).length;
  }
}

class FakeSpawner implements Spawner {
  spawned: string[] = [];
  signals: Array<[string, string]> = [];
  /** Children that exit as soon as they get SIGTERM. */
  obedient = new Set<string>();
  private live = new Map<string, ChildHandlers>();

  spawn(spec: ChildSpec, handlers: ChildHandlers) {
    this.spawned.push(spec.name);
    this.live.set(spec.name, handlers);
    return {
      pid: this.spawned.length,
      kill: (signal: NodeJS.Signals) => {
        this.signals.push([spec.name, signal]);
        if (signal === 'SIGKILL' || this.obedient.has(spec.name))
          queueMicrotask(() => this.exit(spec.name, null, signal));
      },
    };
  }
  exit(name: string, code: number | null, signal: NodeJS.Signals | null = null): void {
    const h = this.live.get(name);
    this.live.delete(name);
    h?.exit(code, signal);
  }
  say(name: string, text: string): void {
    this.live.get(name)?.line('stdout', text);
  }
}

function setup() {
  const clock = new FakeClock();
  const spawner = new FakeSpawner();
  const logs: string[] = [];
  const lines: string[] = [];
  const supervisor = new Supervisor({
    spawner,
    clock,
    log: (m) => logs.push(m),
    onLine: (name, stream, text) => lines.push(`${name}/${stream}: ${text}`),
  });
  const spec = (name: string, stopPhase = 0): ChildSpec => ({
    name,
    command: 'node',
    args: [],
    env: {},
    stopPhase,
  });
  return { clock, spawner, logs, lines, supervisor, spec };
}

describe('restart backoff', () => {
  it('waits 1 s before the first restart', () => {
    expect(nextRestartDelay(undefined, 500)).toBe(1000);
  });

  it('doubles the wait for a child that keeps crashing, up to 30 s', () => {
    const delays: number[] = [];
    let last: number | undefined;
    for (let i = 0; i < 7; i++) delays.push((last = nextRestartDelay(last, 100)));
    expect(delays).toEqual([1000, 2000, 4000, 8000, 16000, 30000, 30000]);
  });

  it('starts again from 1 s after a child stayed up for a minute', () => {
    expect(nextRestartDelay(30000, 60_000)).toBe(1000);
    expect(nextRestartDelay(30000, 59_999)).toBe(30000);
  });
});

describe('supervisor', () => {
  it('restarts a child that exits unexpectedly after the backoff, and logs it', () => {
    const { clock, spawner, logs, supervisor, spec } = setup();
    supervisor.start(spec('compute'));
    clock.advance(3000);
    spawner.exit('compute', 1);
    expect(logs).toEqual(['compute exited unexpectedly (code 1) after 3 s; restarting in 1 s (restart 1)']);
    clock.advance(999);
    expect(spawner.spawned).toEqual(['compute']);
    clock.advance(1);
    expect(spawner.spawned).toEqual(['compute', 'compute']);
    expect(supervisor.isRunning('compute')).toBe(true);
  });

  it('backs off further while a child keeps crashing and resets once it stays up', () => {
    const { clock, spawner, logs, supervisor, spec } = setup();
    supervisor.start(spec('gateway'));
    for (const expected of [1000, 2000, 4000]) {
      spawner.exit('gateway', 1);
      clock.advance(expected);
    }
    expect(spawner.spawned).toHaveLength(4);
    clock.advance(60_000);
    spawner.exit('gateway', 1);
    expect(logs.map((l) => l.replace(/.*restarting in /, ''))).toEqual([
      '1 s (restart 1)',
      '2 s (restart 2)',
      '4 s (restart 3)',
      '1 s (restart 4)',
    ]);
  });

  it('reports a signal as the cause of death', () => {
    const { spawner, logs, supervisor, spec } = setup();
    supervisor.start(spec('db'));
    spawner.exit('db', null, 'SIGSEGV');
    expect(logs[0]).toContain('db exited unexpectedly (signal SIGSEGV)');
  });

  it('passes every output line on with the name of its child', () => {
    const { spawner, lines, supervisor, spec } = setup();
    supervisor.start(spec('db'));
    spawner.say('db', '{"msg":"ready"}');
    expect(lines).toEqual(['db/stdout: {"msg":"ready"}']);
  });

  it('stops children phase by phase: the next phase gets SIGTERM only after the previous one exited', async () => {
    const { spawner, supervisor, spec } = setup();
    supervisor.start(spec('db', 2));
    supervisor.start(spec('compute', 1));
    supervisor.start(spec('gateway', 0));
    supervisor.start(spec('host-1', 0));
    spawner.obedient = new Set(['db', 'compute', 'gateway', 'host-1']);
    await supervisor.stop();
    expect(spawner.signals).toEqual([
      ['gateway', 'SIGTERM'],
      ['host-1', 'SIGTERM'],
      ['compute', 'SIGTERM'],
      ['db', 'SIGTERM'],
    ]);
    expect(supervisor.running()).toEqual([]);
  });

  it('does not restart children that exit because of stop()', async () => {
    const { clock, spawner, logs, supervisor, spec } = setup();
    supervisor.start(spec('compute'));
    spawner.obedient.add('compute');
    await supervisor.stop();
    clock.advance(60_000);
    expect(spawner.spawned).toEqual(['compute']);
    expect(logs).toEqual([]);
  });

  it('kills stragglers with SIGKILL once the grace period is over', async () => {
    const { clock, spawner, logs, supervisor, spec } = setup();
    supervisor.start(spec('gateway', 0));
    supervisor.start(spec('db', 1));
    spawner.obedient.add('db');
    const stopped = supervisor.stop(10_000);
    await Promise.resolve();
    expect(spawner.signals).toEqual([['gateway', 'SIGTERM']]);
    clock.advance(9_999);
    await Promise.resolve();
    expect(spawner.signals).toEqual([['gateway', 'SIGTERM']]);
    clock.advance(1);
    await stopped;
    expect(spawner.signals).toEqual([
      ['gateway', 'SIGTERM'],
      ['gateway', 'SIGKILL'],
      ['db', 'SIGTERM'],
    ]);
    expect(logs).toEqual(['gateway did not stop within 10 s of SIGTERM: killing it']);
  });

  it('gives a phase reached after the grace period a short grace of its own before SIGKILL', async () => {
    const { clock, spawner, supervisor, spec } = setup();
    supervisor.start(spec('gateway', 0));
    supervisor.start(spec('db', 1));
    const stopped = supervisor.stop(10_000, 2000);
    clock.advance(10_000);
    await new Promise((r) => setImmediate(r));
    expect(spawner.signals).toEqual([
      ['gateway', 'SIGTERM'],
      ['gateway', 'SIGKILL'],
      ['db', 'SIGTERM'],
    ]);
    clock.advance(2000);
    await stopped;
    expect(spawner.signals.at(-1)).toEqual(['db', 'SIGKILL']);
  });

  it('cancels a pending restart when stopping', async () => {
    const { clock, spawner, supervisor, spec } = setup();
    supervisor.start(spec('compute'));
    spawner.exit('compute', 1);
    await supervisor.stop();
    clock.advance(5000);
    expect(spawner.spawned).toEqual(['compute']);
    expect(clock.pending()).toBe(0);
  });
});
