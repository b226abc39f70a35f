import * as fs from 'node:fs';
import { DriverError, DriverVmMetrics } from '../driver';
import { diskDeviceId } from './qemu-disks';
import { QemuBlockStats } from './qmp-client';

/** USER_HZ: /proc/<pid>/stat counts CPU time in these ticks; it is 100 on every Linux ABI Node runs on. */
const CLOCK_TICKS_PER_SEC = 100;

/** utime + stime of the whole QEMU process (all vCPU and I/O threads), in ns. */
export function readProcessCpuTimeNs(pid: number): number {
  const stat = readProc(pid, 'stat');
  // Fields after the parenthesised comm: state is field 3, utime 14 and stime 15 (1-based).
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const utime = Number(fields[14 - 3]);
  const stime = Number(fields[15 - 3]);
  return ((utime + stime) * 1e9) / CLOCK_TICKS_PER_SEC;
}

export function readResidentMemoryBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readProc(pid, 'status'));
  return m ? Number(m[1]) * 1024 : 0;
}

/**
 * query-blockstats rows → the driver's disks, named by disk id (the VBD id, or `disk<i>`) through their
 * device's QOM path (/machine/peripheral/virtio-<token>/virtio-backend).
 */
export function diskMetrics(stats: QemuBlockStats[], disks: { id: string }[]): DriverVmMetrics['disks'] {
  const idOfDevice = new Map(disks.map((d) => [diskDeviceId(d.id), d.id]));
  return stats
    .map((s) => {
      const deviceId = /^\/machine\/peripheral\/([^/]+)\//.exec(s.qdev ?? '')?.[1];
      const device =
        (deviceId && idOfDevice.get(deviceId)) || deviceId || s.device || s['node-name'] || 'unknown';
      return {
        device,
        readBytes: s.stats.rd_bytes,
        writeBytes: s.stats.wr_bytes,
        readOps: s.stats.rd_operations,
        writeOps: s.stats.wr_operations,
      };
    })
    .sort((a, b) => a.device.localeCompare(b.device));
}

function readProc(pid: number, file: string): string {
  try {
    return fs.readFileSync(`/proc/${pid}/${file}`, 'utf8');
  } catch {
    throw new DriverError('invalid-state', `QEMU process ${pid} is gone`);
  }
}
