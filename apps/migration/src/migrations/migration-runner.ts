import { status as grpcStatus } from '@grpc/grpc-js';
import { computeV1, migrationV1, storageV1 } from '@flotilla/contracts';
import { ConvergenceDetector, DomainError, ErrorCode, remediesOn } from '@flotilla/domain';
import { grpcStatus as grpcStatusError, Logger } from '@flotilla/platform';
import type {
  HostRef,
  MigrationPhaseName,
  MigrationRow,
  MigrationStatsRecord,
  PendingAction,
} from '../persistence/entities';
import { remedy } from './convergence';
import { MigrationRecords, isFinished, MigrationChanges, withDetail, withPhase } from './migration-records';
import type { MigrationMetrics } from './migration-metrics';
import { AgentCall, isUnavailable, MigrationPeers, peerError } from './peers';
import { Preflight } from './preflight';
import {
  admit,
  blockedBy,
  cleanupActions,
  isEssential,
  overallProgress,
  phaseOfStep,
  reached,
  resumeDecision,
  rollbackActions,
  SlotLimits,
  Step,
  type OutgoingView,
} from './run-plan';
import { blockersStatus, RunStatus, statusOf } from './statuses';

const S = migrationV1.OutgoingState;
/** Tries of a call before the point of no return whose peer does not answer, before rolling back. */
const transientTries = 5;

/** The service is stopping: the run ends without recording anything, as a crash would. */
class Halt extends Error {}
/** Cancel asked (the record says CANCELLING). */
class CancelRequested extends Error {}
/** The run cannot go on before the point of no return: roll back with this status. */
export class RunFailure extends Error {
  constructor(readonly status: RunStatus) {
    super(status.message);
  }
}

export interface RunnerSettings {
  limits: SlotLimits;
  /** GetOutgoingStatus long-poll wait; at most 10000. */
  pollWaitMs: number;
  /** Pause between retries of a call whose peer is unreachable. */
  retryDelayMs: number;
  /** How often the reconciler looks for work (unfinished runs not in flight, leftovers). */
  reconcileEveryMs: number;
  /** Progress and stats are written at most this often per migration. */
  statsEveryMs: number;
}

const hostRef = (h: computeV1.MigrationHost | undefined): HostRef | null =>
  h
    ? { id: h.id, name: h.name || h.id, address: h.address, epoch: h.epoch, accelerator: h.accelerator }
    : null;

/** How long CreateMigration's preflight stands for the run that starts right after it. */
const FRESH_PREFLIGHT_MS = 1000;

const disksCopied = (m: MigrationRow): boolean => m.diskPlan.some((d) => d.targetSrId);

/** Past the switch: the clean-up's calls, recorded as pending before the first is made. */
function cleaningUp(r: MigrationRow): MigrationChanges {
  return {
    step: 'cleaning-up',
    pending:
      r.step === 'completed-on-destination'
        ? cleanupActions().filter((a) => a !== 'FINISH_INCOMING')
        : cleanupActions(),
    progress: overallProgress('CLEANUP', 0, disksCopied(r)),
    ...withPhase(r, 'CLEANUP'),
  };
}

/**
 * QUEUED → RUNNING. A migration admitted straight after CreateMigration's own preflight (not queued, not
 * resumed) passes its preflight in the same record: those checks ran a moment ago, and BeginVmMigration and
 * PrepareVmDiskMigration check again, atomically, so a second round would only lengthen the migration.
 */
function admission(r: MigrationRow): MigrationChanges {
  const now = new Date();
  const running = { state: 'RUNNING' as const, stateReason: '', startedAt: now };
  const preflight = withPhase(r, 'PREFLIGHT', '', now);
  if (now.getTime() - r.createdAt.getTime() >= FRESH_PREFLIGHT_MS || r.step !== 'queued')
    return { ...running, ...preflight };
  const checked = { ...r, ...withPhase(r, 'PREFLIGHT', 'checked when the migration was created', now) };
  return {
    ...running,
    step: 'preflighted',
    progress: overallProgress('PREPARE', 0, false),
    ...withPhase(checked, 'PREPARE', '', now),
  };
}

/**
 * Runs migrations in this process: admits QUEUED ones within the per-host limits, drives each RUNNING one
 * through its phases (every step recorded after it is done, every call idempotent by migration id, so a
 * restart repeats the last one), rolls back before the point of no return and only ever finishes after it.
 * A reconciler picks up runs that are not in flight (after a restart) and retries leftovers of finished ones.
 */
export class MigrationRunner {
  private readonly inFlight = new Map<string, { run: Promise<void>; stop: AbortController }>();
  /** Cut the current long poll of a run (a cancel arrived). */
  private readonly pokes = new Map<string, AbortController>();
  private readonly lastStatsWrite = new Map<string, number>();
  private admitting: Promise<void> = Promise.resolve();
  private reconciler?: NodeJS.Timeout;
  private reconciling: Promise<void> = Promise.resolve();
  private reconcilerBusy = false;
  private stopping = false;
  /** Runs found unfinished at start: they are resumed (asking the source where it stands), not continued. */
  private readonly resuming = new Set<string>();

  constructor(
    private readonly records: MigrationRecords,
    private readonly peers: MigrationPeers,
    private readonly preflight: Preflight,
    private readonly metrics: MigrationMetrics,
    private readonly logger: Logger,
    private readonly settings: RunnerSettings,
  ) {}

  /** Resumes every unfinished migration and starts the reconciler. */
  async start(): Promise<void> {
    for (const m of await this.records.unfinished()) {
      if (m.state === 'QUEUED') continue;
      this.resuming.add(m.id);
      this.enqueue(m.id);
    }
    await this.admitQueued();
    await this.retryLeftovers();
    this.reconciler = setInterval(() => void this.reconcile(), this.settings.reconcileEveryMs);
    this.reconciler.unref();
  }

  /** Stops as a crash would: runs are cut mid-step and nothing more is recorded. */
  async stop(): Promise<void> {
    this.stopping = true;
    clearInterval(this.reconciler);
    for (const f of this.inFlight.values()) f.stop.abort(new Halt('service stopping'));
    await Promise.allSettled([...this.inFlight.values()].map((f) => f.run));
    await this.reconciling;
    await this.admitting;
  }

  runningCount(): number {
    return this.inFlight.size;
  }

  /** A cancel arrived: the run notices at its next check instead of after its current long poll. */
  poke(id: string): void {
    this.pokes.get(id)?.abort(new CancelRequested());
    if (!this.inFlight.has(id)) this.enqueue(id);
  }

  /** Starts the QUEUED migrations the per-host limits allow, oldest first (serialised in this process). */
  admitQueued(): Promise<void> {
    const next = this.admitting.then(async () => {
      if (this.stopping) return;
      const open = await this.records.unfinished();
      const running = open.filter((m) => m.state !== 'QUEUED');
      const queued = open.filter((m) => m.state === 'QUEUED');
      for (const m of admit(running, queued, this.settings.limits)) {
        const started = await this.records.change(m.id, (r) =>
          r.state === 'QUEUED' ? admission(r) : undefined,
        );
        if (started.state === 'RUNNING') this.enqueue(m.id, started);
      }
      const stillQueued = queued.filter((q) => !admit(running, [q], this.settings.limits).length);
      for (const q of stillQueued) {
        const reason = queueReason(q, running, this.settings.limits);
        if (q.stateReason !== reason)
          await this.records.change(q.id, (r) =>
            r.state === 'QUEUED' ? { stateReason: reason } : undefined,
          );
      }
    });
    this.admitting = next.catch((e: unknown) =>
      this.logger.warn({ err: e }, 'admitting queued migrations failed'),
    );
    return this.admitting;
  }

  /** Runs the migration in this process unless it runs already; `admitted`: its row as admission wrote it. */
  enqueue(id: string, admitted?: MigrationRow): void {
    if (this.stopping || this.inFlight.has(id)) return;
    const stop = new AbortController();
    const run = (async () => {
      await new Promise((r) => setImmediate(r));
      try {
        await this.drive(id, stop.signal, admitted);
      } catch (e) {
        if (stop.signal.aborted) return;
        this.logger.warn({ err: e, migrationId: id }, 'migration run interrupted; the reconciler retries it');
      } finally {
        this.inFlight.delete(id);
        this.pokes.delete(id);
      }
      if (!this.stopping) void this.admitQueued();
    })();
    this.inFlight.set(id, { run, stop });
  }

  // ---------------------------------------------------------------------------------------------------
  // The run

  private async drive(id: string, signal: AbortSignal, admitted?: MigrationRow): Promise<void> {
    let m = admitted ?? (await this.records.get(id));
    if (isFinished(m)) return;
    if (m.state === 'QUEUED') return;
    const resuming = this.resuming.delete(id);
    let decision = resumeDecision({
      state: m.state,
      step: m.step,
      pointOfNoReturnPassed: m.pointOfNoReturnPassed,
      outgoing:
        resuming && reached(m.step, 'mirror-started') ? await this.outgoingView(m, signal) : undefined,
    });
    if (!resuming && decision === 'wait') decision = 'continue';
    if (decision === 'wait') {
      // The source agent cannot say where its QEMU stands: ask again later (the timeout still applies).
      if (this.timedOut(m)) decision = 'rollback';
      else {
        this.resuming.add(id);
        await sleep(this.settings.retryDelayMs, signal);
        throw new Error('source agent unreachable: resume later');
      }
    }
    if (decision === 'rollback')
      return this.rollback(m, this.timedOut(m) ? timeoutStatus(m) : lostTrackStatus(m), signal);
    if (decision === 'continue') {
      try {
        m = await this.forward(m, signal);
      } catch (e) {
        if (signal.aborted || e instanceof Halt) throw e;
        const fresh = await this.records.get(id);
        if (fresh.pointOfNoReturnPassed) throw e;
        if (e instanceof CancelRequested || fresh.state === 'CANCELLING')
          return this.rollback(fresh, cancelledStatus(), signal);
        const st =
          e instanceof RunFailure
            ? e.status
            : statusOf(e instanceof DomainError ? e : peerError('migration', e));
        this.logger.info(
          { migrationId: id, reason: st.message },
          'migration failed before its point of no return: rolling back',
        );
        return this.rollback(fresh, st, signal);
      }
    }
    await this.finishAfterCommit(m, signal);
  }

  /** PREFLIGHT → PREPARE → MIRROR → TRANSFER, then the commit. Returns the row past the point of no return. */
  private async forward(m: MigrationRow, signal: AbortSignal): Promise<MigrationRow> {
    const id = m.id;
    if (!reached(m.step, 'preflighted')) {
      if (m.phase !== 'PREFLIGHT') m = await this.records.change(id, (r) => withPhase(r, 'PREFLIGHT'));
      const pre = await this.preflight.run({
        spec: specOf(m),
        tenantId: m.tenantId,
        migrationId: id,
        otherMigration: async (vmId) =>
          (await this.records.activeForVm(vmId)).find((o) => o.id !== id && o.state !== 'QUEUED')?.id,
      });
      if (!pre.check.migratable) throw new RunFailure(blockersStatus(pre.check.blockers));
      m = await this.step(id, 'preflighted', {}, `${pre.check.warnings.length} warnings`);
    }
    let begin: computeV1.BeginVmMigrationResponse | undefined;
    let disks: storageV1.PrepareVmDiskMigrationResponse | undefined;
    const doBegin = () =>
      this.retrying(signal, () =>
        this.peers.compute((c) =>
          c.beginVmMigration({
            vmId: m.vmId,
            tenantId: m.tenantId,
            migrationId: id,
            operationId: m.operationId,
            destinationHostId: m.destinationHostId,
          }),
        ),
      );
    const doPrepareDisks = () =>
      this.retrying(signal, () =>
        this.peers.storage((s) =>
          s.prepareVmDiskMigration({
            vmId: m.vmId,
            migrationId: id,
            sourceHostId: m.sourceHostId,
            destinationHostId: m.destinationHostId,
            withStorage: m.withStorage,
            vdiMap: m.requestedVdiMap,
          }),
        ),
      );
    const doReadLayout = (source: HostRef) =>
      this.retrying(signal, () =>
        this.peers.agent(source, (a) =>
          a.getVmDeviceLayout({ epoch: source.epoch, migrationId: id, vmId: m.vmId }),
        ),
      );
    let layout: migrationV1.GetVmDeviceLayoutResponse | undefined;
    // Compute's begin, then storage's prepare beside the source's device layout (a read): one record for
    // both steps ('begun' has none of its own; a rollback from 'preflighted' undoes both).
    let hosts: MigrationChanges = {};
    if (!reached(m.step, 'begun')) {
      // The row is fresh here: just read or written (by admission, the preflight's record).
      m = this.going(m);
      begin = await doBegin();
      const source = hostRef(begin.source);
      const destination = hostRef(begin.destination);
      hosts = {
        sourceHost: source,
        destinationHost: destination,
        sourceHostId: source?.id ?? m.sourceHostId,
        destinationHostId: destination?.id ?? m.destinationHostId,
      };
      m = { ...m, ...hosts };
    }
    if (!reached(m.step, 'disks-prepared')) {
      if (!begin) m = await this.checkpoint(id);
      [disks, layout] = await bothSettled(doPrepareDisks(), doReadLayout(src(m)));
      const plan = disks.plan.map((d) => ({
        vbdId: d.vbdId,
        vdiId: d.vdiId,
        srId: d.srId,
        targetSrId: d.targetSrId,
        sizeBytes: d.sizeBytes,
      }));
      const copied = plan.filter((d) => d.targetSrId);
      m = await this.step(
        id,
        'disks-prepared',
        {
          ...hosts,
          diskPlan: plan,
          vdiMap: Object.fromEntries(copied.map((d) => [d.vdiId, d.targetSrId])),
          stats: { ...m.stats, storageTotalBytes: copied.reduce((n, d) => n + d.sizeBytes, 0) },
        },
        `${plan.length} disks, ${copied.length} to copy`,
      );
    }
    if (!reached(m.step, 'incoming-prepared')) {
      m = await this.checkpoint(id);
      begin ??= await doBegin();
      disks ??= await doPrepareDisks();
      const spec = expectSpec(begin.spec);
      const destDisks = disks.disks;
      // The destination rebuilds the source's machine (disks hot-plugged since boot sit elsewhere).
      const { deviceLayout } = layout ?? (await doReadLayout(src(m)));
      const res = await this.retrying(signal, () =>
        this.peers.agent(dest(m), (a) =>
          a.prepareIncoming({
            epoch: dest(m).epoch,
            migrationId: id,
            spec: { ...spec, disks: destDisks },
            receiveVbdIds: m.diskPlan.filter((d) => d.targetSrId).map((d) => d.vbdId),
            postCopy: m.options.postCopy,
            sourceDeviceLayout: deviceLayout,
          }),
        ),
      );
      m = await this.step(
        id,
        'incoming-prepared',
        {
          incoming: {
            migrationAddress: res.migrationAddress,
            nbdAddress: res.nbdAddress,
            nbdExports: res.nbdExports,
            nics: res.status?.nics ?? [],
          },
        },
        `incoming VM waits on ${dest(m).name} at ${res.migrationAddress}`,
      );
    }
    if (disksCopied(m)) {
      if (!reached(m.step, 'mirror-started')) {
        m = await this.checkpoint(id);
        const incoming = expectIncoming(m);
        await this.retrying(signal, () =>
          this.peers.agent(src(m), (a) =>
            a.startDiskMirror({
              epoch: src(m).epoch,
              migrationId: id,
              vmId: m.vmId,
              targets: m.diskPlan
                .filter((d) => d.targetSrId)
                .map((d) => ({
                  vbdId: d.vbdId,
                  nbdAddress: incoming.nbdAddress,
                  exportName: incoming.nbdExports[d.vbdId] ?? '',
                })),
              bandwidthBytesPerSec: m.bandwidthBytesPerSec,
            }),
          ),
        );
        m = await this.step(id, 'mirror-started');
      }
      if (!reached(m.step, 'mirror-ready')) {
        await this.followMirror(m, signal);
        m = await this.step(
          id,
          'mirror-ready',
          {},
          `${m.diskPlan.filter((d) => d.targetSrId).length} disks in sync`,
        );
      }
    }
    if (!reached(m.step, 'outgoing-started')) {
      m = await this.checkpoint(id);
      await this.retrying(signal, () =>
        this.peers.agent(src(m), (a) =>
          a.startOutgoing({
            epoch: src(m).epoch,
            migrationId: id,
            vmId: m.vmId,
            destinationAddress: expectIncoming(m).migrationAddress,
            // Always explicit: QEMU's own defaults cap the link at 128 MiB/s (HOST-NOTES §4).
            parameters: {
              downtimeLimitMs: m.options.downtimeLimitMs,
              bandwidthBytesPerSec: m.bandwidthBytesPerSec,
              autoConverge: m.options.autoConverge,
              postCopy: m.options.postCopy,
              // Armed: the source agent continues at pre-switchover itself, so the guest's pause holds no
              // round trip to this service. The switch stays the source's decision: a rollback asks it first.
              switchWhenReady: true,
            },
          }),
        ),
      );
      m = await this.step(id, 'outgoing-started', {
        stats: { ...m.stats, setupTimeMs: Date.now() - (m.startedAt?.getTime() ?? Date.now()) },
      });
    }
    const { how, last } = await this.followTransfer(m, signal);
    return this.commit(m, how, signal, last);
  }

  /** MIRROR: waits until every copied disk is in sync. */
  private async followMirror(m: MigrationRow, signal: AbortSignal): Promise<void> {
    for (;;) {
      m = await this.checkpoint(m.id);
      const st = await this.pollOutgoing(m, signal);
      if (!st) continue;
      if (st.state === S.OUTGOING_STATE_FAILED || st.state === S.OUTGOING_STATE_CANCELLED)
        throw new RunFailure({
          code: grpcStatus.ABORTED,
          message: `the disk mirror failed on the source: ${st.error || st.state}`,
          details: [],
        });
      const failed = st.disks.find((d) => d.error);
      if (failed)
        throw new RunFailure({
          code: grpcStatus.ABORTED,
          message: `mirroring disk ${failed.vbdId} failed: ${failed.error}`,
          details: [],
        });
      const total = st.disks.reduce((n, d) => n + d.totalBytes, 0);
      const done = st.disks.reduce((n, d) => n + d.doneBytes, 0);
      await this.progress(
        m,
        { storageTotalBytes: total, storageTransferredBytes: done },
        total ? done / total : 0,
      );
      if (st.disks.length > 0 && st.disks.every((d) => d.ready)) return;
    }
  }

  /**
   * TRANSFER: follows pre-copy until the source waits for the switchover ('switchover') or has switched
   * already, as armed ('switched', with the source's final status), or post-copy is due.
   */
  private async followTransfer(
    m: MigrationRow,
    signal: AbortSignal,
  ): Promise<{ how: 'switchover' | 'switched' | 'post-copy'; last?: migrationV1.OutgoingStatus }> {
    const detector = new ConvergenceDetector(remediesOn(m.sourceHost?.accelerator ?? ''));
    let lastRound = 0;
    let previousThrottle = 0;
    let lastState: migrationV1.OutgoingState | undefined;
    for (;;) {
      // While the source sends the device state (DEVICE) the guest is paused and a cancel or a time-out can
      // no longer win: the next status is asked at once, without a database read first. A DEVICE that
      // outlasts a whole long poll gets the usual checks again.
      const switching = lastState === S.OUTGOING_STATE_DEVICE;
      if (!switching) m = await this.checkpoint(m.id);
      const st = await this.pollOutgoing(m, signal);
      if (!st) continue;
      lastState = switching && st.state === S.OUTGOING_STATE_DEVICE ? undefined : st.state;
      // The source is paused from PRE_SWITCHOVER on: nothing but the switch may happen before it
      // (the statistics are recorded at completion).
      if (st.state === S.OUTGOING_STATE_PRE_SWITCHOVER) return { how: 'switchover' };
      // Armed, the source switches by itself. The point of no return and compute's commit wait for its
      // COMPLETED: a destination that fails to load the device state makes QEMU resume the guest on the
      // source, and then this is a failure before the switch (the rollback asks the source first).
      if (st.state === S.OUTGOING_STATE_DEVICE) continue;
      if (st.state === S.OUTGOING_STATE_COMPLETED) return { how: 'switched', last: st };
      await this.progress(m, statsOf(st, m.stats), transferFraction(st));
      switch (st.state) {
        case S.OUTGOING_STATE_FAILED:
          throw new RunFailure({
            code: grpcStatus.ABORTED,
            message: `the source QEMU failed the migration: ${st.error || 'no reason given'} (the destination may have gone away)`,
            details: [],
          });
        case S.OUTGOING_STATE_CANCELLING:
        case S.OUTGOING_STATE_CANCELLED:
          throw new RunFailure({
            code: grpcStatus.ABORTED,
            message: 'the source cancelled the migration',
            details: [],
          });
        case S.OUTGOING_STATE_ACTIVE: {
          if (st.rounds <= lastRound) break;
          lastRound = st.rounds;
          const verdict = detector.add({
            rounds: st.rounds,
            remainingBytes: st.memoryRemainingBytes,
            dirtyRateBytesPerSec: st.dirtyRateBytesPerSec,
            transferRateBytesPerSec: st.transferRateBytesPerSec || m.bandwidthBytesPerSec,
            expectedDowntimeMs: st.expectedDowntimeMs,
            downtimeLimitMs: m.options.downtimeLimitMs,
          });
          const r = remedy(
            verdict,
            {
              rounds: st.rounds,
              throttlePercent: st.cpuThrottlePercent,
              previousThrottlePercent: previousThrottle,
            },
            m.options,
          );
          previousThrottle = st.cpuThrottlePercent;
          if (r.action === 'post-copy') {
            await this.records.change(m.id, (row) => withDetail(row, r.reason));
            return { how: 'post-copy' };
          }
          if (r.action === 'give-up')
            throw new RunFailure({ code: grpcStatus.ABORTED, message: r.reason, details: [] });
          break;
        }
        default:
          break;
      }
    }
  }

  /**
   * The point of no return: recorded first (a cancel can no longer win), then the switch, then compute. With the
   * switch armed the source agent has usually passed it already ('switched', its final status in `last`):
   * then the record says so and carries QEMU's figures, compute commits, and the next record opens the
   * clean-up, with nothing to send or wait for in between.
   */
  private async commit(
    m: MigrationRow,
    how: 'switchover' | 'switched' | 'post-copy',
    signal: AbortSignal,
    last?: migrationV1.OutgoingStatus,
  ): Promise<MigrationRow> {
    const paused = process.hrtime.bigint();
    const now = new Date();
    const completed = how === 'switched' && last;
    m = await this.records.change(m.id, (r) =>
      r.state !== 'RUNNING' || r.pointOfNoReturnPassed
        ? undefined
        : {
            pointOfNoReturnPassed: true,
            pointOfNoReturnAt: now,
            postCopyStarted: how === 'post-copy',
            step: 'committing',
            ...(completed ? { stats: { ...statsOf(last, r.stats), memoryRemainingBytes: 0 } } : {}),
            ...withPhase(
              r,
              'SWITCHOVER',
              completed
                ? `the source agent switched over as armed; downtime ${last.downtimeMs} ms as QEMU measured`
                : '',
              now,
            ),
          },
    );
    if (!m.pointOfNoReturnPassed) throw new CancelRequested();
    if (!completed) return this.switchOver(m, signal, how === 'switched' ? null : paused);
    await this.commitInCompute(m, signal);
    return this.records.change(m.id, cleaningUp);
  }

  /**
   * SwitchOver (or post-copy), then compute's commit. Only the switch is inside the guest's downtime: compute
   * records the move right after it (the migration holds the VM, so nothing reads its host as settled before
   * the migration ends, and reports from either host leave it alone). `paused`: when the source was seen
   * paused, for the commit path's figure; null when the source had switched over by itself (armed), so
   * there is nothing to send.
   */
  private async switchOver(
    m: MigrationRow,
    signal: AbortSignal,
    paused: bigint | null = process.hrtime.bigint(),
  ): Promise<MigrationRow> {
    const ref = { epoch: src(m).epoch, migrationId: m.id, vmId: m.vmId };
    // A refusal here (the source is no longer waiting) is sorted out by watching the source's state.
    if (paused !== null)
      await this.untilDone(signal, () =>
        this.peers
          .agent(src(m), (a) =>
            m.postCopyStarted
              ? a.tuneOutgoing({ ...ref, bandwidthBytesPerSec: 0, startPostCopy: true })
              : a.switchOver(ref),
          )
          .catch(async (e: unknown) => {
            // A DOWN source cannot be told: whether it switched, the destination says (waitCompleted).
            if (isUnavailable(e) && (await this.peers.hostState(src(m).id)) !== 'DOWN') throw e;
            this.logger.info(
              { err: e, migrationId: m.id },
              'switchover call refused or the source is DOWN; following the source state',
            );
          }),
      );
    // What the phase says so far (a late switch found by a rollback) stays in front.
    const sent = [
      paused === null ? m.phases[m.phases.length - 1]?.detail : '',
      paused === null
        ? 'the source agent switched over as armed'
        : `${m.postCopyStarted ? 'post-copy started' : 'switchover sent'}; commit path ${(Number(process.hrtime.bigint() - paused) / 1e6).toFixed(1)} ms`,
    ]
      .filter(Boolean)
      .join('; ');
    await this.commitInCompute(m, signal);
    return this.step(m.id, 'switched', {}, sent, m.postCopyStarted ? 'POST_COPY' : 'SWITCHOVER');
  }

  /** Compute's commit: the VM's host and forwarded ports move to the destination. */
  private async commitInCompute(m: MigrationRow, signal: AbortSignal): Promise<void> {
    await this.untilDone(signal, () =>
      this.peers.compute((c) =>
        c.commitVmMigration({
          vmId: m.vmId,
          migrationId: m.id,
          nics: (m.incoming?.nics ?? []) as computeV1.Nic[],
        }),
      ),
    );
  }

  /** After the point of no return: the switch (if a restart interrupted it), completion, clean-up. */
  private async finishAfterCommit(m: MigrationRow, signal: AbortSignal): Promise<void> {
    if (m.step === 'lost') return;
    if (!reached(m.step, 'switched')) m = await this.switchOver(m, signal);
    if (!reached(m.step, 'completed')) {
      const outcome = await this.waitCompleted(m, signal);
      if (outcome === 'lost') return;
      m = await this.records.get(m.id);
    }
    if (m.step !== 'cleaning-up') m = await this.records.change(m.id, cleaningUp);
    const succeeded = (r: MigrationRow): MigrationChanges => {
      const finishedAt = new Date();
      return {
        state: 'SUCCEEDED',
        stateReason: '',
        step: 'done',
        progress: 1,
        finishedAt,
        stats: { ...r.stats, totalTimeMs: finishedAt.getTime() - (r.startedAt ?? r.createdAt).getTime() },
        ...withPhase({ ...r, ...withDetail(r, cleanupDetail(r)) }, 'DONE', '', finishedAt),
      };
    };
    m = await this.runPending(m, false, signal, undefined, succeeded);
    if (!isFinished(m)) m = await this.records.change(m.id, succeeded);
    this.metrics.finished(m);
  }

  /** Waits for the source to report COMPLETED; 'lost' when post-copy lost the guest. */
  private async waitCompleted(m: MigrationRow, signal: AbortSignal): Promise<'completed' | 'lost'> {
    let unreachableSince = 0;
    for (;;) {
      if (signal.aborted) throw new Halt();
      let st: migrationV1.OutgoingStatus | undefined;
      try {
        st = await this.pollOutgoing(m, signal, true);
        unreachableSince = 0;
      } catch (e) {
        if (!isUnavailable(e) && !isNotFound(e)) throw e;
        unreachableSince ||= Date.now();
        // The source cannot say: the destination can, once its VM runs.
        if (isNotFound(e) || Date.now() - unreachableSince > 10_000) {
          if (await this.destinationRuns(m)) {
            await this.step(
              m.id,
              'completed-on-destination',
              {},
              'the destination runs the VM; the source did not answer',
            );
            return 'completed';
          }
          if ((await this.peers.hostState(src(m).id)) === 'DOWN' && m.postCopyStarted)
            return this.lose(m, `the source host ${src(m).name} went DOWN during post-copy`, signal);
        }
        await sleep(this.settings.retryDelayMs, signal);
        continue;
      }
      if (!st) continue;
      if (st.state === S.OUTGOING_STATE_COMPLETED) {
        const last = st;
        await this.records.change(m.id, (r) => ({
          step: 'completed',
          stats: { ...statsOf(last, r.stats), memoryRemainingBytes: 0 },
          ...withDetail(
            r,
            `${r.phases[r.phases.length - 1]?.detail ?? ''}; downtime ${last.downtimeMs} ms as QEMU measured`,
          ),
        }));
        return 'completed';
      }
      if (st.state === S.OUTGOING_STATE_PRE_SWITCHOVER) {
        // Post-copy also pauses before its switchover; the point of no return is already recorded.
        await this.peers
          .agent(src(m), (a) => a.switchOver({ epoch: src(m).epoch, migrationId: m.id, vmId: m.vmId }))
          .catch((e: unknown) => this.logger.info({ err: e, migrationId: m.id }, 'SwitchOver retry refused'));
        continue;
      }
      await this.progress(m, statsOf(st, m.stats), 0.5);
      if (st.state === S.OUTGOING_STATE_FAILED || st.state === S.OUTGOING_STATE_CANCELLED) {
        if (await this.destinationRuns(m)) {
          await this.step(m.id, 'completed-on-destination', {}, 'the destination runs the VM');
          return 'completed';
        }
        return this.lose(m, `the migration failed after the switchover: ${st.error || st.state}`, signal);
      }
    }
  }

  /** Whether the destination's incoming VM runs (FinishIncoming answers once it does). */
  private async destinationRuns(m: MigrationRow): Promise<boolean> {
    try {
      await this.peers.agent(dest(m), (a) =>
        a.finishIncoming({ epoch: dest(m).epoch, migrationId: m.id, vmId: m.vmId, timeoutMs: 5000 }),
      );
      return true;
    } catch {
      return false;
    }
  }

  /** Post-copy lost the guest: compute halts the VM naming this migration; the record says so. */
  private async lose(m: MigrationRow, reason: string, signal: AbortSignal): Promise<'lost'> {
    await this.untilDone(signal, () =>
      this.peers.compute((c) => c.endVmMigration({ vmId: m.vmId, migrationId: m.id, lostReason: reason })),
    );
    const finishedAt = new Date();
    const done = await this.records.change(m.id, (r) => ({
      state: 'FAILED',
      stateReason: reason,
      step: 'lost',
      finishedAt,
      error: { code: grpcStatus.DATA_LOSS, message: `the VM was lost: ${reason}`, details: [] },
      pending: ['ABORT_INCOMING', 'CANCEL_OUTGOING'] as PendingAction[],
      ...withPhase(r, 'DONE', '', finishedAt),
    }));
    this.metrics.finished(done);
    return 'lost';
  }

  /**
   * ROLLBACK: undoes what was done, then FAILED or CANCELLED with the VM on the source. The source is asked
   * first: with the switch armed it may have handed the VM over already, and then the migration finishes.
   */
  private async rollback(m: MigrationRow, reason: RunStatus, signal: AbortSignal): Promise<void> {
    if (m.pointOfNoReturnPassed) return;
    const cancelsSource =
      m.step === 'rolling-back'
        ? m.pending.includes('CANCEL_OUTGOING')
        : rollbackActions(m.step).includes('CANCEL_OUTGOING');
    const holder = cancelsSource ? await this.holderAfterCancel(m, signal) : 'source';
    if (holder === 'switched' || holder === 'destination')
      return this.finishLateSwitch(m, reason, holder, signal);
    // A cancel that succeeded is not sent again with the rest of the rollback.
    const sourceCancelled = holder === 'cancelled';
    const undo = (pending: PendingAction[]) =>
      sourceCancelled ? pending.filter((a) => a !== 'CANCEL_OUTGOING') : pending;
    if (m.step !== 'rolling-back' || (sourceCancelled && m.pending.includes('CANCEL_OUTGOING')))
      m = await this.records.change(m.id, (r) =>
        r.pointOfNoReturnPassed
          ? undefined
          : r.step === 'rolling-back'
            ? sourceCancelled
              ? { pending: undo(r.pending) }
              : undefined
            : {
                step: 'rolling-back',
                pending: undo(rollbackActions(r.step)),
                error: r.state === 'CANCELLING' ? cancelledStatus() : reason,
                stateReason: r.state === 'CANCELLING' ? r.stateReason : reason.message,
                progress: 0,
                ...withPhase(r, 'ROLLBACK', reason.message),
              },
      );
    const rolledBack = (r: MigrationRow): MigrationChanges => {
      const cancelled = r.state === 'CANCELLING';
      const finishedAt = new Date();
      return {
        state: cancelled ? 'CANCELLED' : 'FAILED',
        step: 'done',
        finishedAt,
        error: cancelled ? cancelledStatus() : (r.error ?? reason),
        stateReason: cancelled ? 'cancelled by request' : (r.error?.message ?? reason.message),
        ...withPhase({ ...r, ...withDetail(r, cleanupDetail(r)) }, 'DONE', '', finishedAt),
      };
    };
    m = await this.runPending(m, true, signal, undefined, rolledBack);
    if (!isFinished(m)) m = await this.records.change(m.id, rolledBack);
    this.metrics.finished(m);
  }

  /**
   * Cancels the source's migration and says who holds the VM then. A cancel that succeeded means the
   * source keeps it ('cancelled'). One refused as too late means the source switched over (the switch is
   * armed) and the destination has it ('switched'). When the source cannot say (its host is DOWN, or it
   * refuses for another reason), the destination can: it runs the VM only after a switch ('destination');
   * else the source keeps it ('source').
   */
  private async holderAfterCancel(
    m: MigrationRow,
    signal: AbortSignal,
  ): Promise<'cancelled' | 'source' | 'switched' | 'destination'> {
    if (!m.sourceHost) return 'source';
    const ref = { epoch: src(m).epoch, migrationId: m.id, vmId: m.vmId };
    for (let attempt = 1; ; attempt++) {
      if (signal.aborted) throw new Halt();
      try {
        await this.peers.agent(src(m), (a) => a.cancelOutgoing(ref));
        return 'cancelled';
      } catch (e) {
        if (isUnavailable(e) && (await this.peers.hostState(src(m).id)) !== 'DOWN') {
          await sleep(this.settings.retryDelayMs * Math.min(attempt, 5), signal);
          continue;
        }
        if (isFailedPrecondition(e)) {
          // Too late, or refused for another reason: where the source stands says which.
          const state = await this.pollOutgoing(m, signal, true).then(
            (st) => st?.state,
            () => undefined,
          );
          if (state === S.OUTGOING_STATE_COMPLETED) return 'switched';
          // Failed or cancelled after all: the source runs the VM again, so the cancel is repeated (a few times).
          if ((state === S.OUTGOING_STATE_FAILED || state === S.OUTGOING_STATE_CANCELLED) && attempt < 5)
            continue;
          if (
            state === S.OUTGOING_STATE_PRE_SWITCHOVER ||
            state === S.OUTGOING_STATE_DEVICE ||
            state === S.OUTGOING_STATE_POSTCOPY_ACTIVE
          ) {
            // The switch is under way: its outcome decides.
            await sleep(this.settings.retryDelayMs, signal);
            continue;
          }
        }
        return (await this.destinationRuns(m)) ? 'destination' : 'source';
      }
    }
  }

  /**
   * The source had switched over before the rollback reached it: the VM is the destination's, so the
   * migration passes its point of no return after the fact and finishes. A cancel that asked for the
   * rollback is answered by the outcome: SUCCEEDED, with the reason in the phase's detail.
   */
  private async finishLateSwitch(
    m: MigrationRow,
    reason: RunStatus,
    holder: 'switched' | 'destination',
    signal: AbortSignal,
  ): Promise<void> {
    const now = new Date();
    m = await this.records.change(m.id, (r) =>
      r.pointOfNoReturnPassed
        ? undefined
        : {
            state: 'RUNNING',
            stateReason: '',
            error: null,
            pending: [],
            pointOfNoReturnPassed: true,
            pointOfNoReturnAt: now,
            step: 'committing',
            ...withPhase(
              r,
              'SWITCHOVER',
              `the source had switched over before the ${r.state === 'CANCELLING' ? 'cancel' : 'rollback'} reached it (${reason.message}): the destination runs the VM, so the migration finishes`,
              now,
            ),
          },
    );
    this.logger.info({ migrationId: m.id, reason: reason.message }, 'rollback too late: the source switched');
    // Compute's commit; nothing to send to the source, which switched already.
    if (!reached(m.step, 'switched')) m = await this.switchOver(m, signal, null);
    if (holder === 'destination' && !reached(m.step, 'completed'))
      m = await this.step(
        m.id,
        'completed-on-destination',
        {},
        'the destination runs the VM; the source did not answer',
      );
    await this.finishAfterCommit(m, signal);
  }

  /**
   * Makes the pending calls in order. Essential ones (see run-plan) are retried until they succeed; the
   * others get a few tries and are left to the reconciler. A peer's refusal (not an outage) is final: it
   * is noted and dropped.
   */
  private async runPending(
    m: MigrationRow,
    rollingBack: boolean,
    signal: AbortSignal,
    { tries, insist }: { tries: number; insist: boolean } = { tries: 3, insist: true },
    /** The end of the run, written with the record of the last call instead of after it. */
    finish?: (r: MigrationRow) => MigrationChanges,
  ): Promise<MigrationRow> {
    for (let attempt = 1; ; attempt++) {
      // The calls no other pending call must precede run together (different hosts and services); a pass
      // ends when nothing more could run. What settled is recorded once, after the passes: every call is
      // idempotent, so a restart in between only repeats some.
      let pending = m.pending;
      const settled: PendingAction[] = [];
      const notes: string[] = [];
      for (;;) {
        if (signal.aborted) throw new Halt();
        const ready = pending.filter((a) => !blockedBy(a, pending));
        const outcomes = (await Promise.all(ready.map((action) => this.attempt(m, action)))).filter(
          (o) => o.settled,
        );
        if (!outcomes.length) break;
        settled.push(...outcomes.map((o) => o.action));
        notes.push(...outcomes.map((o) => o.note).filter(Boolean));
        pending = pending.filter((a) => !settled.includes(a));
      }
      if (settled.length)
        m = await this.records.change(m.id, (r) => {
          const passed: MigrationChanges = {
            pending: r.pending.filter((a) => !settled.includes(a)),
            ...(notes.length
              ? withDetail(r, [r.phases[r.phases.length - 1]?.detail, ...notes].filter(Boolean).join('; '))
              : {}),
          };
          return finish && !passed.pending?.length ? { ...passed, ...finish({ ...r, ...passed }) } : passed;
        });
      if (finish && isFinished(m)) return m;
      const essential = m.pending.filter((a) => isEssential(a, rollingBack));
      if (!m.pending.length || ((!insist || !essential.length) && attempt >= tries)) return m;
      await sleep(this.settings.retryDelayMs * Math.min(attempt, 5), signal);
    }
  }

  /**
   * One pending call: settled when it succeeded or was refused (noted and dropped: a refusal is final), or
   * when its host is DOWN; not settled when its peer is unreachable for now.
   */
  private async attempt(
    m: MigrationRow,
    action: PendingAction,
  ): Promise<{ action: PendingAction; settled: boolean; note: string }> {
    try {
      await this.perform(m, action);
      return { action, settled: true, note: '' };
    } catch (e) {
      let note: string;
      if (!isUnavailable(e)) note = `${action}: ${(e as Error).message}`;
      else if (await this.hostGone(m, action)) note = `${action}: skipped, the host is DOWN`;
      else return { action, settled: false, note: '' };
      this.logger.warn({ migrationId: m.id, action, reason: note }, 'migration clean-up call dropped');
      return { action, settled: true, note };
    }
  }

  private async hostGone(m: MigrationRow, action: PendingAction): Promise<boolean> {
    const host = agentHostOf(m, action);
    return host ? (await this.peers.hostState(host.id)) === 'DOWN' : false;
  }

  private async perform(m: MigrationRow, action: PendingAction): Promise<void> {
    const ref = { migrationId: m.id, vmId: m.vmId };
    const host = agentHostOf(m, action);
    // No host recorded: the run never reached that host, so there is nothing to undo there.
    const agent = (fn: (a: AgentCall, epoch: number) => Promise<unknown>) =>
      host ? this.peers.agent(host, (a) => fn(a, host.epoch)) : Promise.resolve(undefined);
    switch (action) {
      case 'CANCEL_OUTGOING':
        await agent((a, epoch) => a.cancelOutgoing({ epoch, ...ref }));
        return;
      case 'ABORT_INCOMING':
        await agent((a, epoch) => a.abortIncoming({ epoch, ...ref }));
        return;
      case 'FINISH_INCOMING':
        await agent((a, epoch) => a.finishIncoming({ epoch, ...ref, timeoutMs: 0 }));
        return;
      case 'FINISH_OUTGOING':
        await agent((a, epoch) => a.finishOutgoing({ epoch, ...ref }));
        return;
      case 'ABORT_DISKS':
        await this.peers.storage((s) => s.abortVmDiskMigration(ref));
        return;
      case 'COMMIT_DISKS':
        await this.peers.storage((s) => s.commitVmDiskMigration(ref));
        return;
      case 'CLEAN_UP_DISKS':
        await this.peers.storage((s) => s.cleanUpVmDiskMigration(ref));
        return;
      case 'END_VM_MIGRATION':
        await this.peers.compute((c) => c.endVmMigration({ ...ref, lostReason: '' }));
        return;
    }
  }

  // ---------------------------------------------------------------------------------------------------
  // Helpers

  /** The fresh record; CancelRequested when a cancel arrived, RunFailure past the timeout. */
  private async checkpoint(id: string): Promise<MigrationRow> {
    return this.going(await this.records.get(id));
  }

  /** `m` if the run may go on; CancelRequested when a cancel arrived, RunFailure past the timeout. */
  private going(m: MigrationRow): MigrationRow {
    if (m.state === 'CANCELLING') throw new CancelRequested();
    if (this.timedOut(m)) throw new RunFailure(timeoutStatus(m));
    return m;
  }

  private timedOut(m: MigrationRow): boolean {
    return (
      !m.pointOfNoReturnPassed && !!m.startedAt && Date.now() - m.startedAt.getTime() > m.options.timeoutMs
    );
  }

  /**
   * One long poll of the source's status. Undefined when it should be asked again: a cancel cut it, or the
   * source agent is unreachable (QEMU keeps migrating without it) and its host is not DOWN.
   */
  private async pollOutgoing(
    m: MigrationRow,
    signal: AbortSignal,
    rethrow = false,
  ): Promise<migrationV1.OutgoingStatus | undefined> {
    const poke = new AbortController();
    this.pokes.set(m.id, poke);
    const onStop = () => poke.abort(new Halt());
    signal.addEventListener('abort', onStop, { once: true });
    try {
      const res = await this.peers.agent(src(m), (a) =>
        a.getOutgoingStatus(
          { epoch: src(m).epoch, migrationId: m.id, vmId: m.vmId, waitMs: this.settings.pollWaitMs },
          { signal: poke.signal, deadlineMs: this.settings.pollWaitMs + 15_000 },
        ),
      );
      return res.status;
    } catch (thrown) {
      if (signal.aborted) throw new Halt();
      if (poke.signal.aborted) return undefined;
      // An agent that dies mid-call cuts the stream (CANCELLED, not by us): the same as unreachable.
      const e = isCancelled(thrown)
        ? peerError(`host ${src(m).name}`, grpcStatusError(grpcStatus.UNAVAILABLE, (thrown as Error).message))
        : thrown;
      if (rethrow) throw e;
      if (isNotFound(e))
        throw new RunFailure({
          code: grpcStatus.ABORTED,
          message: `host ${src(m).name} no longer knows this migration (its agent lost the record)`,
          details: [],
        });
      if (!isUnavailable(e)) throw e;
      if ((await this.peers.hostState(src(m).id)) === 'DOWN')
        throw new RunFailure({
          code: grpcStatus.UNAVAILABLE,
          message: `the source host ${src(m).name} went DOWN before the switchover`,
          details: [],
        });
      await sleep(this.settings.retryDelayMs, signal);
      return undefined;
    } finally {
      signal.removeEventListener('abort', onStop);
      if (this.pokes.get(m.id) === poke) this.pokes.delete(m.id);
    }
  }

  private async outgoingView(m: MigrationRow, signal: AbortSignal): Promise<OutgoingView> {
    if (!m.sourceHost) return { kind: 'gone' };
    try {
      const st = await this.pollOutgoing(m, signal, true);
      return st ? { kind: 'state', state: st.state } : { kind: 'unreachable' };
    } catch (e) {
      if (isNotFound(e)) return { kind: 'gone' };
      if (isUnavailable(e))
        return (await this.peers.hostState(src(m).id)) === 'DOWN'
          ? { kind: 'gone' }
          : { kind: 'unreachable' };
      throw e;
    }
  }

  /** Before the point of no return: a peer that is briefly unreachable (restarting) gets a few more tries. */
  private async retrying<T>(signal: AbortSignal, fn: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn();
      } catch (e) {
        if (!isUnavailable(e) || attempt >= transientTries) throw e;
        await sleep(this.settings.retryDelayMs * attempt, signal);
      }
    }
  }

  /** Repeats a call that must happen (past the point of no return) until its peer answers. */
  private async untilDone<T>(signal: AbortSignal, fn: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      if (signal.aborted) throw new Halt();
      try {
        return await fn();
      } catch (e) {
        if (!isUnavailable(e)) throw e;
        this.logger.warn({ err: e, attempt }, 'peer unreachable past the point of no return: retrying');
        await sleep(this.settings.retryDelayMs * Math.min(attempt, 5), signal);
      }
    }
  }

  /** Records a step passed (and the phase it leads into), with extra facts learnt. */
  private step(
    id: string,
    step: Step,
    extra: MigrationChanges = {},
    detail = '',
    phase?: MigrationPhaseName,
  ): Promise<MigrationRow> {
    return this.records.change(id, (r) => {
      const copied = extra.diskPlan ? extra.diskPlan.some((d) => d.targetSrId) : disksCopied(r);
      const from = r.phase;
      const to = phase ?? (r.pointOfNoReturnPassed ? r.phase : phaseOfStep(step, copied));
      const withDetailApplied = detail ? { ...r, ...withDetail(r, detail) } : r;
      return {
        ...extra,
        step,
        progress: Math.max(r.progress, overallProgress(to, 0, copied)),
        ...(to !== from
          ? withPhase(withDetailApplied as MigrationRow, to)
          : detail
            ? withDetail(r, detail)
            : {}),
      };
    });
  }

  /** Progress and stats, written at most once per statsEveryMs per migration. */
  private async progress(
    m: MigrationRow,
    stats: Partial<MigrationStatsRecord>,
    within: number,
  ): Promise<void> {
    const now = Date.now();
    if (now - (this.lastStatsWrite.get(m.id) ?? 0) < this.settings.statsEveryMs) return;
    this.lastStatsWrite.set(m.id, now);
    await this.records.change(m.id, (r) => ({
      stats: { ...r.stats, ...stats },
      progress: Math.max(r.progress, overallProgress(r.phase, within, disksCopied(r))),
    }));
  }

  /** Leftover calls of finished migrations (an agent was down): one more try each. */
  private async retryLeftovers(): Promise<void> {
    for (const m of await this.records.withLeftovers()) {
      if (this.stopping || this.inFlight.has(m.id)) continue;
      const never = new AbortController();
      await this.runPending(m, !m.pointOfNoReturnPassed, never.signal, { tries: 1, insist: false }).catch(
        (e: unknown) =>
          this.logger.warn({ err: e, migrationId: m.id }, 'retrying migration leftovers failed'),
      );
    }
  }

  private reconcile(): Promise<void> {
    if (this.stopping || this.reconcilerBusy) return this.reconciling;
    this.reconcilerBusy = true;
    this.reconciling = this.reconcileOnce().finally(() => (this.reconcilerBusy = false));
    return this.reconciling;
  }

  private async reconcileOnce(): Promise<void> {
    try {
      for (const m of await this.records.unfinished())
        if (m.state !== 'QUEUED' && !this.inFlight.has(m.id)) this.enqueue(m.id);
      await this.admitQueued();
      await this.retryLeftovers();
    } catch (e) {
      this.logger.warn({ err: e }, 'migration reconciler pass failed');
    }
  }
}

// -----------------------------------------------------------------------------------------------------

const src = (m: MigrationRow): HostRef => {
  if (!m.sourceHost)
    throw new DomainError(ErrorCode.Internal, `migration ${m.id} has no recorded source host`);
  return m.sourceHost;
};
const dest = (m: MigrationRow): HostRef => {
  if (!m.destinationHost)
    throw new DomainError(ErrorCode.Internal, `migration ${m.id} has no recorded destination host`);
  return m.destinationHost;
};

function agentHostOf(m: MigrationRow, action: PendingAction): HostRef | null {
  if (action === 'CANCEL_OUTGOING' || action === 'FINISH_OUTGOING') return m.sourceHost;
  if (action === 'ABORT_INCOMING' || action === 'FINISH_INCOMING') return m.destinationHost;
  return null;
}

function expectSpec(spec: computeV1.VmSpec | undefined): computeV1.VmSpec {
  if (!spec)
    throw new DomainError(ErrorCode.Internal, 'compute BeginVmMigration answered without the VM spec');
  return spec;
}

function expectIncoming(m: MigrationRow) {
  if (!m.incoming) throw new DomainError(ErrorCode.Internal, `migration ${m.id} has no incoming VM recorded`);
  return m.incoming;
}

export function specOf(m: MigrationRow): migrationV1.MigrationSpec {
  return {
    vmId: m.vmId,
    destinationHostId: m.destinationHostId,
    mode: `MIGRATION_MODE_${m.mode}` as migrationV1.MigrationMode,
    withStorage: m.withStorage,
    vdiMap: m.requestedVdiMap,
    options: { ...m.options },
  };
}

function statsOf(st: migrationV1.OutgoingStatus, prev: MigrationStatsRecord): MigrationStatsRecord {
  const disks = st.disks ?? [];
  return {
    ...prev,
    downtimeMs: st.downtimeMs || prev.downtimeMs,
    bytesTransferred: st.bytesTransferred,
    memoryTotalBytes: st.memoryTotalBytes,
    memoryRemainingBytes: st.memoryRemainingBytes,
    storageTotalBytes: disks.length ? disks.reduce((n, d) => n + d.totalBytes, 0) : prev.storageTotalBytes,
    storageTransferredBytes: disks.length
      ? disks.reduce((n, d) => n + d.doneBytes, 0)
      : prev.storageTransferredBytes,
    rounds: st.rounds,
    dirtyRateBytesPerSec: st.dirtyRateBytesPerSec || prev.dirtyRateBytesPerSec,
    transferRateBytesPerSec: st.transferRateBytesPerSec || prev.transferRateBytesPerSec,
    expectedDowntimeMs: st.expectedDowntimeMs,
    cpuThrottlePercent: st.cpuThrottlePercent,
    postCopyRequests: st.postCopyRequests,
  };
}

function transferFraction(st: migrationV1.OutgoingStatus): number {
  return st.memoryTotalBytes > 0
    ? st.memoryTransferredBytes / (st.memoryTransferredBytes + st.memoryRemainingBytes)
    : 0;
}

const isNotFound = (e: unknown): boolean => e instanceof DomainError && e.code === ErrorCode.NotFound;
const isCancelled = (e: unknown): boolean => e instanceof DomainError && e.code === ErrorCode.Cancelled;
const isFailedPrecondition = (e: unknown): boolean =>
  e instanceof DomainError && e.code === ErrorCode.FailedPrecondition;

const cancelledStatus = (): RunStatus => ({
  code: grpcStatus.CANCELLED,
  message: 'cancelled by request',
  details: [],
});

const timeoutStatus = (m: MigrationRow): RunStatus => ({
  code: grpcStatus.DEADLINE_EXCEEDED,
  message: `the point of no return was not reached within options.timeout_ms (${m.options.timeoutMs} ms): rolled back`,
  details: [],
});

const lostTrackStatus = (m: MigrationRow): RunStatus => ({
  code: grpcStatus.ABORTED,
  message: `the migration service restarted at step ${m.step} and the source no longer migrates: rolled back`,
  details: [],
});

function cleanupDetail(m: MigrationRow): string {
  const open = m.phases[m.phases.length - 1]?.detail ?? '';
  if (!m.pending.length) return open;
  return [open, `left for the reconciler: ${m.pending.join(', ')}`].filter(Boolean).join('; ');
}

function queueReason(q: MigrationRow, running: MigrationRow[], limits: SlotLimits): string {
  if (running.some((r) => r.vmId === q.vmId)) return 'waiting for another migration of the same VM';
  const out = running.filter((r) => r.sourceHostId === q.sourceHostId).length;
  if (out >= limits.outgoing)
    return `waiting for a slot: host ${q.sourceHostId} sends ${out} migrations (at most ${limits.outgoing} at once)`;
  const inc = running.filter((r) => r.destinationHostId === q.destinationHostId).length;
  return `waiting for a slot: host ${q.destinationHostId} receives ${inc} migrations (at most ${limits.incoming} at once)`;
}

/**
 * Both results, or the first failure once neither call is still under way: a rollback must not undo a call
 * that is still to land (storage recording a prepare after its abort found nothing).
 */
async function bothSettled<A, B>(a: Promise<A>, b: Promise<B>): Promise<[A, B]> {
  const [ra, rb] = await Promise.allSettled([a, b]);
  if (ra.status === 'rejected') throw ra.reason;
  if (rb.status === 'rejected') throw rb.reason;
  return [ra.value, rb.value];
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(new Halt());
    const t = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(new Halt());
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
