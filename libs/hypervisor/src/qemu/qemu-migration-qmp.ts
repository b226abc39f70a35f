import * as fs from 'node:fs';
import * as net from 'node:net';
import { DriverError, DriverMigrationParameters, DriverOutgoingState, DriverOutgoingStatus } from '../driver';
import { diskToken } from './qemu-disks';
import { QemuMigrationStatus, QmpClient, QmpConnectionError, QmpError } from './qmp-client';
import { MigrationRecord, OutgoingMigrationRecord } from './vm-directory';

/**
 * The QMP conversations of a live migration between two QEMUs (HOST-NOTES §4-§5), one function per step the
 * driver exposes. The QEMUs talk directly over TCP: memory to the destination's `migrate-incoming` port, and
 * with storage migration the disk writes through `blockdev-mirror` into the destination's NBD exports.
 * Each function looks at what QEMU has before changing it, so a repeated step after an agent restart
 * finishes instead of failing; the driver holds the per-VM lock and the migration record (migration.json).
 */

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** query-migrate as QEMU 7.2 answers it (qapi/migration.json MigrationInfo), the fields read here. */
interface MigrationInfo {
  status?: QemuMigrationStatus;
  'error-desc'?: string;
  'total-time'?: number;
  downtime?: number;
  'setup-time'?: number;
  'expected-downtime'?: number;
  'cpu-throttle-percentage'?: number;
  ram?: {
    total: number;
    transferred: number;
    remaining: number;
    'dirty-sync-count': number;
    'dirty-pages-rate': number;
    'page-size': number;
    mbps: number;
    'postcopy-requests': number;
  };
  /** Destination: where migrate-incoming listens (port 0 resolved). */
  'socket-address'?: { type: string; host: string; port: string }[];
}

/** query-jobs (qapi/job.json JobInfo): a mirror's progress is its bytes copied out of the disk's size. */
interface JobInfo {
  id: string;
  type: string;
  status: string;
  'current-progress': number;
  'total-progress': number;
  error?: string;
}

/** Name of the mirror job, the NBD client node and the export of a disk: derived, so found again after a restart. */
export const mirrorJobId = (diskId: string): string => `mirror-${diskToken(diskId)}`;
export const mirrorTargetNode = (diskId: string): string => `nbd-${diskToken(diskId)}`;
export const nbdExportName = (diskId: string): string => diskToken(diskId);
const blockExportId = (diskId: string): string => `export-${diskToken(diskId)}`;

/** Memory states in which a cancel still keeps the VM on the source. */
const IN_FLIGHT: QemuMigrationStatus[] = [
  'setup',
  'active',
  'pre-switchover',
  'device',
  'wait-unplug',
  'colo',
];
/** Past the point of no return: the destination runs (or is about to run) the guest. */
const COMMITTED: QemuMigrationStatus[] = [
  'completed',
  'postcopy-active',
  'postcopy-paused',
  'postcopy-recover',
];

export const queryMigrate = (qmp: QmpClient): Promise<MigrationInfo> =>
  qmp.executeRaw('query-migrate') as Promise<MigrationInfo>;

const queryJobs = (qmp: QmpClient): Promise<JobInfo[]> => qmp.executeRaw('query-jobs') as Promise<JobInfo[]>;

async function setCapabilities(qmp: QmpClient, caps: Record<string, boolean>): Promise<void> {
  await qmp.execute('migrate-set-capabilities', {
    capabilities: Object.entries(caps).map(([capability, state]) => ({ capability, state })),
  });
}

/** Post-copy needs userfaultfd on the destination: built into the kernel and usable by this user. */
export function userfaultfdAvailable(): boolean {
  let unprivileged: string;
  try {
    unprivileged = fs.readFileSync('/proc/sys/vm/unprivileged_userfaultfd', 'utf8').trim();
  } catch {
    return false; // kernel without CONFIG_USERFAULTFD
  }
  if (process.getuid?.() === 0 || unprivileged === '1') return true;
  try {
    fs.accessSync('/dev/userfaultfd', fs.constants.R_OK | fs.constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/** A TCP port of `host` nobody listens on right now (the kernel picks it). */
export function freeTcpPort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, host, () => {
      const port = (server.address() as net.AddressInfo).port;
      server.close(() => resolve(port));
    });
  });
}

/** `host:port`, with an IPv6 literal in brackets (as QEMU URIs and NBD addresses write it). */
export const hostPort = (host: string, port: number | string): string =>
  `${net.isIPv6(host) ? `[${host}]` : host}:${port}`;

/** Splits `host:port` (IPv6 in brackets); DriverError('invalid-spec') naming `field` otherwise. */
export function parseHostPort(field: string, address: string): { host: string; port: number } {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(address ?? '');
  const port = m ? Number(m[3]) : 0;
  if (!m || port < 1 || port > 65535)
    throw new DriverError('invalid-spec', `${field}: must be host:port, got ${JSON.stringify(address)}`);
  return { host: m[1] ?? m[2], port };
}

/** An address the listeners may bind to: an IP literal or a host name. */
export function validateListenHost(host: string): string {
  if (typeof host !== 'string' || !(net.isIP(host) || /^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$/.test(host)))
    throw new DriverError(
      'invalid-spec',
      `listenHost: must be an IP address or a host name, got ${JSON.stringify(host)}`,
    );
  return host;
}

// ---- destination ------------------------------------------------------------------------------------------

/**
 * On a QEMU started with `-incoming defer`: the capabilities the destination must share with the source
 * (postcopy-ram is negotiated: the source's advice fails unless the destination enabled it too; return-path
 * and pause-before-switchover are the source's alone), `migrate-incoming` on port 0 of `listenHost` (QEMU
 * reports the bound port in query-migrate), and an NBD server exporting each received disk's node writable.
 */
export async function listenForIncoming(
  qmp: QmpClient,
  options: { listenHost: string; postCopy: boolean; exports: { diskId: string; nodeName: string }[] },
): Promise<{ migrationAddress: string; nbdAddress?: string; nbdExports: Record<string, string> }> {
  try {
    await setCapabilities(qmp, { events: true, 'postcopy-ram': options.postCopy });
  } catch (e) {
    if (e instanceof QmpError && options.postCopy)
      throw new DriverError('invalid-state', `post-copy cannot be enabled on this host: ${e.desc}`);
    throw e;
  }
  await qmp.executeRaw('migrate-incoming', { uri: `tcp:${hostPort(options.listenHost, 0)}` });
  const bound = (await queryMigrate(qmp))['socket-address']?.find((a) => a.type === 'inet');
  if (!bound) throw new DriverError('failed', 'QEMU reports no address for migrate-incoming');
  const migrationAddress = hostPort(options.listenHost, bound.port);
  if (options.exports.length === 0) return { migrationAddress, nbdExports: {} };

  // nbd-server-start has no way to report a port it picked: take a free one, and another if it was
  // taken in between.
  let nbdAddress: string | undefined;
  for (let attempt = 0; !nbdAddress; attempt++) {
    const port = await freeTcpPort(options.listenHost);
    try {
      await qmp.executeRaw('nbd-server-start', {
        addr: { type: 'inet', data: { host: options.listenHost, port: String(port) } },
      });
      nbdAddress = hostPort(options.listenHost, port);
    } catch (e) {
      if (!(e instanceof QmpError && /in use/i.test(e.desc)) || attempt >= 4) throw e;
    }
  }
  const nbdExports: Record<string, string> = {};
  for (const { diskId, nodeName } of options.exports) {
    await qmp.executeRaw('block-export-add', {
      type: 'nbd',
      id: blockExportId(diskId),
      'node-name': nodeName,
      name: nbdExportName(diskId),
      writable: true,
    });
    nbdExports[diskId] = nbdExportName(diskId);
  }
  return { migrationAddress, nbdAddress, nbdExports };
}

/**
 * Waits until the incoming migration completed and the guest runs (QEMU starts it by itself; one left
 * paused is continued). False when the deadline passed first.
 */
export async function waitIncomingRunning(qmp: QmpClient, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { status: migration, 'error-desc': error } = await queryMigrate(qmp);
    if (migration === 'failed')
      throw new DriverError('failed', `the incoming migration failed: ${error ?? ''}`);
    const { status } = await qmp.execute('query-status');
    if (migration === 'completed' || migration === 'none') {
      if (status === 'running') return true;
      if (status === 'paused') await qmp.execute('cont');
    }
    if (Date.now() >= deadline) return false;
    await sleep(50);
  }
}

/**
 * Ends the NBD server. `hard` drops a source that is still connected (its mirror is finished or
 * cancelled by then, or the source is gone), so this works in either order with the source's cleanup.
 */
export async function stopNbdServer(qmp: QmpClient, diskIds: string[]): Promise<void> {
  for (const diskId of diskIds)
    await qmp
      .executeRaw('block-export-del', { id: blockExportId(diskId), mode: 'hard' })
      .catch((e: unknown) => {
        if (!(e instanceof QmpError)) throw e; // not there (any more)
      });
  await qmp.executeRaw('nbd-server-stop').catch((e: unknown) => {
    if (!(e instanceof QmpError)) throw e; // not running
  });
}

// ---- source -----------------------------------------------------------------------------------------------

/**
 * One NBD client node and one active mirror (write-blocking: once READY every guest write reaches both
 * copies before it completes) per target; bandwidth is shared evenly between the jobs. Steps already done
 * (node or job present) are skipped.
 */
export async function startMirrors(
  qmp: QmpClient,
  targets: { diskId: string; sourceNode: string; nbdAddress: string; exportName: string }[],
  bandwidthBytesPerSec: number,
): Promise<void> {
  const speed = Math.max(1, Math.floor(bandwidthBytesPerSec / Math.max(1, targets.length)));
  const nodes = new Set(
    (await qmp.execute('query-named-block-nodes', { flat: true })).map((n) => n['node-name']),
  );
  const jobs = new Set((await queryJobs(qmp)).map((j) => j.id));
  for (const t of targets) {
    const { host, port } = parseHostPort('nbdAddress', t.nbdAddress);
    if (!nodes.has(mirrorTargetNode(t.diskId)))
      await qmp.execute('blockdev-add', {
        driver: 'nbd',
        'node-name': mirrorTargetNode(t.diskId),
        server: { type: 'inet', host, port: String(port) },
        export: t.exportName,
      });
    if (!jobs.has(mirrorJobId(t.diskId)))
      await qmp.executeRaw('blockdev-mirror', {
        'job-id': mirrorJobId(t.diskId),
        device: t.sourceNode,
        target: mirrorTargetNode(t.diskId),
        sync: 'full',
        'copy-mode': 'write-blocking',
        speed,
        // Kept after it ends, so that an error stays readable in query-jobs until we dismiss it.
        'auto-dismiss': false,
      });
  }
}

/** Per mirrored disk: progress, READY, and the error of a job that ended. */
async function mirrorStatus(
  qmp: QmpClient,
  mirrors: OutgoingMigrationRecord['mirrors'],
): Promise<DriverOutgoingStatus['disks']> {
  if (mirrors.length === 0) return [];
  const jobs = new Map((await queryJobs(qmp)).map((j) => [j.id, j]));
  return mirrors.map(({ diskId, jobId }) => {
    const job = jobs.get(jobId);
    if (!job) return { diskId, totalBytes: 0, doneBytes: 0, ready: false, error: 'the mirror job is gone' };
    const error =
      job.error ??
      (job.status === 'concluded' || job.status === 'aborting' ? 'the mirror job ended' : undefined);
    return {
      diskId,
      totalBytes: job['total-progress'],
      doneBytes: job['current-progress'],
      ready: job.status === 'ready',
      ...(error ? { error } : {}),
    };
  });
}

/** Refuses to start memory while a disk is not in sync: the destination would resume on a stale disk. */
export async function requireMirrorsReady(
  qmp: QmpClient,
  mirrors: OutgoingMigrationRecord['mirrors'],
): Promise<void> {
  const notReady = (await mirrorStatus(qmp, mirrors)).filter((d) => !d.ready || d.error);
  if (notReady.length)
    throw new DriverError(
      'invalid-state',
      `disk mirrors not ready: ${notReady.map((d) => `${d.diskId} (${d.error ?? `${d.doneBytes}/${d.totalBytes} bytes`})`).join(', ')}: ` +
        'wait until outgoingStatus reports every disk ready',
    );
}

/**
 * Every parameter and capability set explicitly (QEMU 7.2's defaults cap the link at 128 MiB/s and a busy
 * guest then never converges), then `migrate`. return-path: a destination that cannot load the state says
 * so, and the source fails and runs on instead of stopping for good; pause-before-switchover: the source
 * waits in pre-switchover for switchOver, the migration's point of no return.
 */
export async function startMemoryMigration(
  qmp: QmpClient,
  destinationAddress: string,
  p: DriverMigrationParameters,
): Promise<void> {
  await setCapabilities(qmp, {
    events: true,
    'return-path': true,
    'pause-before-switchover': true,
    'auto-converge': p.autoConverge,
    'postcopy-ram': p.postCopy,
  });
  await qmp.execute('migrate-set-parameters', {
    'max-bandwidth': p.bandwidthBytesPerSec,
    'downtime-limit': p.downtimeLimitMs,
  });
  await qmp.executeRaw('migrate-set-parameters', { 'max-postcopy-bandwidth': p.bandwidthBytesPerSec });
  const { host, port } = parseHostPort('destinationAddress', destinationAddress);
  await qmp.execute('migrate', { uri: `tcp:${hostPort(host, port)}` });
}

const STATE_OF: Record<QemuMigrationStatus, DriverOutgoingState> = {
  none: 'setup',
  setup: 'setup',
  active: 'active',
  'wait-unplug': 'active',
  colo: 'active',
  'pre-switchover': 'pre-switchover',
  device: 'device',
  'postcopy-active': 'postcopy-active',
  'postcopy-paused': 'postcopy-active',
  'postcopy-recover': 'postcopy-active',
  completed: 'completed',
  failed: 'failed',
  cancelling: 'cancelling',
  cancelled: 'cancelled',
};

/** A status with nothing measured yet: the shape QEMU's numbers are filled into. */
export function emptyOutgoingStatus(
  state: DriverOutgoingState,
  error?: string,
  disks: DriverOutgoingStatus['disks'] = [],
): DriverOutgoingStatus {
  return {
    state,
    ...(error ? { error } : {}),
    totalTimeMs: 0,
    downtimeMs: 0,
    setupTimeMs: 0,
    expectedDowntimeMs: 0,
    memoryTotalBytes: 0,
    memoryTransferredBytes: 0,
    memoryRemainingBytes: 0,
    bytesTransferred: disks.reduce((sum, d) => sum + d.doneBytes, 0),
    rounds: 0,
    dirtyRateBytesPerSec: 0,
    transferRateBytesPerSec: 0,
    cpuThrottlePercent: 0,
    postCopyRequests: 0,
    disks,
  };
}

/** The migration as query-migrate and the mirror jobs describe it right now. */
export async function readOutgoingStatus(
  qmp: QmpClient,
  record: OutgoingMigrationRecord,
): Promise<DriverOutgoingStatus> {
  const disks = await mirrorStatus(qmp, record.mirrors);
  const base = emptyOutgoingStatus('setup', undefined, disks);
  const diskBytes = base.bytesTransferred;
  if (record.cancelled) return { ...base, state: 'cancelled' };
  if (record.destinationAddress === undefined) {
    // Memory has not started: the state is the mirrors' (query-migrate may still show an older migration).
    const broken = disks.find((d) => d.error);
    return broken
      ? { ...base, state: 'failed', error: `mirror of disk ${broken.diskId}: ${broken.error}` }
      : { ...base, state: 'mirroring' };
  }
  const info = await queryMigrate(qmp);
  const status = info.status ?? 'none';
  const ram = info.ram;
  const error =
    status === 'none'
      ? 'QEMU has no migration although one was started here: start it again'
      : status === 'postcopy-paused'
        ? 'post-copy paused: the connection to the destination broke; the guest needs both hosts'
        : info['error-desc'];
  return {
    ...base,
    state: status === 'none' ? 'failed' : STATE_OF[status],
    ...(error ? { error } : {}),
    totalTimeMs: info['total-time'] ?? 0,
    downtimeMs: info.downtime ?? 0,
    setupTimeMs: info['setup-time'] ?? 0,
    expectedDowntimeMs: info['expected-downtime'] ?? 0,
    memoryTotalBytes: ram?.total ?? 0,
    memoryTransferredBytes: ram?.transferred ?? 0,
    memoryRemainingBytes: ram?.remaining ?? 0,
    bytesTransferred: (ram?.transferred ?? 0) + diskBytes,
    rounds: ram?.['dirty-sync-count'] ?? 0,
    dirtyRateBytesPerSec: (ram?.['dirty-pages-rate'] ?? 0) * (ram?.['page-size'] ?? 0),
    transferRateBytesPerSec: Math.round(((ram?.mbps ?? 0) * 1e6) / 8),
    cpuThrottlePercent: info['cpu-throttle-percentage'] ?? 0,
    postCopyRequests: ram?.['postcopy-requests'] ?? 0,
  };
}

const FINAL: DriverOutgoingState[] = ['completed', 'failed', 'cancelled'];
const WAKING_EVENTS = new Set(['MIGRATION', 'MIGRATION_PASS', 'BLOCK_JOB_READY', 'JOB_STATUS_CHANGE']);

/**
 * readOutgoingStatus, answered as soon as the state, the round or a disk's readiness changes, or after
 * waitMs. QMP events wake it at once; polling query-migrate covers changes that send none.
 */
export async function watchOutgoingStatus(
  qmp: QmpClient,
  record: OutgoingMigrationRecord,
  waitMs: number,
  /** Whether this agent's armed switch will continue from pre-switchover (asked again at every wake-up). */
  switchArmed: () => boolean = () => false,
): Promise<DriverOutgoingStatus> {
  if (waitMs <= 0) return readOutgoingStatus(qmp, record);
  // Listening before the first read, and remembering events that come while a read is in flight: the
  // pre-switchover event must end the wait at once, every millisecond here is downtime of the guest.
  let pending = false;
  let wake: () => void = () => undefined;
  const onEvent = () => {
    pending = true;
    wake();
  };
  const off = qmp.on('event', (e) => WAKING_EVENTS.has(e.event) && onEvent());
  const offClose = qmp.on('close', onEvent);
  try {
    // A source waiting in pre-switchover waits for the caller: answer at once, the guest is paused. Unless
    // the switch is armed here: then it goes on by itself, and the answer is what follows (the device state,
    // completion), which spares the caller a call made for nothing.
    const waitsForCaller = (st: DriverOutgoingStatus) => st.state === 'pre-switchover' && !switchArmed();
    const first = await readOutgoingStatus(qmp, record);
    if (FINAL.includes(first.state) || waitsForCaller(first)) return first;
    const before = statusKey(first);
    const deadline = Date.now() + waitMs;
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0) return await readOutgoingStatus(qmp, record);
      if (!pending)
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, Math.min(100, left));
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
      pending = false;
      const now = await readOutgoingStatus(qmp, record);
      if (waitsForCaller(now) || (statusKey(now) !== before && now.state !== 'pre-switchover')) return now;
    }
  } finally {
    off();
    offClose();
  }
}

const statusKey = (s: DriverOutgoingStatus): string =>
  JSON.stringify([s.state, s.rounds, s.disks.map((d) => [d.ready, d.error])]);

/** Bandwidth cap now (memory and post-copy), and/or the switch to post-copy (via pre-switchover). */
export async function tuneMigration(
  qmp: QmpClient,
  tune: { bandwidthBytesPerSec?: number; startPostCopy?: boolean },
): Promise<void> {
  if (tune.bandwidthBytesPerSec)
    await qmp.executeRaw('migrate-set-parameters', {
      'max-bandwidth': tune.bandwidthBytesPerSec,
      'max-postcopy-bandwidth': tune.bandwidthBytesPerSec,
    });
  if (!tune.startPostCopy) return;
  const { status } = await queryMigrate(qmp);
  if (status?.startsWith('postcopy') || status === 'completed') return;
  const caps = (await qmp.executeRaw('query-migrate-capabilities')) as {
    capability: string;
    state: boolean;
  }[];
  if (!caps.some((c) => c.capability === 'postcopy-ram' && c.state))
    throw new DriverError(
      'invalid-state',
      'post-copy was not enabled when the migration started (parameters.postCopy)',
    );
  if (status !== 'active')
    throw new DriverError(
      'invalid-state',
      `the migration is ${status ?? 'none'}: post-copy starts only from active`,
    );
  await qmp.executeRaw('migrate-start-postcopy');
  // QEMU acts at the end of its current iteration; with pause-before-switchover it then stops the guest and
  // waits in pre-switchover like a pre-copy migration: switchOver (migrate-continue) is the point of no
  // return of both. Return once QEMU has left `active`, so the caller's next status shows where it went.
  const deadline = Date.now() + 30_000;
  while ((await queryMigrate(qmp)).status === 'active' && Date.now() < deadline) await sleep(20);
}

/**
 * From pre-switchover: the last memory and the device state go (migrate-continue). Done already: no-op.
 * `commit` records the point of no return before QEMU may pass it; `rollback` undoes that when QEMU was not
 * waiting after all. migrate-continue is sent without asking first: the guest is paused meanwhile.
 */
export async function continueSwitchOver(
  qmp: QmpClient,
  record: { commit: () => void; rollback: () => void },
): Promise<void> {
  record.commit();
  try {
    await qmp.executeRaw('migrate-continue', { state: 'pre-switchover' });
  } catch (e) {
    if (!(e instanceof QmpError)) throw e;
    const { status } = await queryMigrate(qmp);
    if (status === 'device' || status === 'completed' || status?.startsWith('postcopy')) return;
    record.rollback();
    throw new DriverError(
      'invalid-state',
      `the migration is ${status ?? 'none'}: switchOver needs it waiting in pre-switchover`,
    );
  }
}

/**
 * Stops the memory migration (migrate_cancel) and waits for QEMU to settle. QEMU restarts a guest that ran
 * before (pre-switchover had paused it); `resume` continues it in case it did not. Too late once committed.
 */
export async function cancelMemoryMigration(
  qmp: QmpClient,
  options: { resume: boolean; switchedOver: boolean; timeoutMs: number },
): Promise<void> {
  const deadline = Date.now() + options.timeoutMs;
  let { status } = await queryMigrate(qmp);
  // After migrate-continue the destination may already run the guest: only a failure gives it back.
  if (options.switchedOver && status !== 'failed' && status !== 'cancelled')
    throw new DriverError(
      'invalid-state',
      `the migration is ${status} after the switch-over: too late to cancel`,
    );
  if (status && COMMITTED.includes(status))
    throw new DriverError(
      'invalid-state',
      `the migration is ${status}: too late to cancel, the destination has the VM`,
    );
  if (status && IN_FLIGHT.includes(status)) await qmp.execute('migrate_cancel');
  while (status && (IN_FLIGHT.includes(status) || status === 'cancelling')) {
    if (Date.now() > deadline)
      throw new DriverError(
        'timeout',
        `the migration is still ${status} ${options.timeoutMs} ms after migrate_cancel`,
      );
    await sleep(20);
    status = (await queryMigrate(qmp)).status;
  }
  if (status && COMMITTED.includes(status))
    throw new DriverError('invalid-state', `the migration became ${status} before the cancel took effect`);
  if (options.resume && (await qmp.execute('query-status')).status === 'paused') await qmp.execute('cont');
}

/**
 * Ends the mirror jobs and removes their NBD client nodes. `force`: cancel (the copy is abandoned);
 * without it a READY mirror completes without pivoting (the VM stays on its own disk), the way to let go
 * of the destination after the switchover. Errors of jobs that already ended are returned, not thrown.
 */
export async function releaseMirrors(
  qmp: QmpClient,
  mirrors: OutgoingMigrationRecord['mirrors'],
  options: { force: boolean; timeoutMs: number },
): Promise<string[]> {
  const errors: string[] = [];
  const deadline = Date.now() + options.timeoutMs;
  for (const { diskId, jobId, targetNode } of mirrors) {
    for (let asked = false; ;) {
      const job = (await queryJobs(qmp)).find((j) => j.id === jobId);
      if (!job) break;
      if (job.status === 'concluded') {
        if (job.error) errors.push(`disk ${diskId}: ${job.error}`);
        await qmp.executeRaw('job-dismiss', { id: jobId });
        break;
      }
      if (!asked) {
        await qmp
          .executeRaw('block-job-cancel', { device: jobId, force: options.force })
          .catch((e: unknown) => {
            if (!(e instanceof QmpError)) throw e; // ending by itself already
          });
        asked = true;
      }
      if (Date.now() > deadline)
        throw new DriverError('timeout', `mirror job ${jobId} did not end within ${options.timeoutMs} ms`);
      await sleep(20);
    }
    await qmp.execute('blockdev-del', { 'node-name': targetNode }).catch((e: unknown) => {
      if (!(e instanceof QmpError)) throw e; // never added, or gone
    });
  }
  return errors;
}

/** True for errors that say QEMU is not there to answer (its process ended or the socket closed). */
export const isQemuGone = (e: unknown): boolean => e instanceof QmpConnectionError;

/** A migration id: it only names records and logs, but is checked like every input. */
export function validateMigrationId(migrationId: string): string {
  if (typeof migrationId !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/.test(migrationId))
    throw new DriverError(
      'invalid-spec',
      `migrationId: must be 1-128 of letters, digits, '.', '_', ':' and '-', got ${JSON.stringify(String(migrationId).slice(0, 80))}`,
    );
  return migrationId;
}

/** The error for a second migration of a VM: it names the one in progress. */
export function otherMigrationInProgress(vmId: string, record: MigrationRecord): DriverError {
  return new DriverError(
    'invalid-state',
    `vm ${vmId} has ${record.role} migration ${record.migrationId} in progress on this host: finish or cancel it first`,
  );
}

/**
 * Whether an outgoing migration still holds the VM: not cancelled, and memory or a mirror still moving
 * (a failed migration whose mirrors were released is over).
 */
export async function outgoingInProgress(
  qmp: QmpClient | undefined,
  record: OutgoingMigrationRecord,
): Promise<boolean> {
  if (record.cancelled || !qmp) return false;
  if (record.mirrors.length) return true;
  if (record.destinationAddress === undefined) return false;
  const { status } = await queryMigrate(qmp);
  return status !== 'failed' && status !== 'cancelled' && status !== 'none';
}

/** An integer from 1 to max; DriverError('invalid-spec') naming `field` otherwise. */
export function positiveInteger(field: string, value: number, max = Number.MAX_SAFE_INTEGER): number {
  if (!Number.isSafeInteger(value) || value < 1 || value > max)
    throw new DriverError(
      'invalid-spec',
      `${field}: must be an integer from 1 to ${max}, got ${JSON.stringify(value)}`,
    );
  return value;
}
