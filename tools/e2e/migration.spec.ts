/**
 * Live migration of real VMs, as an operator runs it: `flotilla up --driver qemu` (every service and both
 * host agents their own processes, supervised: a process killed with SIGKILL is started again), the demo
 * appliance running its memory-dirtying workload, migrations through the public API and the CLI, and
 * faults injected for real — SIGKILL of the destination agent, the source agent and the migration
 * service, and the QEMU-to-QEMU TCP stream cut with `ss -K` — in the middle of the memory transfer.
 * After each: the VM runs exactly once (one QEMU with its uuid on the machine), on the host its record
 * names, the migration's record says what happened, and the guest never restarted.
 * Evidence comes from the guest itself: its TICK counter (seconds since it booted) continues on the
 * destination without a second DEMO-READY, its HTTP server answers on the destination's forwarded port,
 * and bytes it wrote to its disk before the switchover read back the same after it.
 * Real: everything (PGlite, gRPC, agents, QEMU under TCG, qemu-img, NBD). Fake: nothing.
 */
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { commonV1, computeV1, migrationV1 } from '@flotilla/contracts';
import { postCopySafe } from '@flotilla/domain';
import { DEMO_READY_MARKER, describeWithRealQemu, vmUuid } from '@flotilla/hypervisor';
import { CloudClients, errorDetailsOf, GrpcClient, operationDone, vmRequest } from '@flotilla/platform';
import { GuestShell } from './guest-shell';
import { procFile, startUpCloud, type UpCloud } from './up-cloud';

const MiB = 1024 * 1024;
const { MigrationState: MS, MigrationPhase: MP } = migrationV1;

describeWithRealQemu('live migration of real VMs, with faults', () => {
  jest.setTimeout(420_000);
  let cloud: UpCloud;
  let dir: string;
  let admin: CloudClients;
  let migrations: GrpcClient<migrationV1.MigrationServiceClient>;
  let evacuations: GrpcClient<migrationV1.EvacuationServiceClient>;
  let hosts: computeV1.Host[];
  const shells: GuestShell[] = [];

  // ---- the cloud and its processes ----

  const cli = (...args: string[]) => cloud.cli(...args);
  const cliOk = (...args: string[]) => cloud.cliOk(...args);
  const until: UpCloud['until'] = (what, probe, timeoutMs, everyMs) =>
    cloud.until(what, probe, timeoutMs, everyMs);

  /** Pids of this cloud's processes whose command line contains `needle` (and whose env has `envHas`). */
  const pidsOf = (needle: string, envHas?: string): number[] => {
    const marker = `FLOTILLA_DATA_DIR=${path.join(dir, 'var')}`;
    return fs
      .readdirSync('/proc')
      .filter((p) => /^\d+$/.test(p))
      .filter((p) => {
        const environ = procFile(p, 'environ').split('\0');
        return (
          environ.includes(marker) &&
          (!envHas || environ.includes(envHas)) &&
          procFile(p, 'cmdline').replace(/\0/g, ' ').includes(needle)
        );
      })
      .map(Number);
  };
  const agentPid = (host: computeV1.Host) => {
    const [pid] = pidsOf('host-agent', `FLOTILLA_AGENT_NAME=${host.name}`);
    if (!pid) throw new Error(`no agent process for ${host.name}`);
    return pid;
  };
  const servicePid = (app: string) => {
    const [pid] = pidsOf(`apps/${app}/src/main.js`);
    if (!pid) throw new Error(`no ${app} process`);
    return pid;
  };
  /** Every QEMU on the machine running this VM (its -uuid), wherever it was started from. */
  const qemusOf = (vmId: string): { pid: number; cmdline: string }[] =>
    fs
      .readdirSync('/proc')
      .filter((p) => /^\d+$/.test(p))
      .map((p) => ({ pid: Number(p), cmdline: procFile(p, 'cmdline').replace(/\0/g, ' ') }))
      .filter((q) => q.cmdline.includes('qemu-system') && q.cmdline.includes(vmUuid(vmId)));
  /** The host whose agent state directory the QEMU's pidfile is in. */
  const hostOfQemu = (cmdline: string) =>
    hosts.find((h) => cmdline.includes(path.join(dir, 'var', 'agents', h.name) + path.sep));

  const sigkill = async (pid: number) => {
    process.kill(pid, 'SIGKILL');
    await until(`pid ${pid} gone`, () => (fs.existsSync(`/proc/${pid}`) ? undefined : true), 10_000, 50);
  };

  // ---- VMs and the guest's evidence ----

  const getVm = async (id: string) => (await admin.vms.call.getVm({ id })).vm!;
  const consoleOf = async (id: string) =>
    Buffer.from((await admin.vms.call.getVmConsoleLog({ id, maxBytes: 0 })).data).toString();
  const ticks = (text: string) => [...text.matchAll(/^TICK (\d+)\s*$/gm)].map((m) => Number(m[1]));
  const httpGet = (address: string): Promise<string> =>
    new Promise((resolve, reject) => {
      const [hostPort, ...rest] = address.split('/');
      const [host, port] = hostPort.split(':');
      const at = `/${rest.join('/')}`;
      const req = http.get({ host, port: Number(port), path: at, timeout: 10_000 }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve(body));
      });
      req.on('timeout', () => req.destroy(new Error('HTTP timeout')));
      req.on('error', reject);
    });
  const forwardOf = (vm: computeV1.Vm) => vm.nics[0]?.forwards[0]?.hostAddress ?? '';

  const createVm = async (
    name: string,
    o: { memoryMib?: number; dirtyMiB?: number; start?: boolean } = {},
  ): Promise<computeV1.Vm> => {
    const { vm, operation } = await admin.vms.call.createVm(
      vmRequest({
        name,
        vcpus: 1,
        memoryMib: o.memoryMib ?? 256,
        boot: {
          image: 'demo',
          kernel: '',
          initrd: '',
          cmdline: o.dirtyMiB ? `demo.dirty=${o.dirtyMiB}` : '',
        },
        nics: [{ mac: '', forwards: [{ guestPort: 80, hostAddress: '' }] }],
        start: o.start ?? true,
      }),
    );
    const done = await operationDone(admin.operations, operation!.id, 180_000);
    expect(done.error?.message ?? '').toBe('');
    if (o.start !== false) await guestReady(vm!.id, o.dirtyMiB ?? 0);
    return getVm(vm!.id);
  };
  const guestReady = (vmId: string, dirtyMiB: number) =>
    until(
      'the guest ready',
      async () => {
        const text = await consoleOf(vmId);
        return text.includes(DEMO_READY_MARKER) &&
          (!dirtyMiB || text.includes('DEMO-DIRTY')) &&
          ticks(text).length
          ? true
          : undefined;
      },
      180_000,
      500,
    );
  const destroyVm = async (id: string) => {
    const { operation } = await admin.vms.call.destroyVm({ id, requestId: '' });
    if (operation) await operationDone(admin.operations, operation.id, 120_000);
  };
  /** A FILE SR of the host (its local disk directory), created the first time. */
  const fileSr = async (host: computeV1.Host) => {
    const name = `file-${host.name}`;
    if ((await cli('sr', 'show', name)).code !== 0)
      await cliOk(
        'sr',
        'create',
        name,
        '--type',
        'file',
        '--host',
        host.name,
        '--path',
        path.join(dir, 'var', 'sr', name),
      );
    // After an agent was killed its host's SR reads UNAVAILABLE until storage looks again (every 2 s).
    await until(`SR ${name} AVAILABLE`, async () => {
      const { sr } = JSON.parse(await cliOk('sr', 'show', name, '--json')) as { sr: { state: string } };
      return /(^|_)AVAILABLE$/.test(sr.state) && !/UNAVAILABLE/.test(sr.state) ? true : undefined;
    });
    return name;
  };
  const otherHost = (hostId: string) => hosts.find((h) => h.id !== hostId)!;

  // ---- migrations ----

  const liveOptions = (o: Partial<migrationV1.MigrationOptions> = {}): migrationV1.MigrationOptions => ({
    downtimeLimitMs: 0,
    bandwidthBytesPerSec: 0,
    autoConverge: false,
    postCopy: false,
    postCopyAfterRounds: 0,
    timeoutMs: 0,
    shutdownTimeoutMs: 0,
    ...o,
  });
  const spec = (
    vm: computeV1.Vm,
    to: computeV1.Host | undefined,
    o: Partial<migrationV1.MigrationOptions> = {},
    withStorage = false,
  ): migrationV1.MigrationSpec => ({
    vmId: vm.id,
    destinationHostId: to?.id ?? '',
    mode: migrationV1.MigrationMode.MIGRATION_MODE_LIVE,
    withStorage,
    vdiMap: {},
    options: liveOptions(o),
  });
  const startMigration = async (s: migrationV1.MigrationSpec) =>
    (await migrations.call.createMigration({ requestId: randomUUID(), name: '', labels: {}, spec: s }))
      .migration!;
  const getMigration = async (id: string) => (await migrations.call.getMigration({ id })).migration!;
  const finished = (id: string, timeoutMs = 300_000) =>
    until(
      'the migration to finish',
      async () => {
        const m = await getMigration(id);
        return m.phase === MP.MIGRATION_PHASE_DONE ? m : undefined;
      },
      timeoutMs,
      250,
    );
  const inPhase = (id: string, phase: migrationV1.MigrationPhase) =>
    until(
      `the migration in ${MP[phase]}`,
      async () => {
        const m = await getMigration(id);
        if (m.phase === MP.MIGRATION_PHASE_DONE)
          throw new Error(`finished already: ${MS[m.state]} ${m.error?.message}`);
        return m.phase === phase ? m : undefined;
      },
      120_000,
      50,
    );

  /**
   * What must hold after any migration, whatever happened to it: one QEMU runs the VM, on the host the
   * VM's record names; the record is RUNNING with no operation in flight; the migration's operation is
   * finished; and the guest kept counting (no reboot) and answers HTTP.
   */
  const consistentAfter = async (m: migrationV1.Migration, ticksBefore: number) => {
    const vm = await until('the VM settled', async () => {
      const v = await getVm(m.vmId);
      return v.currentOperationId === '' && qemusOf(m.vmId).length === 1 ? v : undefined;
    });
    const [qemu] = qemusOf(m.vmId);
    expect(hostOfQemu(qemu.cmdline)?.id).toBe(vm.hostId);
    expect(vm.powerState).toBe(computeV1.PowerState.POWER_STATE_RUNNING);
    const expectedHost = m.state === MS.MIGRATION_STATE_SUCCEEDED ? m.destinationHostId : m.sourceHostId;
    expect(vm.hostId).toBe(expectedHost);
    const op = await operationDone(admin.operations, m.operationId, 60_000);
    expect([
      commonV1.OperationState.OPERATION_STATE_SUCCEEDED,
      commonV1.OperationState.OPERATION_STATE_FAILED,
      commonV1.OperationState.OPERATION_STATE_CANCELLED,
    ]).toContain(op.state);
    const text = await until('the guest to count on', async () => {
      const t = await consoleOf(m.vmId);
      return Math.max(0, ...ticks(t)) > ticksBefore ? t : undefined;
    }).catch(async (e: Error) => {
      // A guest that stopped counting: its console says whether it crashed (QEMU under TCG loses the
      // memory of some busy guests it migrates; docs/benchmarks.md).
      throw new Error(
        `${e.message}; its console ends ${JSON.stringify((await consoleOf(m.vmId)).slice(-800))}`,
      );
    });
    if (m.state === MS.MIGRATION_STATE_SUCCEEDED) expect(text).not.toContain(DEMO_READY_MARKER);
    const answer = await httpGet(forwardOf(vm)).catch(async (e: Error) => {
      throw new Error(
        `${e.message} at ${forwardOf(vm)}; migration ${JSON.stringify(await getMigration(m.id))}; qemu ${qemu.cmdline}`,
      );
    });
    expect(answer).toContain('demo');
    return vm;
  };

  beforeAll(async () => {
    cloud = await startUpCloud({
      driver: 'qemu',
      agents: 2,
      demoImage: true,
      dirPrefix: 'flotilla-migration-e2e-',
    });
    ({ dir, admin, hosts } = cloud);
    const client = <C>(service: string) =>
      new GrpcClient<C>({
        address: `127.0.0.1:${cloud.basePort}`,
        service: `flotilla.migration.v1.${service}`,
        staticMetadata: { authorization: `Bearer ${cloud.adminToken}` },
        defaultDeadlineMs: 30_000,
      });
    migrations = client('MigrationService');
    evacuations = client('EvacuationService');
  }, 600_000);

  afterAll(async () => {
    for (const s of shells) s.close();
    migrations?.close();
    evacuations?.close();
    // Stops up, then kills whatever of this cloud is left (its QEMUs too) and removes its directory.
    await cloud?.stop();
  }, 60_000);

  it('preflight (--dry-run) lists every blocker at once, from compute and from storage', async () => {
    const vm = await createVm('pre-1');
    const to = otherHost(vm.hostId);
    // A data disk on a FILE SR of the VM's host, and the destination in maintenance: two blockers.
    const here = hosts.find((h) => h.id === vm.hostId)!;
    await fileSr(here);
    await cliOk('vdi', 'create', 'pre-1-data', '--size', '64M', '--sr', `file-${here.name}`);
    await cliOk('vbd', 'create', 'pre-1', 'pre-1-data');
    await cliOk('vbd', 'plug', 'pre-1:0');
    await cliOk('host', 'maintenance', to.name, '--reason', 'e2e: firmware update');
    try {
      const { check } = await migrations.call.preflightMigration({ spec: spec(vm, to) });
      expect(check!.migratable).toBe(false);
      const kinds = check!.blockers.map((b) => migrationV1.BlockerKind[b.kind]);
      expect(kinds).toEqual(
        expect.arrayContaining(['BLOCKER_KIND_DESTINATION_HOST_STATE', 'BLOCKER_KIND_LOCAL_STORAGE']),
      );
      const dry = await cli('vm', 'migrate', 'pre-1', '--to', to.name, '--dry-run');
      expect(dry.code).not.toBe(0);
      expect(dry.stdout + dry.stderr).toMatch(/maintenance/i);
      expect(dry.stdout + dry.stderr).toMatch(/with-storage|local/i);
      // Creating it is refused with the same blockers, and nothing changes.
      await expect(startMigration(spec(vm, to))).rejects.toMatchObject({ code: 9 /* FAILED_PRECONDITION */ });
      expect((await getVm(vm.id)).hostId).toBe(vm.hostId);
    } finally {
      await cliOk('host', 'enable', to.name);
      await destroyVm(vm.id);
    }
  });

  it('moves a running, memory-dirtying VM with its local disk: counter, HTTP and disk bytes carry over', async () => {
    const vm = await getVm((await createVm('live-1', { dirtyMiB: 16, start: true })).id);
    const here = hosts.find((h) => h.id === vm.hostId)!;
    const to = otherHost(vm.hostId);
    const srName = `file-${here.name}`;
    await fileSr(here);
    await fileSr(to);
    await cliOk('vdi', 'create', 'live-1-data', '--size', '64M', '--sr', srName);
    await cliOk('vbd', 'create', 'live-1', 'live-1-data');
    await cliOk('vbd', 'plug', 'live-1:0');
    const attach = async () => {
      const sh = new GuestShell(admin.vms, vm.id);
      shells.push(sh);
      await sh.ready();
      return sh;
    };
    let shell = await attach();
    // 8 MiB the guest writes past the TICK sector, and their checksum as the guest computes it.
    const sum = async () =>
      (await shell.run('dd if=/dev/vda bs=1M skip=1 count=8 2>/dev/null | md5sum')).match(
        /\b[0-9a-f]{32}\b/,
      )![0];
    await shell.run('dd if=/dev/urandom of=/dev/vda bs=1M seek=1 count=8 conv=fsync 2>/dev/null');
    const before = await sum();
    const ticksBefore = Math.max(...ticks(await consoleOf(vm.id)));

    const out = await cliOk('vm', 'migrate', 'live-1', '--to', to.name, '--with-storage', '--json');
    const { migration } = JSON.parse(out) as { migration: { id: string } };
    const m = await finished(migration.id);
    expect({ state: MS[m.state], error: m.error?.message ?? '' }).toEqual({
      state: 'MIGRATION_STATE_SUCCEEDED',
      error: '',
    });
    expect(m.pointOfNoReturnPassed).toBe(true);
    const phases = m.phases.map((p) => MP[p.phase]);
    expect(phases).toEqual(
      expect.arrayContaining([
        'MIGRATION_PHASE_PREFLIGHT',
        'MIGRATION_PHASE_PREPARE',
        'MIGRATION_PHASE_MIRROR',
        'MIGRATION_PHASE_TRANSFER',
        'MIGRATION_PHASE_SWITCHOVER',
        'MIGRATION_PHASE_CLEANUP',
        'MIGRATION_PHASE_DONE',
      ]),
    );
    for (const p of m.phases.slice(0, -1)) expect(p.endedAt).toBeDefined();
    const s = m.stats!;
    expect(Number(s.downtimeMs)).toBeGreaterThan(0);
    expect(Number(s.totalTimeMs)).toBeGreaterThan(0);
    expect(Number(s.bytesTransferred)).toBeGreaterThan(64 * MiB);
    expect(s.rounds).toBeGreaterThanOrEqual(1);
    expect(Number(s.storageTransferredBytes)).toBeGreaterThan(0);

    const moved = await consistentAfter(m, ticksBefore);
    expect(moved.hostId).toBe(to.id);
    // The console ended with the source QEMU (as a console on any hypervisor does): attach again, to the
    // destination. The bytes the guest wrote before the switch, read by the guest on the destination's copy.
    shell.close();
    shell = await attach();
    expect(await sum()).toBe(before);
    const { vdi } = JSON.parse(await cliOk('vdi', 'show', 'live-1-data', '--json')) as {
      vdi: { srId: string };
    };
    const { sr } = JSON.parse(await cliOk('sr', 'show', `file-${to.name}`, '--json')) as {
      sr: { id: string };
    };
    expect(vdi.srId).toBe(sr.id);

    // The statistics, as the CLI shows them.
    const shown = await cliOk('migration', 'show', m.id);
    expect(shown).toMatch(/downtime/i);
    expect(shown).toMatch(/rounds/i);
    // And as Prometheus reads them from the migration service's admin endpoint (`up`: base port + 84).
    const metrics = await httpGet(`127.0.0.1:${cloud.basePort + 84}/metrics`);
    expect(metrics).toMatch(/flotilla_migrations_total\{[^}]*outcome="succeeded"[^}]*\} [1-9]/);
    expect(metrics).toMatch(/flotilla_migration_downtime_seconds_count\{[^}]*\} [1-9]/);
    shell.close();
    await destroyVm(vm.id);
  });

  interface DiskEvidence {
    vdi: string;
    /** The guest's md5 of the 8 MiB it wrote, read by the guest now. */
    sum: () => Promise<string>;
    before: string;
    /** The files of each host's FILE SR before the migration. */
    files: Record<string, string[]>;
  }
  const srFiles = (host: computeV1.Host) =>
    fs.readdirSync(path.join(dir, 'var', 'sr', `file-${host.name}`)).filter((f) => !f.startsWith('.'));

  /**
   * A migration slow enough to hurt in the middle of its memory transfer. With `disk`, the VM also has a data
   * disk on its host's FILE SR holding 8 MiB the guest wrote, moved with storage (mirrored first).
   */
  const slowMigration = async (name: string, o: { disk?: boolean; bandwidthMiB?: number } = {}) => {
    const disk = o.disk ?? false;
    const vm = await createVm(name);
    let data: DiskEvidence | undefined;
    if (disk) {
      const here = hosts.find((h) => h.id === vm.hostId)!;
      await fileSr(here);
      await fileSr(otherHost(vm.hostId));
      await cliOk('vdi', 'create', `${name}-data`, '--size', '32M', '--sr', `file-${here.name}`);
      await cliOk('vbd', 'create', name, `${name}-data`);
      await cliOk('vbd', 'plug', `${name}:0`);
      const sum = async () => {
        const sh = new GuestShell(admin.vms, vm.id);
        shells.push(sh);
        await sh.ready();
        const out = await sh.run('dd if=/dev/vda bs=1M skip=1 count=8 2>/dev/null | md5sum');
        sh.close();
        return out.match(/\b[0-9a-f]{32}\b/)![0];
      };
      const sh = new GuestShell(admin.vms, vm.id);
      shells.push(sh);
      await sh.ready();
      await sh.run('dd if=/dev/urandom of=/dev/vda bs=1M seek=1 count=8 conv=fsync 2>/dev/null');
      sh.close();
      data = {
        vdi: `${name}-data`,
        sum,
        before: await sum(),
        files: Object.fromEntries(hosts.map((h) => [h.name, srFiles(h)])),
      };
    }
    const ticksBefore = Math.max(...ticks(await consoleOf(vm.id)));
    // 24 MiB/s: a few seconds of transfer for the guest's memory that is not zero, time to hurt it.
    const bandwidthBytesPerSec = (o.bandwidthMiB ?? 24) * MiB;
    const m = await startMigration(spec(vm, otherHost(vm.hostId), { bandwidthBytesPerSec }, disk));
    await inPhase(m.id, MP.MIGRATION_PHASE_TRANSFER);
    await new Promise((r) => setTimeout(r, 1500));
    return { vm, m, ticksBefore, data };
  };

  /** The data disk after a migration: on the SR of the host the VM ended on, the guest's bytes unchanged. */
  const diskConsistent = async (end: migrationV1.Migration, data: DiskEvidence) => {
    const vm = await getVm(end.vmId);
    const host = hosts.find((h) => h.id === vm.hostId)!;
    const other = otherHost(vm.hostId);
    const { vdi } = JSON.parse(await cliOk('vdi', 'show', data.vdi, '--json')) as { vdi: { srId: string } };
    const { sr } = JSON.parse(await cliOk('sr', 'show', `file-${host.name}`, '--json')) as {
      sr: { id: string };
    };
    expect(vdi.srId).toBe(sr.id);
    expect(await data.sum()).toBe(data.before);
    // Nothing new is left on the other host's SR: neither the copy (rolled back) nor the original (moved).
    await until(`no leftover file on ${other.name}'s SR`, () =>
      srFiles(other).every((f) => data.files[other.name].includes(f)) ? true : undefined,
    );
  };

  it('survives SIGKILL of the destination agent during the transfer', async () => {
    const { vm, m, ticksBefore } = await slowMigration('fault-dst');
    await sigkill(agentPid(otherHost(vm.hostId)));
    const end = await finished(m.id);
    await consistentAfter(end, ticksBefore);
    await destroyVm(vm.id);
  });

  it('survives SIGKILL of the source agent during the transfer', async () => {
    const { vm, m, ticksBefore } = await slowMigration('fault-src');
    await sigkill(agentPid(hosts.find((h) => h.id === vm.hostId)!));
    const end = await finished(m.id);
    await consistentAfter(end, ticksBefore);
    await destroyVm(vm.id);
  });

  it('resumes after SIGKILL of the migration service during the transfer, disks and all', async () => {
    const { vm, m, ticksBefore, data } = await slowMigration('fault-svc', { disk: true });
    await sigkill(servicePid('migration'));
    const end = await finished(m.id);
    expect(MS[end.state]).toBe('MIGRATION_STATE_SUCCEEDED');
    await consistentAfter(end, ticksBefore);
    await diskConsistent(end, data!);
    await destroyVm(vm.id);
  });

  it('rolls back when the TCP stream between the QEMUs is cut: the VM and its disk stay at the source', async () => {
    const { vm, m, ticksBefore, data } = await slowMigration('fault-tcp', { disk: true });
    // The destination QEMU's listening ports (migration, NBD) other than its forwarded guest port.
    const [dest] = qemusOf(vm.id).filter((q) => hostOfQemu(q.cmdline)?.id !== vm.hostId);
    const listening = execFileSync('ss', ['-Hltnp'], { encoding: 'utf8' })
      .split('\n')
      .filter((l) => l.includes(`pid=${dest.pid},`))
      .map((l) => Number(l.split(/\s+/)[3].split(':').pop()));
    const guestPort = Number(forwardOf(await getVm(vm.id)).split(':')[1]);
    let cut = 0;
    for (const port of listening.filter((p) => p !== guestPort)) {
      const out = execFileSync(
        'ss',
        ['-HKtn', 'state', 'established', `( sport = :${port} or dport = :${port} )`],
        {
          encoding: 'utf8',
        },
      );
      cut += out.split('\n').filter(Boolean).length;
    }
    expect(cut).toBeGreaterThan(0);
    const end = await finished(m.id);
    expect(MS[end.state]).toBe('MIGRATION_STATE_FAILED');
    expect(end.pointOfNoReturnPassed).toBe(false);
    expect(end.error?.message).toBeTruthy();
    expect(end.phases.map((p) => MP[p.phase])).toContain('MIGRATION_PHASE_ROLLBACK');
    await consistentAfter(end, ticksBefore);
    await diskConsistent(end, data!);
    await destroyVm(vm.id);
  });

  it('cancels on request before the point of no return: the VM stays where it was', async () => {
    // Slower than the fault tests: the cancel (a CLI process starting) must come before the switch-over.
    const { vm, m, ticksBefore } = await slowMigration('cancel-1', { bandwidthMiB: 6 });
    const r = await cli('migration', 'cancel', m.id);
    expect(r).toMatchObject({ code: 0 });
    const end = await finished(m.id);
    expect({ state: MS[end.state], error: end.error?.message }).toMatchObject({
      state: 'MIGRATION_STATE_CANCELLED',
    });
    await consistentAfter(end, ticksBefore);
    await destroyVm(vm.id);
  });

  it('detects a guest that out-dirties the link within 3 rounds: refused with the numbers, or post-copy where allowed', async () => {
    const vm = await createVm('busy-1', { dirtyMiB: 64 });
    const ticksBefore = Math.max(...ticks(await consoleOf(vm.id)));
    const slow = { bandwidthBytesPerSec: 64 * MiB };
    const refused = await finished((await startMigration(spec(vm, otherHost(vm.hostId), slow))).id);
    expect(MS[refused.state]).toBe('MIGRATION_STATE_FAILED');
    expect(refused.stats!.rounds).toBeLessThanOrEqual(5);
    expect(refused.error?.message).toMatch(/\d/);
    await consistentAfter(refused, ticksBefore);

    const withPostCopy = spec(await getVm(vm.id), otherHost(vm.hostId), { ...slow, postCopy: true });
    const source = hosts.find((h) => h.id === vm.hostId)!;
    if (!postCopySafe(source.accelerator)) {
      // Under TCG, QEMU's post-copy corrupts some guests: refused before anything starts, saying what to do.
      const refused = await startMigration(withPostCopy).catch((e: grpc.ServiceError) => e);
      expect(refused).toMatchObject({
        code: grpc.status.FAILED_PRECONDITION,
        details: expect.stringMatching(
          /post_copy: host \S+ runs its guests under TCG.*raise bandwidth_bytes_per_sec or downtime_limit_ms/,
        ),
      });
      expect(errorDetailsOf(refused).map((d) => d.reason)).toEqual(['POST_COPY_UNSUPPORTED']);
    } else {
      const post = await finished((await startMigration(withPostCopy)).id);
      expect({ state: MS[post.state], error: post.error?.message ?? '' }).toEqual({
        state: 'MIGRATION_STATE_SUCCEEDED',
        error: '',
      });
      expect(post.phases.map((p) => MP[p.phase])).toContain('MIGRATION_PHASE_POST_COPY');
      await consistentAfter(post, Math.max(...ticks(await consoleOf(vm.id)), 0) - 1);
    }
    await destroyVm(vm.id);
  });

  it('evacuates a host for maintenance and keeps the scheduler away until it ends', async () => {
    const [h1, h2] = hosts;
    const vms: computeV1.Vm[] = [];
    for (let i = 0; i < 3; i++) vms.push(await createVm(`evac-${i}`, { memoryMib: 128 }));
    for (const vm of vms)
      if (vm.hostId !== h1.id)
        expect(MS[(await finished((await startMigration(spec(vm, h1))).id)).state]).toBe(
          'MIGRATION_STATE_SUCCEEDED',
        );
    const out = await cliOk('host', 'evacuate', h1.name, '--maintenance', '--max-parallel', '2', '--json');
    const { evacuation } = JSON.parse(out) as { evacuation: { id: string } };
    const e = await until(
      'the evacuation',
      async () => {
        const got = (await evacuations.call.getEvacuation({ id: evacuation.id })).evacuation!;
        return got.state === migrationV1.EvacuationState.EVACUATION_STATE_RUNNING ? undefined : got;
      },
      300_000,
      500,
    );
    // Each VM's outcome with its reason, so that a failure here says why the VM did not move.
    const outcomes = e.vms.map((v) => ({
      outcome: migrationV1.EvacuationVmOutcome[v.outcome],
      why: [v.error?.message ?? '', ...v.blockers.map((b) => b.message)].filter(Boolean).join('; '),
    }));
    expect(outcomes).toEqual(vms.map(() => ({ outcome: 'EVACUATION_VM_OUTCOME_MIGRATED', why: '' })));
    expect(migrationV1.EvacuationState[e.state]).toBe('EVACUATION_STATE_SUCCEEDED');
    for (const vm of vms) expect((await getVm(vm.id)).hostId).toBe(h2.id);
    const host1 = (await admin.hosts.call.getHost({ id: h1.id })).host!;
    expect(computeV1.HostState[host1.state]).toBe('HOST_STATE_MAINTENANCE');
    // The scheduler keeps away: a new VM lands on the other host.
    const fresh = await createVm('evac-new', { memoryMib: 128 });
    expect(fresh.hostId).toBe(h2.id);
    await cliOk('host', 'enable', h1.name);
    for (const vm of [...vms, fresh]) await destroyVm(vm.id);
  });
});
