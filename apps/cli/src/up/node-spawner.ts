import { spawn } from 'node:child_process';
import * as readline from 'node:readline';
import type { ChildHandlers, ChildSpec, RunningChild, Spawner } from './supervisor';

/**
 * Runs children as real processes, each in its own process group so a Ctrl-C in the terminal reaches only
 * `up`, which then stops them in order. Exit is taken from 'exit', not 'close': a host agent's QEMU
 * processes may keep its output pipes open after the agent itself is gone.
 */
export class NodeSpawner implements Spawner {
  spawn(spec: ChildSpec, handlers: ChildHandlers): RunningChild {
    const child = spawn(spec.command, spec.args, {
      env: spec.env,
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    for (const stream of ['stdout', 'stderr'] as const) {
      const source = child[stream];
      if (source)
        readline
          .createInterface({ input: source, crlfDelay: Infinity })
          .on('line', (l) => handlers.line(stream, l));
    }
    let done = false;
    child.once('error', (e) => {
      // 'error' without a pid: the process never started, so no 'exit' follows.
      if (child.pid !== undefined || done) return;
      done = true;
      handlers.line('stderr', `cannot start ${spec.command}: ${e.message}`);
      handlers.exit(null, null);
    });
    child.once('exit', (code, signal) => {
      if (done) return;
      done = true;
      handlers.exit(code, signal);
    });
    return {
      pid: child.pid,
      kill(signal) {
        try {
          child.kill(signal);
        } catch {
          // Already gone.
        }
      },
    };
  }
}
