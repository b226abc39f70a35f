import {
  fitsDowntimeLimit,
  GuestMemoryLoad,
  postCopyOutcome,
  PostCopyOutcome,
  PrecopyInput,
  PrecopyProgress,
  precopyRound,
  PrecopyRound,
  precopyWithinRound,
  startPrecopy,
  switchoverDowntimeMs,
  transferTimeMs,
} from '@flotilla/domain';
import { DriverError, DriverMigrationParameters, DriverOutgoingState, DriverOutgoingStatus } from '../driver';

/** The clock and timers of the simulation, injectable (tests, benches). */
export interface SimTimers {
  now(): number;
  /** Runs `fn` after `ms`; the returned function cancels it. */
  after(ms: number, fn: () => void): () => void;
}

export const realSimTimers: SimTimers = {
  now: () => performance.now(),
  after: (ms, fn) => {
    const timer = setTimeout(fn, ms);
    return () => clearTimeout(timer);
  },
};

/** QEMU's setup before the first round (capabilities, first dirty-bitmap sync): a few ms. */
export const SIM_SETUP_MS = 5;

export interface SimMirrorDisk {
  diskId: string;
  totalBytes: number;
}

export interface SimOutgoingContext {
  vmId: string;
  migrationId: string;
  timers: SimTimers;
  /** Real ms per modelled ms (1: real time). */
  timeScale: number;
  /** The guest's memory load now (a paused guest dirties nothing). */
  load(): GuestMemoryLoad;
  /** False once the VM was stopped or destroyed here: the migration then fails, as QEMU's would. */
  vmRuns(): boolean;
}

/** A stretch of the migration's time: modelled work (scaled) or a wait on the caller (real). */
type Stage = { kind: 'model'; modelMs: number; startedAt: number } | { kind: 'wait'; startedAt: number };

const TERMINAL: readonly DriverOutgoingState[] = ['completed', 'failed', 'cancelled'];
/** States in which the source's guest no longer runs here. */
const SOURCE_STOPPED: readonly DriverOutgoingState[] = [
  'pre-switchover',
  'device',
  'postcopy-active',
  'completed',
];

/**
 * One outgoing migration of the sim driver: the disk mirror, then the pre-copy model run in (scaled) real
 * time, round by round, through setup → active → pre-switchover (waits for switchOver unless the switch
 * is armed) → device →
 * completed, or post-copy, failed, cancelled. Reported times are the modelled ones plus the real time the
 * caller took to switch over (a paused guest waits in real time whatever the scale).
 */
export class SimOutgoing {
  private currentState: DriverOutgoingState = 'mirroring';
  private error?: string;
  private params?: DriverMigrationParameters;
  private readonly memoryBytes: number;
  private progress: PrecopyProgress;
  private round?: { from: PrecopyProgress; round: PrecopyRound; next: PrecopyProgress };
  private postCopy?: { transferredBytes: number; remainingBytes: number; outcome: PostCopyOutcome };
  private wentPostCopy = false;
  private mirror: { disks: SimMirrorDisk[]; bandwidthBytesPerSec: number; startedAt: number } | undefined;
  private stage?: Stage;
  /** Time of finished stages (modelled, plus real waits). */
  private elapsedMs = 0;
  private setupTimeMs = 0;
  private pausedSinceMs = 0;
  private downtimeMs = 0;
  private cancelTimer?: () => void;
  private readonly listeners = new Set<() => void>();

  constructor(private readonly ctx: SimOutgoingContext) {
    this.memoryBytes = ctx.load().memoryBytes;
    this.progress = startPrecopy(this.memoryBytes);
  }

  get migrationId(): string {
    return this.ctx.migrationId;
  }

  get state(): DriverOutgoingState {
    return this.currentState;
  }

  get inFlight(): boolean {
    return !TERMINAL.includes(this.currentState);
  }

  /** The source's guest is paused for the switchover or runs on the destination now. */
  get holdsVm(): boolean {
    return SOURCE_STOPPED.includes(this.currentState);
  }

  /** Models a full copy of the disks at the bandwidth, one after the other; a disk stays ready once copied. */
  startMirror(disks: SimMirrorDisk[], bandwidthBytesPerSec: number): void {
    this.mirror = { disks, bandwidthBytesPerSec, startedAt: this.ctx.timers.now() };
    const totalBytes = disks.reduce((sum, d) => sum + d.totalBytes, 0);
    // The state does not change when the copy is done: wake long polls so that they see the disks ready.
    this.cancelTimer = this.ctx.timers.after(
      this.scaled(transferTimeMs(totalBytes, bandwidthBytesPerSec)),
      () => this.notify(),
    );
  }

  startMemory(params: DriverMigrationParameters): void {
    const unready = this.disksStatus().filter((d) => !d.ready);
    if (unready.length > 0)
      throw new DriverError(
        'invalid-state',
        `migration ${this.migrationId}: disks ${unready.map((d) => d.diskId).join(', ')} are not mirrored yet (not READY)`,
      );
    this.cancelTimer?.();
    this.params = { ...params };
    this.setState('setup');
    this.beginModelled(SIM_SETUP_MS, () => {
      this.setupTimeMs = SIM_SETUP_MS;
      this.setState('active');
      this.beginRound();
    });
  }

  tune(tune: { bandwidthBytesPerSec?: number; startPostCopy?: boolean }): void {
    const params = this.params;
    if (tune.startPostCopy && (this.currentState === 'postcopy-active' || this.wentPostCopy)) return;
    if (!params || !this.inFlight)
      throw new DriverError(
        'invalid-state',
        `migration ${this.migrationId} is ${this.currentState}: nothing to tune`,
      );
    if (tune.startPostCopy && !params.postCopy)
      throw new DriverError(
        'invalid-state',
        `migration ${this.migrationId} was started without post-copy: it cannot switch to post-copy`,
      );
    if (tune.startPostCopy && this.currentState !== 'active')
      throw new DriverError(
        'invalid-state',
        `migration ${this.migrationId} is ${this.currentState}: the switch to post-copy needs it active`,
      );
    // A new cap applies from the next round (QEMU applies it within the current one; the model has no finer grain).
    if (tune.bandwidthBytesPerSec && tune.bandwidthBytesPerSec > 0)
      params.bandwidthBytesPerSec = tune.bandwidthBytesPerSec;
    if (tune.startPostCopy) this.switchToPostCopy();
  }

  switchOver(): void {
    if (this.currentState === 'completed' || this.currentState === 'device') return;
    if (this.currentState !== 'pre-switchover')
      throw new DriverError(
        'invalid-state',
        `migration ${this.migrationId} is ${this.currentState}, not pre-switchover: nothing to switch over`,
      );
    if (!this.ctx.vmRuns()) {
      this.fail('the VM stopped on the source while it waited for the switchover');
      throw new DriverError('failed', `migration ${this.migrationId} failed: ${this.error}`);
    }
    const remaining = this.progress.remainingBytes;
    this.setState('device');
    this.beginModelled(switchoverDowntimeMs(remaining, this.link().bandwidthBytesPerSec), () => {
      this.progress = {
        ...this.progress,
        transferredBytes: this.progress.transferredBytes + remaining,
        remainingBytes: 0,
      };
      this.downtimeMs = this.elapsedMs - this.pausedSinceMs;
      this.setState('completed');
    });
  }

  /** Stops the mirror and the memory transfer; the guest runs on here. Too late once the destination has it. */
  cancel(): void {
    if (this.currentState === 'failed' || this.currentState === 'cancelled') return;
    if (
      this.currentState === 'device' ||
      this.currentState === 'postcopy-active' ||
      this.currentState === 'completed'
    )
      throw new DriverError(
        'invalid-state',
        `migration ${this.migrationId} is ${this.currentState}: past the switchover, the destination runs the VM`,
      );
    this.stop();
    this.setState('cancelled');
  }

  fail(reason: string): void {
    if (!this.inFlight) return;
    this.stop();
    this.error = reason;
    this.setState('failed');
  }

  /** Stops the timers (driver close); the record keeps its last state. */
  close(): void {
    this.cancelTimer?.();
    this.cancelTimer = undefined;
  }

  /** Resolves when the state or the round changes, or after `ms`. */
  waitForChange(ms: number): Promise<void> {
    // A source waiting in pre-switchover waits for the caller: answer at once (as the qemu driver does).
    if (ms <= 0 || !this.inFlight || this.currentState === 'pre-switchover') return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        cancel();
        this.listeners.delete(done);
        resolve();
      };
      const cancel = this.ctx.timers.after(ms, done);
      this.listeners.add(done);
    });
  }

  status(): DriverOutgoingStatus {
    const stageMs = this.stageElapsedMs();
    const memory = this.memoryNow(stageMs);
    const disks = this.disksStatus();
    const bandwidth = this.params?.bandwidthBytesPerSec ?? 0;
    const totalTimeMs = this.elapsedMs + stageMs;
    const moving =
      this.currentState === 'active' ||
      this.currentState === 'device' ||
      this.currentState === 'postcopy-active';
    return {
      state: this.currentState,
      ...(this.error ? { error: this.error } : {}),
      totalTimeMs: Math.round(totalTimeMs),
      downtimeMs: Math.round(this.downtimeMs),
      setupTimeMs: this.setupTimeMs,
      expectedDowntimeMs: bandwidth > 0 ? Math.round(transferTimeMs(memory.remainingBytes, bandwidth)) : 0,
      memoryTotalBytes: this.memoryBytes,
      memoryTransferredBytes: memory.transferredBytes,
      memoryRemainingBytes: memory.remainingBytes,
      bytesTransferred: memory.transferredBytes + disks.reduce((sum, d) => sum + d.doneBytes, 0),
      rounds: this.progress.rounds,
      dirtyRateBytesPerSec: Math.round(this.progress.dirtyRateBytesPerSec),
      transferRateBytesPerSec: moving ? bandwidth : 0,
      cpuThrottlePercent: this.progress.throttlePercent,
      postCopyRequests: memory.postCopyRequests,
      disks,
    };
  }

  private beginRound(): void {
    if (!this.ctx.vmRuns()) return this.fail('the VM stopped on the source during the migration');
    const { progress: next, round } = precopyRound(this.progress, this.precopyInput());
    this.round = { from: this.progress, round, next };
    this.beginModelled(round.durationMs, () => this.endRound());
  }

  private endRound(): void {
    const finished = this.round;
    if (!finished) return;
    this.round = undefined;
    this.progress = finished.next;
    if (!this.ctx.vmRuns()) return this.fail('the VM stopped on the source during the migration');
    if (!fitsDowntimeLimit(this.progress.remainingBytes, this.link())) {
      this.notify();
      return this.beginRound();
    }
    // pause-before-switchover: the source pauses and waits for switchOver, in real time; an armed switch
    // goes on at once (switchOver records the failure when the VM stopped meanwhile).
    this.pausedSinceMs = this.elapsedMs;
    this.setState('pre-switchover');
    this.stage = { kind: 'wait', startedAt: this.ctx.timers.now() };
    if (this.params?.switchWhenReady)
      try {
        this.switchOver();
      } catch {
        // failed: the status says why
      }
  }

  private switchToPostCopy(): void {
    const stageMs = this.stageElapsedMs();
    const at = this.round
      ? precopyWithinRound(this.round.from, this.round.round, stageMs)
      : { transferredBytes: this.progress.transferredBytes, remainingBytes: this.progress.remainingBytes };
    this.stop();
    this.round = undefined;
    const outcome = postCopyOutcome(at.remainingBytes, this.precopyInput());
    this.postCopy = { ...at, outcome };
    this.wentPostCopy = true;
    this.setState('postcopy-active');
    this.beginModelled(outcome.durationMs, () => {
      this.progress = {
        ...this.progress,
        transferredBytes: at.transferredBytes + at.remainingBytes,
        remainingBytes: 0,
      };
      this.downtimeMs = outcome.downtimeMs;
      this.setState('completed');
    });
  }

  private memoryNow(stageMs: number): {
    transferredBytes: number;
    remainingBytes: number;
    postCopyRequests: number;
  } {
    const post = this.postCopy;
    if (this.currentState === 'completed')
      return {
        transferredBytes: this.progress.transferredBytes,
        remainingBytes: 0,
        postCopyRequests: post?.outcome.requests ?? 0,
      };
    if (post && this.currentState === 'postcopy-active') {
      const f = Math.min(1, stageMs / Math.max(post.outcome.durationMs, 1e-9));
      const sent = Math.round(post.remainingBytes * f);
      return {
        transferredBytes: post.transferredBytes + sent,
        remainingBytes: post.remainingBytes - sent,
        postCopyRequests: Math.round(post.outcome.requests * f),
      };
    }
    const within = this.round && precopyWithinRound(this.round.from, this.round.round, stageMs);
    return {
      transferredBytes: within?.transferredBytes ?? this.progress.transferredBytes,
      remainingBytes: within?.remainingBytes ?? this.progress.remainingBytes,
      postCopyRequests: 0,
    };
  }

  private disksStatus(): DriverOutgoingStatus['disks'] {
    const mirror = this.mirror;
    if (!mirror) return [];
    let budget =
      (mirror.bandwidthBytesPerSec * (this.ctx.timers.now() - mirror.startedAt)) / this.ctx.timeScale / 1000;
    return mirror.disks.map((d) => {
      const doneBytes = Math.floor(Math.min(d.totalBytes, Math.max(0, budget)));
      budget -= d.totalBytes;
      return { diskId: d.diskId, totalBytes: d.totalBytes, doneBytes, ready: doneBytes >= d.totalBytes };
    });
  }

  private precopyInput(): PrecopyInput {
    return { ...this.ctx.load(), ...this.link() };
  }

  private link(): DriverMigrationParameters {
    if (!this.params)
      throw new DriverError('invalid-state', `migration ${this.migrationId} has not started sending memory`);
    return this.params;
  }

  /** Starts a stretch of modelled work that takes `modelMs` (scaled) and then runs `then`. */
  private beginModelled(modelMs: number, then: () => void): void {
    this.endStage();
    this.stage = { kind: 'model', modelMs, startedAt: this.ctx.timers.now() };
    this.cancelTimer = this.ctx.timers.after(this.scaled(modelMs), () => {
      this.cancelTimer = undefined;
      this.endStage(true);
      then();
    });
  }

  /** Adds the stage's time to the total: modelled work counts in full when it ran to its end. */
  private endStage(ranToEnd = false): void {
    const stage = this.stage;
    if (!stage) return;
    this.elapsedMs += ranToEnd && stage.kind === 'model' ? stage.modelMs : this.stageElapsedMs();
    this.stage = undefined;
  }

  private stageElapsedMs(): number {
    const stage = this.stage;
    if (!stage) return 0;
    const real = this.ctx.timers.now() - stage.startedAt;
    return stage.kind === 'wait' ? real : Math.min(stage.modelMs, real / this.ctx.timeScale);
  }

  private stop(): void {
    this.cancelTimer?.();
    this.cancelTimer = undefined;
    this.endStage();
  }

  private scaled(modelMs: number): number {
    return modelMs * this.ctx.timeScale;
  }

  private setState(state: DriverOutgoingState): void {
    this.currentState = state;
    if (!this.inFlight) this.endStage();
    this.notify();
  }

  private notify(): void {
    for (const listener of [...this.listeners]) listener();
  }
}
