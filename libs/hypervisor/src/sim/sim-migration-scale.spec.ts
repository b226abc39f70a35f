import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DriverMigrationParameters, DriverVmSpec } from '../driver';
import { SimDriver } from './sim-driver';
import { migrateBetweenSimHosts } from './sim-migration.testing';

// Real: SimDriver instances (one per simulated host, each with its own state directory), real timers with
// the migration model scaled down 5000×. Nothing about wall time is asserted: only outcomes.

const MiB = 1024 * 1024;
const HOSTS = 20;
const VMS_PER_HOST = 15;
const TIME_SCALE = 0.0002;

type Kind = 'idle' | 'auto-converge' | 'post-copy';

const kindOf = (i: number): Kind =>
  (['idle', 'idle', 'idle', 'idle', 'auto-converge', 'post-copy'] as const)[i % 6];

function specOf(host: number, i: number): DriverVmSpec {
  const dirty = kindOf(i) === 'idle' ? '' : ' demo.dirty=64';
  return {
    vmId: `vm-${host}-${i}`,
    name: `vm-${host}-${i}`,
    vcpus: 1,
    memoryMib: 512,
    boot: { kind: 'kernel', kernel: '/k', cmdline: `console=ttyS0${dirty}` },
    disks: [],
    nics: [],
  };
}

/** Idle guests at 1 GiB/s; busy guests at QEMU's defaults, rescued by auto-converge or post-copy. */
function parametersOf(kind: Kind): DriverMigrationParameters {
  if (kind === 'idle')
    return { downtimeLimitMs: 300, bandwidthBytesPerSec: 1024 * MiB, autoConverge: false, postCopy: false };
  return {
    downtimeLimitMs: 300,
    bandwidthBytesPerSec: 128 * MiB,
    autoConverge: kind === 'auto-converge',
    postCopy: kind === 'post-copy',
  };
}

describe('sim driver live migration at scale', () => {
  let dir: string;
  let hosts: SimDriver[];

  beforeEach(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sim-scale-'));
    hosts = [];
    for (let h = 0; h < HOSTS; h++) {
      const driver = new SimDriver({
        stateDir: path.join(dir, `h${h}`),
        // Room for its own VMs and the neighbour's arriving ones.
        capacity: { cpus: 64, memoryMib: 2 * VMS_PER_HOST * 512 },
        migrationTimeScale: TIME_SCALE,
      });
      await driver.recover();
      hosts.push(driver);
    }
  });
  afterEach(async () => {
    await Promise.all(hosts.map((h) => h.close()));
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('migrates 300 VMs between 20 hosts at once: each runs exactly once, on its destination', async () => {
    for (let h = 0; h < HOSTS; h++) for (let i = 0; i < VMS_PER_HOST; i++) await hosts[h].start(specOf(h, i));

    // Every host sends all its VMs to the next host of the ring, all migrations in parallel.
    const results = await Promise.all(
      hosts.flatMap((source, h) =>
        Array.from({ length: VMS_PER_HOST }, async (_, i) => {
          const kind = kindOf(i);
          const result = await migrateBetweenSimHosts({
            source,
            destination: hosts[(h + 1) % HOSTS],
            spec: specOf(h, i),
            migrationId: `m-${h}-${i}`,
            parameters: parametersOf(kind),
            postCopyAfterRounds: kind === 'post-copy' ? 3 : undefined,
          });
          return { kind, vmId: specOf(h, i).vmId, host: (h + 1) % HOSTS, ...result };
        }),
      ),
    );

    expect(results.filter((r) => r.status.state !== 'completed').map((r) => r.vmId)).toEqual([]);
    for (let h = 0; h < HOSTS; h++) {
      const from = (h + HOSTS - 1) % HOSTS;
      const expected = Array.from({ length: VMS_PER_HOST }, (_, i) => ({
        vmId: `vm-${from}-${i}`,
        powerState: 'RUNNING',
      }));
      expect(await hosts[h].list()).toEqual(expect.arrayContaining(expected));
      expect(await hosts[h].list()).toHaveLength(VMS_PER_HOST);
    }
    const postCopied = results.filter((r) => r.kind === 'post-copy');
    expect(postCopied.every((r) => r.status.postCopyRequests > 0 && r.status.rounds === 3)).toBe(true);
    const throttled = results.filter((r) => r.kind === 'auto-converge');
    expect(throttled.every((r) => r.status.cpuThrottlePercent > 0)).toBe(true);
  });

  it('refuses arrivals beyond a host capacity and leaves those VMs running on their source', async () => {
    // Host 1 has room for 30 VMs of 512 MiB; hosts 0, 2 and 3 send it 15 each.
    const senders = [0, 2, 3];
    for (const h of senders) for (let i = 0; i < VMS_PER_HOST; i++) await hosts[h].start(specOf(h, i));
    const outcomes = await Promise.all(
      senders.flatMap((h) =>
        Array.from({ length: VMS_PER_HOST }, (_, i) =>
          migrateBetweenSimHosts({
            source: hosts[h],
            destination: hosts[1],
            spec: specOf(h, i),
            migrationId: `m-${h}-${i}`,
            parameters: parametersOf('idle'),
          }).then(
            () => 'moved',
            (e: { kind?: string }) => e.kind,
          ),
        ),
      ),
    );
    expect(outcomes.filter((o) => o === 'moved')).toHaveLength(30);
    expect(outcomes.filter((o) => o === 'capacity')).toHaveLength(15);
    const stayed = (await Promise.all(senders.map((h) => hosts[h].list()))).flat();
    expect(stayed).toHaveLength(15);
    expect(stayed.every((s) => s.powerState === 'RUNNING')).toBe(true);
  });
});
