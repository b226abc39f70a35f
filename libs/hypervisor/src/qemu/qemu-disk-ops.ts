import { DriverDisk, DriverError } from '../driver';
import {
  blockdevDefinition,
  diskDeviceId,
  diskNodeName,
  diskSerial,
  isDiskFormatNode,
  QemuLaunchDisk,
} from './qemu-disks';
import { QemuBlockInfo, QmpClient, QmpConnectionError, QmpError } from './qmp-client';

/**
 * The QMP conversations behind disk hot-plug, hot-unplug, live snapshot, online resize and block-stream on
 * one running QEMU. Each step first looks at what QEMU has, so repeating an interrupted operation finishes
 * it instead of failing (the driver serialises operations per VM and persists the result).
 */

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** QMP and connection errors as driver errors, with what was being done. */
export function asDriverError(e: unknown, doing: string): Error {
  if (e instanceof DriverError) return e;
  if (e instanceof QmpError) return new DriverError('failed', `${doing}: ${e.desc}`);
  if (e instanceof QmpConnectionError) return new DriverError('failed', `${doing}: ${e.message}`);
  return e as Error;
}

/** Ids of the devices added with -device or device_add that exist right now. */
export async function peripheralIds(qmp: QmpClient): Promise<Set<string>> {
  const children = await qmp.execute('qom-list', { path: '/machine/peripheral' });
  return new Set(children.filter((c) => c.type.startsWith('child<')).map((c) => c.name));
}

export async function blockNodeNames(qmp: QmpClient): Promise<Set<string>> {
  const nodes = await qmp.execute('query-named-block-nodes', { flat: true });
  return new Set(nodes.map((n) => n['node-name']));
}

/** The node a disk's device reads and writes (the top of its chain), with the guest-visible size. */
export async function insertedNode(
  qmp: QmpClient,
  diskId: string,
): Promise<QemuBlockInfo['inserted'] | undefined> {
  const qdev = `/machine/peripheral/${diskDeviceId(diskId)}/virtio-backend`;
  const blocks = await qmp.execute('query-block');
  return blocks.find((b) => b.qdev === qdev)?.inserted;
}

/** Host paths of every file node the QEMU has open: the files of every layer of every disk. */
export async function openFiles(qmp: QmpClient): Promise<string[]> {
  const nodes = await qmp.execute('query-named-block-nodes', { flat: true });
  return [...new Set(nodes.filter((n) => n.drv === 'file').map((n) => n.file))].sort();
}

/** blockdev-add of the disk's chain (unless its top node exists) and device_add on its root port. */
export async function plugDevice(qmp: QmpClient, disk: DriverDisk, place: QemuLaunchDisk): Promise<void> {
  const top = diskNodeName(place.id, disk.path);
  if (!(await blockNodeNames(qmp)).has(top))
    await qmp.execute('blockdev-add', blockdevDefinition(place.id, disk, place));
  await qmp.execute('device_add', {
    driver: 'virtio-blk-pci',
    id: diskDeviceId(place.id),
    drive: top,
    bus: `rp${place.port}`,
    serial: diskSerial(place.id),
  });
}

/**
 * device_del, then waits up to timeoutMs for DEVICE_DELETED: the guest must release the device (ACPI
 * eject on q35). True once the device is gone; false when the guest still holds it (the request stays
 * pending in QEMU and completes whenever the guest lets go).
 */
export async function unplugDevice(qmp: QmpClient, diskId: string, timeoutMs: number): Promise<boolean> {
  const id = diskDeviceId(diskId);
  const deleted = qmp.waitForEvent('DEVICE_DELETED', { timeoutMs, predicate: (e) => e.data.device === id });
  deleted.catch(() => undefined);
  try {
    await qmp.execute('device_del', { id });
  } catch (e) {
    if (e instanceof QmpError && e.errorClass === 'DeviceNotFound') return true;
    // A request from an earlier call is still pending: wait for it like for ours.
    if (!(e instanceof QmpError && /already in the process of unplug/.test(e.desc))) throw e;
  }
  try {
    await deleted;
    return true;
  } catch (e) {
    if (!(e instanceof QmpConnectionError && e.kind === 'timeout')) throw e;
    // The event may have come before we listened (an earlier request completing).
    return !(await peripheralIds(qmp)).has(id);
  }
}

/**
 * blockdev-del of every node of the disk the monitor still holds (the chain added at start or plug, and
 * the top of each live snapshot), newest first: a node another one uses as backing waits for the next
 * round. Call once the device is gone. Right after DEVICE_DELETED a node can still read "in use" for a
 * moment (an export right after an unplug then found the file locked), so a round without progress is
 * retried for a while. Returns the nodes still held after that, with QEMU's reason, for the caller to log:
 * the device is gone, so the guest writes nothing more, and they close when the VM stops.
 */
export async function releaseDiskNodes(
  qmp: QmpClient,
  diskId: string,
  patienceMs = 5000,
): Promise<{ held: string[]; reason: string }> {
  const giveUpAt = Date.now() + patienceMs;
  const reasons = new Map<string, string>();
  for (;;) {
    // Format nodes only: deleting one closes the file node it made (blockdev-add defined it inline).
    const nodes = [...(await blockNodeNames(qmp))].filter((n) => isDiskFormatNode(diskId, n));
    if (nodes.length === 0) return { held: [], reason: '' };
    let progress = false;
    for (const node of nodes) {
      try {
        await qmp.execute('blockdev-del', { 'node-name': node });
        progress = true;
      } catch (e) {
        if (!(e instanceof QmpError)) throw e;
        reasons.set(node, e.desc);
      }
    }
    if (progress) continue;
    if (Date.now() >= giveUpAt) return { held: nodes, reason: nodes.map((n) => reasons.get(n)).join('; ') };
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/**
 * Live external snapshot: adds `newTop` (whose header already names the current top as its backing file)
 * with `backing: null`, and blockdev-snapshot links it over the current top node: from then on the guest
 * writes to newTop and the old top is a read-only layer. Done already (the device's node is newTop's): no-op.
 */
export async function snapshotDevice(
  qmp: QmpClient,
  disk: DriverDisk,
  place: QemuLaunchDisk,
  newTop: string,
): Promise<void> {
  const topNode = diskNodeName(place.id, disk.path);
  const newNode = diskNodeName(place.id, newTop);
  const current = (await insertedNode(qmp, place.id))?.['node-name'];
  if (current === newNode) return;
  if (current !== topNode)
    throw new DriverError(
      'invalid-state',
      `disk ${place.id}: QEMU writes to node ${current ?? '(none)'}, not to ${disk.path}'s node ${topNode}`,
    );
  if (!(await blockNodeNames(qmp)).has(newNode))
    await qmp.execute(
      'blockdev-add',
      blockdevDefinition(
        place.id,
        { path: newTop, format: 'qcow2', readOnly: disk.readOnly },
        { backing: [], cacheDirect: place.cacheDirect },
        { overlay: true },
      ),
    );
  try {
    await qmp.execute('blockdev-snapshot', { node: topNode, overlay: newNode });
  } catch (e) {
    await qmp.execute('blockdev-del', { 'node-name': newNode }).catch(() => undefined);
    throw e;
  }
}

/**
 * block-stream of the layers between the top and `base` (all of them when base is undefined) into the top,
 * waiting for the job to conclude; the job is dismissed afterwards, and the header's new backing file is
 * the plain name `baseName`. A job of ours still running from an interrupted call is waited for.
 */
export async function streamDevice(
  qmp: QmpClient,
  args: { diskId: string; top: string; base?: string; baseName?: string; timeoutMs: number },
): Promise<void> {
  const jobId = `stream-${diskNodeName(args.diskId, args.top)}`;
  let jobError: string | undefined;
  const offs: (() => void)[] = [];
  const ended = new Promise<void>((resolve) => {
    const mine = (e: { data: { device: string } }) => e.data.device === jobId;
    offs.push(
      qmp.on('BLOCK_JOB_COMPLETED', (e) => {
        if (!mine(e)) return;
        jobError = e.data.error;
        resolve();
      }),
      qmp.on('BLOCK_JOB_CANCELLED', (e) => mine(e) && resolve()),
      qmp.on('BLOCK_JOB_ERROR', (e) => {
        // With the default on-error=report the job ends right after with its error in BLOCK_JOB_COMPLETED.
        if (mine(e)) jobError ??= `I/O error while ${e.data.operation === 'read' ? 'reading' : 'writing'}`;
      }),
    );
  });
  try {
    const running = (await qmp.execute('query-jobs')).find((j) => j.id === jobId);
    if (!running)
      await qmp.execute('block-stream', {
        'job-id': jobId,
        device: diskNodeName(args.diskId, args.top),
        ...(args.base ? { 'base-node': diskNodeName(args.diskId, args.base) } : {}),
        ...(args.baseName ? { 'backing-file': args.baseName } : {}),
        'auto-dismiss': false,
      });
    const deadline = Date.now() + args.timeoutMs;
    // The events end the wait at once; polling query-jobs covers a job that ended before we listened.
    for (;;) {
      const job = (await qmp.execute('query-jobs')).find((j) => j.id === jobId);
      if (!job) break;
      if (job.status === 'concluded') {
        jobError = job.error ?? jobError;
        await qmp.execute('job-dismiss', { id: jobId });
        break;
      }
      if (Date.now() > deadline)
        throw new DriverError(
          'timeout',
          `block-stream of ${args.top} still runs after ${args.timeoutMs} ms: it goes on, call again to wait`,
        );
      await Promise.race([ended.then(() => sleep(10)), sleep(500)]);
    }
  } finally {
    for (const off of offs) off();
  }
  if (jobError) throw new DriverError('failed', `block-stream of ${args.top} failed: ${jobError}`);
  // The job rewrites the header (no backing, or base) but leaves the new L2 entries in QEMU's metadata
  // cache: on disk the top would lack the streamed clusters until the next flush, and the caller is about
  // to delete the merged files. QMP has no per-node flush; `stop` flushes every node (bdrv_flush_all), so
  // the guest pauses for a moment (milliseconds) and runs on.
  await flushAllDisks(qmp);
}

/** Flushes every block node of the VM to its files: `stop` (which flushes), then `cont` if it was running. */
export async function flushAllDisks(qmp: QmpClient): Promise<void> {
  const { running } = await qmp.execute('query-status');
  await qmp.execute('stop');
  if (running) await qmp.execute('cont');
}
