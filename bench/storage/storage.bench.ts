/**
 * Storage benchmark (issue 5 point 9). (a) Throughput of Flotilla's disk paths against `qemu-img convert`
 * of the same 1 GiB image run directly in the same process and run, as a ratio (Flotilla's MB/s over the
 * direct run's): VDI copy (qcow2 → qcow2, through the library and through the agent's CopyDisk RPC),
 * import (raw → qcow2, the library's inspect + check + convert of a staged upload) and export (qcow2 →
 * streamOptimized VMDK, the library's staging convert). Target ≥ 0.95×. (b) Latency of a snapshot and of a
 * linked clone (a qcow2 overlay) through the library and through the agent RPC, with `qemu-img create`
 * run directly as the baseline. Target < 100 ms each.
 *
 * The image is 1 GiB of random data (every cluster allocated, incompressible), written once per run. The
 * agent is StorageAgentService served in this process by startGrpcService (the real controller, gRPC on
 * loopback); its hypervisor driver is a stub with no running VMs. Rounds alternate the variants.
 */
import { execFile } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { storageV1 } from '@flotilla/contracts';
import { DiskFiles, HypervisorDriver, qemuImgMissing, tempFile } from '@flotilla/hypervisor';
import {
  createLogger,
  freePort,
  GrpcClient,
  md,
  ServiceIdentity,
  startGrpcService,
} from '@flotilla/platform';
import { HostImageCatalogue } from '../../apps/host-agent/src/image-catalogue';
import { SrPaths } from '../../apps/host-agent/src/sr-paths';
import { StorageAgentModule } from '../../apps/host-agent/src/storage/storage-agent.module';
import { envInt, f0, f2, machineDescription, median, table, tempDirs, x } from '../harness';

const run = promisify(execFile);
const GIB = 1024 ** 3;
const TARGET_RATIO = 0.95;
const TARGET_LATENCY_MS = 100;
const TOKEN = 'storage-bench';

export interface ThroughputRow {
  what: string;
  directMs: number;
  flotillaMs: number;
  /** direct time / Flotilla time: Flotilla's throughput as a share of the direct run's. */
  ratio: number;
  meetsTarget: boolean;
}

export interface LatencyRow {
  what: string;
  p50Ms: number;
  p99Ms: number;
  meetsTarget: boolean;
}

export interface StorageBenchResult {
  machine: string;
  imageBytes: number;
  directIo: string;
  throughput: ThroughputRow[];
  latency: LatencyRow[];
}

const ms = (since: bigint) => Number(process.hrtime.bigint() - since) / 1e6;
const timed = async (f: () => Promise<unknown>) => {
  const t = process.hrtime.bigint();
  await f();
  return ms(t);
};

function percentile(values: number[], p: number): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
}

/** 1 GiB raw of random bytes (16 MiB at a time), converted once to the qcow2 source. */
function writeRandomRaw(file: string, bytes: number): void {
  const buf = Buffer.allocUnsafe(16 * 1024 * 1024);
  const fd = fs.openSync(file, 'w');
  try {
    for (let at = 0; at < bytes; at += buf.length) fs.writeSync(fd, randomFillSync(buf));
  } finally {
    fs.closeSync(fd);
  }
}

export async function runStorageBench(
  options: { imageBytes?: number; rounds?: number; vmdkRounds?: number; latencySamples?: number } = {},
): Promise<StorageBenchResult> {
  const imageBytes = options.imageBytes ?? envInt('STORAGE_BENCH_IMAGE_MIB', 1024) * 1024 * 1024;
  const rounds = options.rounds ?? envInt('STORAGE_BENCH_ROUNDS', 3);
  const vmdkRounds = options.vmdkRounds ?? envInt('STORAGE_BENCH_VMDK_ROUNDS', 2);
  const samples = options.latencySamples ?? envInt('STORAGE_BENCH_LATENCY_SAMPLES', 30);
  const base = fs.mkdtempSync(
    path.join(process.env.STORAGE_BENCH_DIR || os.tmpdir(), 'flotilla-storage-bench-'),
  );
  tempDirs.add(base);
  const srRoot = path.join(base, 'srs');
  const sr = path.join(srRoot, 'sr-1');
  const work = path.join(base, 'direct');
  fs.mkdirSync(work, { recursive: true });
  const disks = new DiskFiles();
  const qemuImg = (...args: string[]) => run('qemu-img', args, { maxBuffer: 1 << 20 });

  const address = `127.0.0.1:${await freePort()}`;
  const noVms = { list: async () => [], status: async () => undefined } as unknown as HypervisorDriver;
  const app = await startGrpcService({
    module: StorageAgentModule.with({
      identity: new ServiceIdentity(TOKEN),
      driver: noVms,
      catalogue: new HostImageCatalogue(path.join(base, 'images'), 'bench'),
      srPaths: new SrPaths([srRoot]),
      disks,
    }),
    address,
    areas: ['storage'],
    healthServices: [],
    logger: createLogger('storage-bench', 'silent'),
  });
  const client = new GrpcClient<storageV1.StorageAgentServiceClient>({
    address,
    service: 'flotilla.storage.v1.StorageAgentService',
    staticMetadata: { [md.serviceToken]: TOKEN },
    defaultDeadlineMs: 600_000,
  });
  const at = (file: string) => ({ srId: 'sr-1', srPath: sr, file });
  try {
    await client.call.attachSr({ srId: 'sr-1', srPath: sr, createDirectory: true, adoptExisting: false });
    const raw = path.join(work, 'source.raw');
    writeRandomRaw(raw, imageBytes);
    await qemuImg('convert', '-f', 'raw', '-O', 'qcow2', raw, path.join(sr, 'source.qcow2'));
    const source = path.join(sr, 'source.qcow2');
    const out = (name: string) => path.join(work, name);
    const clean = () => {
      for (const dir of [work, sr])
        for (const name of fs.readdirSync(dir))
          if (!['source.raw', 'source.qcow2', '.flotilla-sr.json'].includes(name))
            fs.rmSync(path.join(dir, name), { force: true });
    };

    /** Alternating rounds of a direct qemu-img run and Flotilla's path; medians compared. */
    const compare = async (
      what: string,
      n: number,
      direct: () => Promise<unknown>,
      flotilla: () => Promise<unknown>,
    ): Promise<ThroughputRow> => {
      const d: number[] = [];
      const f: number[] = [];
      for (let i = 0; i < n; i++) {
        const order = i % 2 ? [flotilla, direct] : [direct, flotilla];
        for (const variant of order) {
          const t = await timed(variant);
          (variant === direct ? d : f).push(t);
          clean();
        }
      }
      const ratio = median(d) / median(f);
      return { what, directMs: median(d), flotillaMs: median(f), ratio, meetsTarget: ratio >= TARGET_RATIO };
    };

    const throughput: ThroughputRow[] = [];
    const directCopy = () =>
      qemuImg('convert', '-t', 'none', '-T', 'none', '-f', 'qcow2', '-O', 'qcow2', source, out('copy.qcow2'));
    throughput.push(
      await compare('copy qcow2→qcow2, library', rounds, directCopy, () =>
        disks.copy({ dir: sr, source: { dir: sr, file: 'source.qcow2' }, file: 'copy.qcow2' }),
      ),
    );
    throughput.push(
      await compare('copy qcow2→qcow2, CopyDisk RPC', rounds, directCopy, async () => {
        for await (const m of client.stream<storageV1.CopyDiskResponse>('copyDisk', {
          sourceDisk: at('source.qcow2'),
          sourceFormat: storageV1.DiskFormat.DISK_FORMAT_QCOW2,
          target: at('copy.qcow2'),
          targetFormat: storageV1.DiskFormat.DISK_FORMAT_QCOW2,
          targetBackingFile: '',
        }))
          void m;
      }),
    );
    throughput.push(
      await compare(
        'import raw→qcow2 (inspect, check, convert), library',
        rounds,
        () =>
          qemuImg(
            'convert',
            '-t',
            'none',
            '-T',
            'none',
            '-f',
            'raw',
            '-O',
            'qcow2',
            raw,
            out('import.qcow2'),
          ),
        async () => {
          // The upload itself is not timed: a hard link stands for the staging file ImportDisk writes.
          const staging = tempFile(sr, 'import.bench');
          fs.linkSync(raw, staging.path);
          await disks.importStaged({ dir: sr, staging, format: 'raw', file: 'import.qcow2' });
        },
      ),
    );
    throughput.push(
      await compare(
        'export qcow2→VMDK streamOptimized, library',
        vmdkRounds,
        () =>
          qemuImg(
            'convert',
            '-t',
            'none',
            '-T',
            'none',
            '-f',
            'qcow2',
            '-O',
            'vmdk',
            '-o',
            'subformat=streamOptimized',
            source,
            out('export.vmdk'),
          ),
        async () => {
          const staged = await disks.stageExport({ dir: sr, file: 'source.qcow2', format: 'vmdk' });
          staged.staging.discard();
        },
      ),
    );

    // (b) latency: snapshots chain on the source's copy; clones are overlays of the source.
    await disks.copy({ dir: sr, source: { dir: sr, file: 'source.qcow2' }, file: 'vm-disk.qcow2' });
    const latency: LatencyRow[] = [];
    const measure = async (what: string, f: (i: number) => Promise<unknown>) => {
      const t: number[] = [];
      for (let i = 0; i < samples; i++) t.push(await timed(() => f(i)));
      const p99 = percentile(t, 99);
      latency.push({ what, p50Ms: percentile(t, 50), p99Ms: p99, meetsTarget: p99 < TARGET_LATENCY_MS });
    };
    await measure('qemu-img create overlay, direct (baseline)', (i) =>
      qemuImg(
        'create',
        '-q',
        '-f',
        'qcow2',
        '-b',
        'vm-disk.qcow2',
        '-F',
        'qcow2',
        '-u',
        path.join(sr, `direct-${i}.qcow2`),
        String(imageBytes),
      ),
    );
    let top = 'vm-disk.qcow2';
    await measure('snapshot, library', async (i) => {
      await disks.snapshot({ dir: sr, file: top, newTopFile: `lib-snap-${i}.qcow2` });
      top = `lib-snap-${i}.qcow2`;
    });
    await measure('snapshot, SnapshotDisk RPC', async (i) => {
      await client.call.snapshotDisk({ disk: at(top), newTopFile: `rpc-snap-${i}.qcow2`, vmId: '' });
      top = `rpc-snap-${i}.qcow2`;
    });
    await measure('linked clone, library', (i) =>
      disks.create({
        dir: sr,
        file: `lib-clone-${i}.qcow2`,
        virtualSizeBytes: 0,
        backingFile: 'source.qcow2',
      }),
    );
    await measure('linked clone, CreateDisk RPC', (i) =>
      client.call.createDisk({
        disk: at(`rpc-clone-${i}.qcow2`),
        virtualSizeBytes: 0,
        backingFile: 'source.qcow2',
      }),
    );
    return {
      machine: machineDescription(),
      imageBytes,
      directIo: `cache mode none on ${sr}`,
      throughput,
      latency,
    };
  } finally {
    client.close();
    await app.close();
    fs.rmSync(base, { recursive: true, force: true });
    tempDirs.delete(base);
  }
}

export function formatStorageBench(r: StorageBenchResult): string {
  const mbs = (ms: number) => (r.imageBytes / 1e6 / (ms / 1000)).toFixed(0);
  return [
    `storage benchmark: ${r.machine}; image ${f0(r.imageBytes / GIB)} GiB of random data; ${r.directIo}`,
    '',
    ...table(
      [
        'throughput (median of rounds)',
        'direct ms',
        'direct MB/s',
        'Flotilla ms',
        'Flotilla MB/s',
        'ratio',
        `≥ ${TARGET_RATIO}x`,
      ],
      r.throughput.map((t) => [
        t.what,
        f0(t.directMs),
        mbs(t.directMs),
        f0(t.flotillaMs),
        mbs(t.flotillaMs),
        x(t.ratio),
        t.meetsTarget ? 'met' : 'NOT met',
      ]),
    ),
    '',
    ...table(
      ['latency', 'p50 ms', 'p99 ms', `< ${TARGET_LATENCY_MS} ms`],
      r.latency.map((l) => [l.what, f2(l.p50Ms), f2(l.p99Ms), l.meetsTarget ? 'met' : 'NOT met']),
    ),
  ].join('\n');
}

export async function main(): Promise<void> {
  const missing = qemuImgMissing();
  if (missing) {
    console.log(`storage benchmark skipped: ${missing}`);
    return;
  }
  console.log(formatStorageBench(await runStorageBench()));
}

if (require.main === module) {
  main().catch((error: unknown) => {
    console.error(error);
    process.exitCode = 1;
  });
}
