import {
  DriverError,
  DriverIncoming,
  DriverIncomingOptions,
  DriverMigrationParameters,
  DriverMirrorTarget,
  DriverOutgoingStatus,
  DriverVmSpec,
  DriverVmStatus,
} from '../driver';
import { initialDiskLayout, QemuLaunchSpec } from './qemu-command';
import { asDriverError, insertedNode } from './qemu-disk-ops';
import { diskNodeName } from './qemu-disks';
import {
  cancelMemoryMigration,
  continueSwitchOver,
  emptyOutgoingStatus,
  isQemuGone,
  listenForIncoming,
  mirrorJobId,
  mirrorTargetNode,
  otherMigrationInProgress,
  outgoingInProgress,
  parseHostPort,
  positiveInteger,
  queryMigrate,
  releaseMirrors,
  requireMirrorsReady,
  startMemoryMigration,
  startMirrors,
  stopNbdServer,
  tuneMigration,
  validateListenHost,
  validateMigrationId,
  waitIncomingRunning,
  watchOutgoingStatus,
} from './qemu-migration-qmp';
import { QmpClient } from './qmp-client';
import { OutgoingMigrationRecord, VmDirectory } from './vm-directory';
import { validateDiskId, validateDriverVmSpec, validateVmId } from './vm-spec-validation';

/** A VM's QEMU as the driver watches it: what the migration steps use of it. */
export interface MigrationVm {
  dir: VmDirectory;
  launch: QemuLaunchSpec;
  qmp: QmpClient;
}

/** What the migration steps need of the driver: its per-VM lock and the QEMUs it watches. */
export interface MigrationHost<V extends MigrationVm> {
  readonly stateDir: string;
  /** Why this host takes no part in post-copy (no userfaultfd, TCG), or undefined when it may. */
  postCopyRefusal(): string | undefined;
  log(line: string): void;
  /** Serialises operations on one VM with every other driver operation on it. */
  withLock<T>(vmId: string, fn: () => Promise<T>): Promise<T>;
  /** The VM's live QEMU (adopted if a restarted agent does not watch it yet); undefined when none runs. */
  handle(dir: VmDirectory): Promise<V | undefined>;
  /** The VM's live QEMU; DriverError('invalid-state') when it does not run here. */
  requireRunning(vmId: string): Promise<V>;
  /** Writes spec.json for a first launch of `spec` and starts its QEMU with `-incoming defer`. */
  launchIncoming(dir: VmDirectory, spec: DriverVmSpec, sourceLayout: string): Promise<V>;
  /** Quits the QEMU: a planned exit, never reported as the VM stopping. */
  stopQemu(vm: V): Promise<void>;
  /** Stops the VM's QEMU if it runs and removes its directory (not its disk files). */
  removeVm(dir: VmDirectory): Promise<void>;
  statusOf(vm: V): Promise<DriverVmStatus>;
}

/**
 * The driver's live-migration methods (see the migration section of driver.ts) for QEMU: each checks its
 * input and this host's side of the migration, recorded in the VM's migration.json, and runs the QMP
 * steps of qemu-migration-qmp.ts under the VM's lock. Every method is idempotent for its migration id and
 * works from a new driver instance on the same state directory (an agent restart), since the record and
 * QEMU hold all there is to know.
 */
export class QemuMigrations<V extends MigrationVm> {
  /** Migrations whose switch this process has armed and not yet seen go (or fail). */
  private readonly armed = new Set<string>();

  constructor(private readonly host: MigrationHost<V>) {}

  async prepareIncoming(spec: DriverVmSpec, options: DriverIncomingOptions): Promise<DriverIncoming> {
    const valid = validateDriverVmSpec(spec);
    const migrationId = validateMigrationId(options.migrationId);
    const listenHost = validateListenHost(options.listenHost);
    const ids = valid.disks.map((d, i) => d.id ?? `disk${i}`);
    const receive = options.receiveDiskIds ?? [];
    receive.forEach((id, i) => {
      if (!ids.includes(id))
        throw new DriverError('invalid-spec', `receiveDiskIds[${i}]: ${id} is not the id of a disk of spec`);
    });
    if (options.postCopy) this.refusePostCopy();
    return this.host.withLock(valid.vmId, async () => {
      const dir = new VmDirectory(this.host.stateDir, valid.vmId);
      const record = dir.exists() ? dir.readMigration() : undefined;
      let handle = await this.host.handle(dir);
      const ours = record?.role === 'incoming' && record.migrationId === migrationId;
      if (ours && handle && record.migrationAddress)
        return {
          migrationAddress: record.migrationAddress,
          ...(record.nbdAddress ? { nbdAddress: record.nbdAddress } : {}),
          nbdExports: record.nbdExports,
          status: await this.host.statusOf(handle),
        };
      if (record && !ours && (record.role === 'incoming' || (await outgoingInProgress(handle?.qmp, record))))
        throw otherMigrationInProgress(valid.vmId, record);
      if (handle && !ours)
        throw new DriverError(
          'invalid-state',
          `vm ${valid.vmId} already runs on this host: nothing to receive`,
        );
      // An earlier attempt that did not finish setting up: start over with a fresh QEMU.
      if (handle) await this.host.stopQemu(handle);
      if (dir.hasSavedState())
        throw new DriverError(
          'invalid-state',
          `vm ${valid.vmId} is SUSPENDED on this host: nothing to receive`,
        );
      // Recorded before QEMU starts, so that its exit is the migration's, not the VM's (and recover keeps it).
      dir.create();
      dir.writeMigration({ role: 'incoming', migrationId, postCopy: options.postCopy, nbdExports: {} });
      handle = undefined;
      try {
        handle = await this.host.launchIncoming(dir, valid, options.sourceDeviceLayout ?? '');
        const disks = handle.launch.vm.disks;
        const exports = receive.map((diskId) => {
          const disk = disks[ids.indexOf(diskId)];
          return { diskId, nodeName: diskNodeName(diskId, disk.path) };
        });
        const listening = await listenForIncoming(handle.qmp, {
          listenHost,
          postCopy: options.postCopy,
          exports,
        });
        dir.writeMigration({ role: 'incoming', migrationId, postCopy: options.postCopy, ...listening });
        this.host.log(
          `vm ${valid.vmId}: incoming migration ${migrationId} listens on ${listening.migrationAddress}`,
        );
        return { ...listening, status: await this.host.statusOf(handle) };
      } catch (e) {
        if (handle) await this.host.stopQemu(handle).catch(() => undefined);
        dir.remove();
        throw asDriverError(e, `vm ${valid.vmId}: preparing incoming migration ${migrationId} failed`);
      }
    });
  }

  async startDiskMirror(
    vmId: string,
    migrationId: string,
    targets: DriverMirrorTarget[],
    bandwidthBytesPerSec: number,
  ): Promise<void> {
    validateVmId(vmId);
    validateMigrationId(migrationId);
    positiveInteger('bandwidthBytesPerSec', bandwidthBytesPerSec);
    targets.forEach((t, i) => {
      validateDiskId(t.diskId, `targets[${i}].diskId`);
      parseHostPort(`targets[${i}].nbdAddress`, t.nbdAddress);
      if (typeof t.exportName !== 'string' || !/^[A-Za-z0-9._:-]{1,256}$/.test(t.exportName))
        throw new DriverError('invalid-spec', `targets[${i}].exportName: must be 1-256 of [A-Za-z0-9._:-]`);
    });
    return this.host.withLock(vmId, async () => {
      const handle = await this.host.requireRunning(vmId);
      const record = await this.claimOutgoing(handle, migrationId);
      const layout = handle.launch.disks ?? initialDiskLayout(handle.launch.vm);
      const sources = [];
      for (const t of targets) {
        const at = layout.findIndex((d) => d.id === t.diskId);
        if (at < 0) throw new DriverError('not-found', `vm ${vmId} has no disk ${t.diskId}`);
        const node = (await insertedNode(handle.qmp, t.diskId))?.['node-name'];
        if (!node) throw new DriverError('not-found', `disk ${t.diskId} is not plugged into vm ${vmId}`);
        sources.push({ ...t, sourceNode: node });
        if (!record.mirrors.some((m) => m.diskId === t.diskId))
          record.mirrors.push({
            diskId: t.diskId,
            jobId: mirrorJobId(t.diskId),
            targetNode: mirrorTargetNode(t.diskId),
          });
      }
      handle.dir.writeMigration(record);
      try {
        await startMirrors(handle.qmp, sources, bandwidthBytesPerSec);
      } catch (e) {
        throw asDriverError(e, `vm ${vmId}: starting the disk mirrors of migration ${migrationId} failed`);
      }
    });
  }

  async startOutgoing(
    vmId: string,
    migrationId: string,
    destinationAddress: string,
    parameters: DriverMigrationParameters,
  ): Promise<void> {
    validateVmId(vmId);
    validateMigrationId(migrationId);
    parseHostPort('destinationAddress', destinationAddress);
    const p = parameters;
    positiveInteger('parameters.downtimeLimitMs', p.downtimeLimitMs, 60_000);
    positiveInteger('parameters.bandwidthBytesPerSec', p.bandwidthBytesPerSec);
    if (
      typeof p.autoConverge !== 'boolean' ||
      typeof p.postCopy !== 'boolean' ||
      !['boolean', 'undefined'].includes(typeof p.switchWhenReady)
    )
      throw new DriverError(
        'invalid-spec',
        'parameters.autoConverge, parameters.postCopy, parameters.switchWhenReady: must be booleans',
      );
    if (p.postCopy) this.refusePostCopy();
    return this.host.withLock(vmId, async () => {
      const handle = await this.host.requireRunning(vmId);
      const record = await this.claimOutgoing(handle, migrationId);
      try {
        if (record.destinationAddress !== undefined) {
          const { status } = await queryMigrate(handle.qmp);
          if (status && !['none', 'failed', 'cancelled'].includes(status)) return; // started already
        }
        const { status } = await handle.qmp.execute('query-status');
        if (status !== 'running' && status !== 'paused')
          throw new DriverError(
            'invalid-state',
            `vm ${vmId} is ${status}: only a running or paused VM migrates`,
          );
        await requireMirrorsReady(handle.qmp, record.mirrors);
        handle.dir.writeMigration({
          ...record,
          destinationAddress,
          parameters: { ...p },
          wasRunning: status === 'running',
        });
        // Armed before `migrate`: an idle guest can reach pre-switchover within milliseconds.
        if (p.switchWhenReady) this.armSwitch(handle.qmp, vmId, migrationId);
        await startMemoryMigration(handle.qmp, destinationAddress, p);
        this.host.log(
          `vm ${vmId}: migration ${migrationId} sends memory to ${destinationAddress}${p.switchWhenReady ? ' (switch armed)' : ''}`,
        );
      } catch (e) {
        throw asDriverError(e, `vm ${vmId}: starting migration ${migrationId} failed`);
      }
    });
  }

  async outgoingStatus(vmId: string, migrationId: string, waitMs: number): Promise<DriverOutgoingStatus> {
    validateVmId(vmId);
    validateMigrationId(migrationId);
    const wait = Math.max(0, Math.min(Number.isFinite(waitMs) ? waitMs : 0, 60_000));
    // Not under the VM's lock: a long poll must not hold up switchOver or cancel.
    const dir = new VmDirectory(this.host.stateDir, vmId);
    const record = this.outgoingRecord(dir, migrationId);
    const handle = await this.host.withLock(vmId, () => this.host.handle(dir));
    const gone = emptyOutgoingStatus('failed', `the source QEMU of vm ${vmId} is gone`);
    if (!handle) return record.cancelled ? emptyOutgoingStatus('cancelled') : gone;
    try {
      return await watchOutgoingStatus(handle.qmp, record, wait, () => this.armed.has(migrationId));
    } catch (e) {
      if (isQemuGone(e)) return gone;
      throw asDriverError(e, `vm ${vmId}: status of migration ${migrationId}`);
    }
  }

  async tuneOutgoing(
    vmId: string,
    migrationId: string,
    tune: { bandwidthBytesPerSec?: number; startPostCopy?: boolean },
  ): Promise<void> {
    validateVmId(vmId);
    validateMigrationId(migrationId);
    if (tune.bandwidthBytesPerSec) positiveInteger('bandwidthBytesPerSec', tune.bandwidthBytesPerSec);
    return this.host.withLock(vmId, async () => {
      const handle = await this.host.requireRunning(vmId);
      const record = this.outgoingRecord(handle.dir, migrationId);
      if (record.cancelled) throw new DriverError('invalid-state', `migration ${migrationId} was cancelled`);
      await tuneMigration(handle.qmp, tune).catch((e: unknown) =>
        Promise.reject(asDriverError(e, `vm ${vmId}: tuning migration ${migrationId} failed`)),
      );
    });
  }

  async switchOver(vmId: string, migrationId: string): Promise<void> {
    validateVmId(vmId);
    validateMigrationId(migrationId);
    return this.host.withLock(vmId, async () => {
      const handle = await this.host.requireRunning(vmId);
      const record = this.outgoingRecord(handle.dir, migrationId);
      if (record.cancelled) throw new DriverError('invalid-state', `migration ${migrationId} was cancelled`);
      // Recorded first: from the moment QEMU may hand the guest over, a cancel must be refused.
      await continueSwitchOver(handle.qmp, {
        commit: () => handle.dir.writeMigration({ ...record, switchedOver: true }, { durable: false }),
        rollback: () => handle.dir.writeMigration(record),
      }).catch((e: unknown) =>
        Promise.reject(asDriverError(e, `vm ${vmId}: switch-over of migration ${migrationId} failed`)),
      );
    });
  }

  async cancelOutgoing(vmId: string, migrationId: string): Promise<void> {
    validateVmId(vmId);
    validateMigrationId(migrationId);
    return this.host.withLock(vmId, async () => {
      const dir = new VmDirectory(this.host.stateDir, vmId);
      const record = dir.exists() ? dir.readMigration() : undefined;
      if (!record || (record.role === 'outgoing' && record.migrationId === migrationId && record.cancelled))
        return; // nothing in flight
      if (record.role !== 'outgoing' || record.migrationId !== migrationId)
        throw otherMigrationInProgress(vmId, record);
      const handle = await this.host.handle(dir);
      if (handle) {
        try {
          if (record.destinationAddress !== undefined)
            await cancelMemoryMigration(handle.qmp, {
              resume: record.wasRunning ?? false,
              switchedOver: record.switchedOver ?? false,
              timeoutMs: 30_000,
            });
          const errors = await releaseMirrors(handle.qmp, record.mirrors, { force: true, timeoutMs: 30_000 });
          if (errors.length)
            this.host.log(`vm ${vmId}: mirrors of ${migrationId} had failed: ${errors.join('; ')}`);
        } catch (e) {
          throw asDriverError(e, `vm ${vmId}: cancelling migration ${migrationId} failed`);
        }
      }
      dir.writeMigration({ ...record, cancelled: true });
      this.host.log(`vm ${vmId}: migration ${migrationId} cancelled; the VM stays here`);
    });
  }

  async finishIncoming(vmId: string, migrationId: string, timeoutMs: number): Promise<DriverVmStatus> {
    validateVmId(vmId);
    validateMigrationId(migrationId);
    return this.host.withLock(vmId, async () => {
      const dir = new VmDirectory(this.host.stateDir, vmId);
      const record = dir.exists() ? dir.readMigration() : undefined;
      const handle = await this.host.handle(dir);
      if (!record && handle) return this.host.statusOf(handle); // finished already: an ordinary VM now
      if (!record || record.role !== 'incoming' || record.migrationId !== migrationId)
        throw record
          ? otherMigrationInProgress(vmId, record)
          : new DriverError('invalid-state', `vm ${vmId} has no incoming migration ${migrationId} here`);
      if (!handle)
        throw new DriverError(
          'failed',
          `vm ${vmId}: the incoming QEMU of migration ${migrationId} is gone (${dir.readState()?.reason ?? 'ended'})`,
        );
      try {
        if (!(await waitIncomingRunning(handle.qmp, timeoutMs || 30_000)))
          throw new DriverError(
            'timeout',
            `vm ${vmId}: migration ${migrationId} has not switched over within ${timeoutMs || 30_000} ms`,
          );
        await stopNbdServer(handle.qmp, Object.keys(record.nbdExports));
      } catch (e) {
        throw asDriverError(e, `vm ${vmId}: finishing incoming migration ${migrationId} failed`);
      }
      dir.writeState('RUNNING');
      dir.removeMigration();
      this.host.log(`vm ${vmId}: incoming migration ${migrationId} finished: the VM runs here`);
      return this.host.statusOf(handle);
    });
  }

  async abortIncoming(vmId: string, migrationId: string): Promise<void> {
    validateVmId(vmId);
    validateMigrationId(migrationId);
    return this.host.withLock(vmId, async () => {
      const dir = new VmDirectory(this.host.stateDir, vmId);
      const record = dir.exists() ? dir.readMigration() : undefined;
      if (!record) {
        if (await this.host.handle(dir))
          throw new DriverError(
            'invalid-state',
            `vm ${vmId} runs on this host as an ordinary VM: not aborted`,
          );
        return;
      }
      if (record.role !== 'incoming' || record.migrationId !== migrationId)
        throw otherMigrationInProgress(vmId, record);
      await this.host.removeVm(dir);
      this.host.log(`vm ${vmId}: incoming migration ${migrationId} aborted`);
    });
  }

  async finishOutgoing(vmId: string, migrationId: string): Promise<void> {
    validateVmId(vmId);
    validateMigrationId(migrationId);
    return this.host.withLock(vmId, async () => {
      const dir = new VmDirectory(this.host.stateDir, vmId);
      if (!dir.exists()) return; // finished already
      const record = this.outgoingRecord(dir, migrationId);
      const handle = await this.host.handle(dir);
      // Without its QEMU (it died after the switch-over) nothing is left to hand over; before the switch-over
      // the destination never had the VM, and what is here is all there is of it.
      if (!handle && !record.switchedOver)
        throw new DriverError(
          'invalid-state',
          `vm ${vmId}: migration ${migrationId} never switched over: the VM's state stays on this host`,
        );
      if (handle) {
        try {
          const { status } = await queryMigrate(handle.qmp);
          if (record.cancelled || status !== 'completed')
            throw new DriverError(
              'invalid-state',
              `vm ${vmId}: migration ${migrationId} is ${record.cancelled ? 'cancelled' : status}, not completed: the VM still needs this host`,
            );
          // READY mirrors complete without a pivot: the destination has every write since the switch-over.
          const errors = await releaseMirrors(handle.qmp, record.mirrors, {
            force: false,
            timeoutMs: 30_000,
          });
          if (errors.length)
            this.host.log(`vm ${vmId}: mirrors of ${migrationId} ended with: ${errors.join('; ')}`);
        } catch (e) {
          throw asDriverError(e, `vm ${vmId}: finishing migration ${migrationId} failed`);
        }
      }
      await this.host.removeVm(dir);
      this.host.log(`vm ${vmId}: migration ${migrationId} finished: the VM left this host`);
    });
  }

  /**
   * The armed switch: when QEMU reports pre-switchover, the migration goes on at once through switchOver, so
   * the guest's pause holds no round trip to the migration service. Under the VM's lock like every call: a
   * cancelOutgoing that came first wins (the record says cancelled, or QEMU no longer waits), and one that
   * comes after is refused. Listens until the migration ends or the QMP connection closes; an agent that
   * restarts in between does not listen again, and the migration service's SwitchOver does it then.
   */
  private armSwitch(qmp: QmpClient, vmId: string, migrationId: string): void {
    const offs: Array<() => void> = [() => this.armed.delete(migrationId)];
    const disarm = () => offs.forEach((off) => off());
    this.armed.add(migrationId);
    offs.push(
      qmp.on('event', (e) => {
        if (e.event !== 'MIGRATION') return;
        const { status } = (e.data ?? {}) as { status?: string };
        if (status === 'pre-switchover') {
          const pausedAt = e.timestamp.seconds * 1000 + e.timestamp.microseconds / 1000;
          this.switchOver(vmId, migrationId).then(
            // What the switch added to the guest's pause: this agent's reaction, QEMU's clock to ours.
            () =>
              this.host.log(
                `vm ${vmId}: migration ${migrationId} switched over ${(Date.now() - pausedAt).toFixed(1)} ms after QEMU paused (armed)`,
              ),
            (err: unknown) => {
              // A status poll waiting on the switch answers pre-switchover now: the service's SwitchOver decides.
              disarm();
              this.host.log(
                `vm ${vmId}: the armed switch of migration ${migrationId} did not go: ${(err as Error).message}`,
              );
            },
          );
        } else if (status === 'completed' || status === 'failed' || status === 'cancelled') disarm();
      }),
      qmp.on('close', disarm),
    );
  }

  /** Throws invalid-state, saying why, when this host takes no part in post-copy. */
  private refusePostCopy(): void {
    const refusal = this.host.postCopyRefusal();
    if (refusal) throw new DriverError('invalid-state', `postCopy: ${refusal}: migrate pre-copy`);
  }

  /** The outgoing record of this migration; not-found without one, invalid-state when another is there. */
  private outgoingRecord(dir: VmDirectory, migrationId: string): OutgoingMigrationRecord {
    const record = dir.exists() ? dir.readMigration() : undefined;
    if (!record) throw new DriverError('not-found', `vm ${dir.vmId} has no migration ${migrationId} here`);
    if (record.role !== 'outgoing' || record.migrationId !== migrationId)
      throw otherMigrationInProgress(dir.vmId, record);
    return record;
  }

  /** This migration's outgoing record, new when the VM has none in progress. */
  private async claimOutgoing(handle: V, migrationId: string): Promise<OutgoingMigrationRecord> {
    const record = handle.dir.readMigration();
    if (record?.role === 'outgoing' && record.migrationId === migrationId && !record.cancelled) return record;
    if (record && (record.role === 'incoming' || (await outgoingInProgress(handle.qmp, record))))
      throw otherMigrationInProgress(handle.dir.vmId, record);
    return { role: 'outgoing', migrationId, mirrors: [] };
  }
}
