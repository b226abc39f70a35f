import * as grpc from '@grpc/grpc-js';
import { computeV1, migrationV1, storageV1 } from '@flotilla/contracts';
import { grpcStatus, serviceDefinition } from '@flotilla/platform';

/**
 * Stand-ins for compute, storage and the host agents as the migration service sees them, served over real
 * gRPC on loopback, each with a small state machine that keeps the contract's rules (locks, reservations,
 * idempotency by migration id, refusals): for the migration service's tests while the real sides are being
 * built. The source "QEMU" moves through QEMU's migration states on a timer: pre-copy rounds that converge
 * after `convergeAfterRounds` (or never), pause before switchover, post-copy, failure when the destination
 * goes away (return path). The end-to-end test with real services, agents and QEMU is separate.
 */

const MIB = 1024 * 1024;
type Handler = (req: never) => Promise<unknown> | unknown;

const err = (code: grpc.status, message: string) => grpcStatus(code, message);

function must<T>(v: T | undefined): T {
  if (v === undefined) throw err(grpc.status.NOT_FOUND, 'unknown record in the fake pool');
  return v;
}

async function serve(
  services: Array<{ name: string; impl: Record<string, Handler> }>,
  address = '127.0.0.1:0',
): Promise<{ server: grpc.Server; address: string }> {
  const server = new grpc.Server();
  for (const { name, impl } of services) {
    const def = serviceDefinition(name);
    const handlers: grpc.UntypedServiceImplementation = {};
    for (const method of Object.keys(def)) {
      const lower = method.charAt(0).toLowerCase() + method.slice(1);
      const fn = impl[lower];
      if (!fn) continue;
      handlers[method] = (call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) => {
        Promise.resolve()
          .then(() => fn(call.request as never))
          .then(
            (res) => cb(null, res),
            (e: grpc.ServiceError) => cb(e),
          );
      };
    }
    server.addService(def, handlers);
  }
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  return { server, address: `127.0.0.1:${port}` };
}

// ---------------------------------------------------------------------------------------------------------
// compute

export interface FakeHost {
  id: string;
  name: string;
  state: 'ENABLED' | 'DISABLED' | 'MAINTENANCE' | 'DOWN';
  memoryFreeMib: number;
  epoch: number;
  /** Set once its agent serves. */
  address: string;
  /** As compute reports it: "tcg" refuses auto-converge and post-copy. */
  accelerator: string;
}

export interface FakeVm {
  id: string;
  name: string;
  tenantId: string;
  powerState: 'RUNNING' | 'PAUSED' | 'HALTED';
  memoryMib: number;
  hostId: string;
  /** The operation holding it (a migration's). */
  currentOperationId: string;
  migrationId: string;
  /** Hosts it holds capacity on (both during a migration). */
  reservedOn: string[];
  powerStateReason: string;
}

export class FakeCompute {
  readonly hosts = new Map<string, FakeHost>();
  readonly vms = new Map<string, FakeVm>();
  readonly calls: string[] = [];

  check(req: computeV1.CheckVmMigrationRequest): computeV1.CheckVmMigrationResponse {
    const vm = this.vms.get(req.vmId);
    if (!vm || (req.tenantId && vm.tenantId !== req.tenantId))
      throw err(grpc.status.NOT_FOUND, `VM ${req.vmId} not found`);
    const blockers: computeV1.CheckVmMigrationResponse['blockers'] = [];
    const block = (reason: string, description: string, kind: string, id: string) =>
      blockers.push({ reason, field: '', description, metadata: { resource_kind: kind, resource_id: id } });
    const source = this.hosts.get(vm.hostId);
    let destination: FakeHost | undefined;
    if (req.destinationHostId) {
      destination = this.hosts.get(req.destinationHostId);
      if (!destination) throw err(grpc.status.NOT_FOUND, `host ${req.destinationHostId} not found`);
    } else {
      destination = [...this.hosts.values()].find(
        (h) => h.id !== vm.hostId && h.state === 'ENABLED' && h.memoryFreeMib >= vm.memoryMib,
      );
      if (!destination) block('NO_DESTINATION', 'no host fits the VM', 'vm', vm.id);
    }
    if (vm.currentOperationId && vm.migrationId !== req.migrationId)
      block('VM_OPERATION_IN_PROGRESS', `operation ${vm.currentOperationId} holds the VM`, 'vm', vm.id);
    if (source && source.state === 'DOWN')
      block('SOURCE_HOST_UNAVAILABLE', `host ${source.name} is DOWN`, 'host', source.id);
    if (destination) {
      if (destination.id === vm.hostId)
        block('SAME_HOST', 'the VM already runs there', 'host', destination.id);
      if (destination.state !== 'ENABLED')
        block(
          'DESTINATION_HOST_STATE',
          `host ${destination.name} is ${destination.state}`,
          'host',
          destination.id,
        );
      const reserved = vm.reservedOn.includes(destination.id) && vm.migrationId === req.migrationId;
      if (!reserved && destination.memoryFreeMib < vm.memoryMib)
        block(
          'INSUFFICIENT_MEMORY',
          `host ${destination.name} has ${destination.memoryFreeMib} MiB free, the VM needs ${vm.memoryMib} MiB`,
          'host',
          destination.id,
        );
    }
    return {
      vm: this.vmView(vm),
      source: source ? this.hostView(source) : undefined,
      destination: destination ? this.hostView(destination) : undefined,
      blockers,
    };
  }

  vmView(vm: FakeVm): computeV1.MigrationVm {
    return {
      id: vm.id,
      name: vm.name,
      tenantId: vm.tenantId,
      powerState: `POWER_STATE_${vm.powerState}` as computeV1.PowerState,
      vcpus: 1,
      memoryMib: vm.memoryMib,
      currentOperationId: vm.currentOperationId,
      hostId: vm.powerState === 'HALTED' ? '' : vm.hostId,
    };
  }

  hostView(h: FakeHost): computeV1.MigrationHost {
    return {
      id: h.id,
      name: h.name,
      address: h.address,
      epoch: h.epoch,
      state: `HOST_STATE_${h.state}` as computeV1.HostState,
      driver: 'qemu',
      accelerator: h.accelerator,
    };
  }

  impl(): Record<string, Handler> {
    return {
      checkVmMigration: (req: computeV1.CheckVmMigrationRequest) => {
        this.calls.push('CheckVmMigration');
        return this.check(req);
      },
      beginVmMigration: (req: computeV1.BeginVmMigrationRequest) => {
        this.calls.push('BeginVmMigration');
        const res = this.check({ ...req, excludeHostIds: [] });
        if (res.blockers.length)
          throw err(grpc.status.FAILED_PRECONDITION, res.blockers.map((b) => b.description).join('; '));
        const vm = must(this.vms.get(req.vmId));
        const dest = must(this.hosts.get(req.destinationHostId));
        if (vm.migrationId !== req.migrationId) {
          vm.currentOperationId = req.operationId;
          vm.migrationId = req.migrationId;
          dest.memoryFreeMib -= vm.memoryMib;
          vm.reservedOn = [vm.hostId, dest.id];
        }
        return {
          vm: this.vmView(vm),
          source: res.source,
          destination: res.destination,
          spec: {
            vmId: vm.id,
            name: vm.name,
            vcpus: 1,
            memoryMib: vm.memoryMib,
            boot: undefined,
            nics: [],
            kernelSha256: '',
            initrdSha256: '',
            disks: [],
          },
        };
      },
      commitVmMigration: (req: computeV1.CommitVmMigrationRequest) => {
        this.calls.push('CommitVmMigration');
        const vm = this.vms.get(req.vmId);
        if (!vm) throw err(grpc.status.NOT_FOUND, 'no VM');
        if (vm.migrationId !== req.migrationId)
          throw err(grpc.status.FAILED_PRECONDITION, 'not held by this migration');
        vm.hostId = vm.reservedOn[1];
        return { vm: this.vmView(vm) };
      },
      endVmMigration: (req: computeV1.EndVmMigrationRequest) => {
        this.calls.push(`EndVmMigration${req.lostReason ? ' (lost)' : ''}`);
        const vm = this.vms.get(req.vmId);
        if (!vm || vm.migrationId !== req.migrationId) return { vm: vm ? this.vmView(vm) : undefined };
        for (const h of vm.reservedOn)
          if (h !== vm.hostId) must(this.hosts.get(h)).memoryFreeMib += vm.memoryMib;
        vm.reservedOn = [vm.hostId];
        vm.currentOperationId = '';
        vm.migrationId = '';
        if (req.lostReason) {
          vm.powerState = 'HALTED';
          vm.powerStateReason = req.lostReason;
        }
        return { vm: this.vmView(vm) };
      },
    };
  }

  hostImpl(): Record<string, Handler> {
    return {
      getHost: (req: { id: string }) => {
        const h = this.hosts.get(req.id);
        if (!h) throw err(grpc.status.NOT_FOUND, 'no host');
        return {
          host: {
            id: h.id,
            name: h.name,
            address: h.address,
            state: `HOST_STATE_${h.state}`,
            epoch: h.epoch,
          },
        };
      },
    };
  }
}

// ---------------------------------------------------------------------------------------------------------
// storage

export interface FakeDisk {
  vbdId: string;
  vdiId: string;
  srId: string;
  /** FILE SRs belong to a host; SHARED ones are seen by every host. */
  srHostId: string;
  sizeBytes: number;
}

export class FakeStorage {
  readonly disks = new Map<string, FakeDisk[]>();
  /** FILE SR of each host (the copy target). */
  readonly fileSrOf = new Map<string, string>();
  readonly migrations = new Map<
    string,
    { vmId: string; state: 'PREPARED' | 'COMMITTED' | 'CLEANED'; plan: storageV1.DiskMigrationPlan[] }
  >();
  readonly calls: string[] = [];

  private plan(req: storageV1.CheckVmDiskMigrationRequest) {
    // As storage answers (apps/storage/src/vbds/disk-migration.ts).
    if (req.sourceHostId === req.destinationHostId)
      throw err(
        grpc.status.INVALID_ARGUMENT,
        'destination_host_id: is the source host: a migration goes to another host',
      );
    const blockers: storageV1.CheckVmDiskMigrationResponse['blockers'] = [];
    const plan = (this.disks.get(req.vmId) ?? []).map((d) => {
      const local = d.srHostId !== '';
      if (local && !req.withStorage)
        blockers.push({
          reason: 'LOCAL_STORAGE',
          field: '',
          description: `VDI ${d.vdiId} is on FILE SR ${d.srId} of the source: set with_storage`,
          metadata: { resource_kind: 'vdi', resource_id: d.vdiId },
        });
      return {
        vbdId: d.vbdId,
        vdiId: d.vdiId,
        srId: d.srId,
        targetSrId: local ? (req.vdiMap[d.vdiId] ?? this.fileSrOf.get(req.destinationHostId) ?? '') : '',
        sizeBytes: d.sizeBytes,
      };
    });
    return { plan, blockers };
  }

  private vmDisks(plan: storageV1.DiskMigrationPlan[]): storageV1.VmDisk[] {
    return plan.map((p, i) => ({
      vbdId: p.vbdId,
      vdiId: p.vdiId,
      devicePosition: i,
      readOnly: false,
      bootable: i === 0,
      srId: p.targetSrId || p.srId,
      srPath: `/sr/${p.targetSrId || p.srId}`,
      file: `${p.vdiId}.qcow2`,
    }));
  }

  impl(): Record<string, Handler> {
    return {
      checkVmDiskMigration: (req: storageV1.CheckVmDiskMigrationRequest) => {
        this.calls.push('CheckVmDiskMigration');
        const { plan, blockers } = this.plan(req);
        const copied = plan.filter((p) => p.targetSrId);
        return { disks: plan, blockers, storageBytesToCopy: copied.reduce((n, p) => n + p.sizeBytes, 0) };
      },
      prepareVmDiskMigration: (req: storageV1.PrepareVmDiskMigrationRequest) => {
        this.calls.push('PrepareVmDiskMigration');
        let m = this.migrations.get(req.migrationId);
        if (!m) {
          const { plan, blockers } = this.plan({ ...req });
          if (blockers.length) throw err(grpc.status.FAILED_PRECONDITION, blockers[0].description);
          m = { vmId: req.vmId, state: 'PREPARED', plan };
          this.migrations.set(req.migrationId, m);
        }
        return { disks: this.vmDisks(m.plan), plan: m.plan };
      },
      commitVmDiskMigration: (req: storageV1.CommitVmDiskMigrationRequest) => {
        this.calls.push('CommitVmDiskMigration');
        const m = this.migrations.get(req.migrationId);
        if (!m) throw err(grpc.status.NOT_FOUND, 'no prepared migration');
        if (m.state === 'PREPARED') {
          m.state = 'COMMITTED';
          for (const d of this.disks.get(req.vmId) ?? []) {
            const p = m.plan.find((x) => x.vbdId === d.vbdId);
            if (p?.targetSrId) {
              d.srId = p.targetSrId;
              d.srHostId = 'moved';
            }
          }
        }
        return { disks: this.vmDisks(m.plan) };
      },
      abortVmDiskMigration: (req: storageV1.AbortVmDiskMigrationRequest) => {
        this.calls.push('AbortVmDiskMigration');
        const m = this.migrations.get(req.migrationId);
        if (m && m.state !== 'PREPARED') throw err(grpc.status.FAILED_PRECONDITION, 'committed');
        this.migrations.delete(req.migrationId);
        return {};
      },
      cleanUpVmDiskMigration: (req: storageV1.CleanUpVmDiskMigrationRequest) => {
        this.calls.push('CleanUpVmDiskMigration');
        const m = this.migrations.get(req.migrationId);
        if (m) m.state = 'CLEANED';
        return {};
      },
    };
  }
}

// ---------------------------------------------------------------------------------------------------------
// agents and their QEMUs

export interface GuestModel {
  memoryMib: number;
  /** Rounds after which the remainder fits the downtime limit; Infinity: a guest that never converges. */
  convergeAfterRounds: number;
  /** One pre-copy round, ms. */
  roundMs: number;
}

interface Outgoing {
  migrationId: string;
  vmId: string;
  state: migrationV1.OutgoingState;
  error: string;
  rounds: number;
  destinationHostId: string;
  postCopy: boolean;
  /** StartOutgoing's switch_when_ready: the source agent switches at pre-switchover by itself. */
  armed: boolean;
  sourceHostId: string;
  mirror: migrationV1.DiskMirrorStatus[];
  timer?: NodeJS.Timeout;
  listeners: Array<() => void>;
  startedAt: number;
}

const O = migrationV1.OutgoingState;

/** The pool's agents: each host's incoming and outgoing migrations, servers that can be killed and restarted. */
export class FakeAgents {
  readonly outgoing = new Map<string, Outgoing>();
  readonly incoming = new Map<
    string,
    { migrationId: string; vmId: string; hostId: string; state: 'WAITING' | 'RUNNING' | 'FINISHED' }
  >();
  readonly calls: string[] = [];
  readonly servers = new Map<string, { server?: grpc.Server; address: string }>();
  /** RPCs (lower camel case, optionally "host:method") that fail once with UNAVAILABLE or INTERNAL. */
  readonly failOnce = new Map<string, grpc.status>();
  /** SwitchOver answers only after this resolves (a crash point inside the switch). */
  holdSwitchOver?: Promise<void>;
  /**
   * Whether a source agent whose switch is armed switches by itself at pre-switchover (as the real agents
   * do while they run). false: as if it restarted in between and stopped listening, so SwitchOver must.
   */
  autoSwitch = true;
  /** GetOutgoingStatus of a completed migration answers only after this resolves (the switch not seen yet). */
  holdCompletedStatus?: Promise<void>;
  /**
   * The next switch stops in DEVICE (the guest paused, its device state on the way) until `release`
   * resolves, then completes, or fails as QEMU does when the destination cannot load the state (the source
   * then runs the guest again).
   */
  deviceStage?: { release: Promise<void>; outcome: 'completed' | 'failed' };
  guest: GuestModel = { memoryMib: 512, convergeAfterRounds: 3, roundMs: 40 };

  constructor(private readonly compute: FakeCompute) {}

  async start(hostId: string): Promise<string> {
    const known = this.servers.get(hostId);
    const { server, address } = await serve(
      [{ name: 'flotilla.migration.v1.MigrationAgentService', impl: this.impl(hostId) }],
      known?.address ?? '127.0.0.1:0',
    );
    this.servers.set(hostId, { server, address });
    must(this.compute.hosts.get(hostId)).address = address;
    return address;
  }

  /** The agent process dies: its server goes; an incoming QEMU it ran is gone, so a source sending to it fails. */
  kill(hostId: string): void {
    const s = this.servers.get(hostId);
    s?.server?.forceShutdown();
    if (s) s.server = undefined;
    for (const [id, inc] of this.incoming)
      if (inc.hostId === hostId && inc.state === 'WAITING') {
        this.incoming.delete(id);
        const out = this.outgoing.get(id);
        if (
          out &&
          [O.OUTGOING_STATE_ACTIVE, O.OUTGOING_STATE_MIRRORING, O.OUTGOING_STATE_SETUP].includes(out.state)
        )
          this.move(out, O.OUTGOING_STATE_FAILED, 'Unable to write to socket: Connection reset by peer');
      }
  }

  stopAll(): void {
    for (const s of this.servers.values()) s.server?.forceShutdown();
    for (const o of this.outgoing.values()) clearTimeout(o.timer);
  }

  private move(o: Outgoing, state: migrationV1.OutgoingState, error = ''): void {
    o.state = state;
    o.error = error;
    if (state !== O.OUTGOING_STATE_ACTIVE) clearTimeout(o.timer);
    for (const l of o.listeners.splice(0)) l();
  }

  private status(o: Outgoing): migrationV1.OutgoingStatus {
    const total = this.guest.memoryMib * MIB;
    const never = !Number.isFinite(this.guest.convergeAfterRounds);
    const remaining =
      o.state === O.OUTGOING_STATE_COMPLETED
        ? 0
        : o.rounds === 0
          ? total
          : never
            ? 200 * MIB
            : Math.max(1 * MIB, total / 2 ** o.rounds);
    return {
      state: o.state,
      error: o.error,
      totalTimeMs: Date.now() - o.startedAt,
      downtimeMs: o.state === O.OUTGOING_STATE_COMPLETED ? 17 : 0,
      setupTimeMs: 2,
      expectedDowntimeMs: never ? 1500 : 100,
      memoryTotalBytes: total,
      memoryTransferredBytes: total * Math.max(1, o.rounds),
      memoryRemainingBytes: remaining,
      bytesTransferred: total * Math.max(1, o.rounds) + o.mirror.reduce((n, d) => n + d.doneBytes, 0),
      rounds: o.rounds,
      dirtyRateBytesPerSec: never ? 300 * MIB : 10 * MIB,
      transferRateBytesPerSec: 128 * MIB,
      cpuThrottlePercent: 0,
      postCopyRequests: o.postCopy && o.state === O.OUTGOING_STATE_COMPLETED ? 42 : 0,
      disks: o.mirror,
    };
  }

  private round(o: Outgoing): void {
    o.timer = setTimeout(() => {
      if (o.state !== O.OUTGOING_STATE_ACTIVE) return;
      o.rounds++;
      if (o.rounds >= this.guest.convergeAfterRounds) this.preSwitchover(o);
      else {
        for (const l of o.listeners.splice(0)) l();
        this.round(o);
      }
    }, this.guest.roundMs);
  }

  /** QEMU pauses before the switchover; an armed source agent that runs goes on at once. */
  private preSwitchover(o: Outgoing): void {
    this.move(o, O.OUTGOING_STATE_PRE_SWITCHOVER);
    if (o.armed && this.autoSwitch && this.servers.get(o.sourceHostId)?.server) this.switchNow(o);
  }

  /** migrate-continue: the destination runs the VM (post-copy first when it was asked for). */
  private switchNow(o: Outgoing): void {
    const inc = this.incoming.get(o.migrationId);
    const stage = this.deviceStage;
    if (stage && !o.postCopy) {
      this.deviceStage = undefined;
      this.move(o, O.OUTGOING_STATE_DEVICE);
      void stage.release.then(() => {
        if (stage.outcome === 'failed')
          return this.move(o, O.OUTGOING_STATE_FAILED, 'load of migration failed');
        if (inc) inc.state = 'RUNNING';
        this.move(o, O.OUTGOING_STATE_COMPLETED);
      });
      return;
    }
    if (inc) inc.state = 'RUNNING';
    if (o.postCopy && o.rounds < this.guest.convergeAfterRounds) {
      this.move(o, O.OUTGOING_STATE_POSTCOPY_ACTIVE);
      setTimeout(() => this.move(o, O.OUTGOING_STATE_COMPLETED), 50);
    } else this.move(o, O.OUTGOING_STATE_COMPLETED);
  }

  private impl(hostId: string): Record<string, Handler> {
    const host = () => must(this.compute.hosts.get(hostId));
    const guard = (method: string, req: { epoch: number }) => {
      this.calls.push(`${host().name}:${method}`);
      for (const key of [method, `${host().name}:${method}`]) {
        const code = this.failOnce.get(key);
        if (code !== undefined) {
          this.failOnce.delete(key);
          throw err(code, `injected failure of ${method}`);
        }
      }
      if (req.epoch !== host().epoch)
        throw err(
          grpc.status.FAILED_PRECONDITION,
          `stale host epoch ${req.epoch} (this host is at epoch ${host().epoch})`,
        );
    };
    const out = (req: { migrationId: string }) => {
      const o = this.outgoing.get(req.migrationId);
      if (!o) throw err(grpc.status.NOT_FOUND, `no migration ${req.migrationId} here`);
      return o;
    };
    return {
      getVmDeviceLayout: (req: migrationV1.GetVmDeviceLayoutRequest) => {
        guard('getVmDeviceLayout', req);
        return { deviceLayout: `{"vm":"${req.vmId}"}` };
      },
      prepareIncoming: (req: migrationV1.PrepareIncomingRequest) => {
        guard('prepareIncoming', req);
        const vmId = req.spec?.vmId ?? '';
        if (!this.incoming.has(req.migrationId))
          this.incoming.set(req.migrationId, {
            migrationId: req.migrationId,
            vmId,
            hostId,
            state: 'WAITING',
          });
        return {
          migrationAddress: `127.0.0.1:49${String(this.incoming.size).padStart(3, '0')}`,
          nbdAddress: req.receiveVbdIds.length ? '127.0.0.1:10809' : '',
          nbdExports: Object.fromEntries(req.receiveVbdIds.map((v) => [v, `disk-${v}`])),
          status: { vmId, powerState: 'POWER_STATE_PAUSED', reason: '', nics: [] },
        };
      },
      startDiskMirror: (req: migrationV1.StartDiskMirrorRequest) => {
        guard('startDiskMirror', req);
        let o = this.outgoing.get(req.migrationId);
        if (!o) {
          o = this.newOutgoing(req.migrationId, req.vmId, O.OUTGOING_STATE_MIRRORING);
          o.mirror = req.targets.map((t) => ({
            vbdId: t.vbdId,
            totalBytes: 64 * MIB,
            doneBytes: 0,
            ready: false,
            error: '',
          }));
          const mirror = o;
          setTimeout(() => {
            for (const d of mirror.mirror) {
              d.doneBytes = d.totalBytes;
              d.ready = true;
            }
            for (const l of mirror.listeners.splice(0)) l();
          }, 60);
        }
        return {};
      },
      startOutgoing: (req: migrationV1.StartOutgoingRequest) => {
        guard('startOutgoing', req);
        if (
          !req.parameters ||
          req.parameters.bandwidthBytesPerSec <= 0 ||
          req.parameters.downtimeLimitMs <= 0
        )
          throw err(grpc.status.INVALID_ARGUMENT, 'parameters must be explicit');
        let o = this.outgoing.get(req.migrationId);
        if (!o) o = this.newOutgoing(req.migrationId, req.vmId, O.OUTGOING_STATE_ACTIVE);
        if (o.state === O.OUTGOING_STATE_MIRRORING && o.mirror.some((d) => !d.ready))
          throw err(grpc.status.FAILED_PRECONDITION, 'disks not READY');
        if (o.state === O.OUTGOING_STATE_MIRRORING || o.rounds === 0) {
          o.postCopy = req.parameters.postCopy;
          o.armed = req.parameters.switchWhenReady;
          o.sourceHostId = hostId;
          const inc = this.incoming.get(req.migrationId);
          if (!inc) {
            this.move(o, O.OUTGOING_STATE_FAILED, 'Connection refused');
            return {};
          }
          o.state = O.OUTGOING_STATE_ACTIVE;
          if (!o.timer) this.round(o);
        }
        return {};
      },
      getOutgoingStatus: async (req: migrationV1.GetOutgoingStatusRequest) => {
        guard('getOutgoingStatus', req);
        const o = out(req);
        if (req.waitMs > 0) {
          const before = `${o.state}/${o.rounds}/${o.mirror.map((d) => d.ready).join()}`;
          await new Promise<void>((resolve) => {
            const t = setTimeout(resolve, req.waitMs);
            o.listeners.push(() => {
              clearTimeout(t);
              resolve();
            });
          });
          void before;
        }
        if (o.state === O.OUTGOING_STATE_COMPLETED && this.holdCompletedStatus) {
          const hold = this.holdCompletedStatus;
          this.holdCompletedStatus = undefined; // the next call answers
          await hold;
        }
        return { status: this.status(o) };
      },
      tuneOutgoing: (req: migrationV1.TuneOutgoingRequest) => {
        guard('tuneOutgoing', req);
        const o = out(req);
        if (req.startPostCopy) {
          if (!o.postCopy) throw err(grpc.status.FAILED_PRECONDITION, 'post-copy not enabled');
          if (o.state !== O.OUTGOING_STATE_ACTIVE) throw err(grpc.status.FAILED_PRECONDITION, 'not ACTIVE');
          this.preSwitchover(o);
        }
        return {};
      },
      switchOver: async (req: migrationV1.SwitchOverRequest) => {
        guard('switchOver', req);
        const o = out(req);
        await this.holdSwitchOver;
        if (o.state === O.OUTGOING_STATE_COMPLETED || o.state === O.OUTGOING_STATE_POSTCOPY_ACTIVE) return {};
        if (o.state !== O.OUTGOING_STATE_PRE_SWITCHOVER)
          throw err(grpc.status.FAILED_PRECONDITION, `state ${o.state}`);
        this.switchNow(o);
        return {};
      },
      cancelOutgoing: (req: migrationV1.CancelOutgoingRequest) => {
        guard('cancelOutgoing', req);
        const o = this.outgoing.get(req.migrationId);
        if (!o) return {};
        if (o.state === O.OUTGOING_STATE_COMPLETED || o.state === O.OUTGOING_STATE_POSTCOPY_ACTIVE)
          throw err(grpc.status.FAILED_PRECONDITION, 'too late');
        if (o.state !== O.OUTGOING_STATE_FAILED) this.move(o, O.OUTGOING_STATE_CANCELLED);
        return {};
      },
      finishIncoming: (req: migrationV1.FinishIncomingRequest) => {
        guard('finishIncoming', req);
        const inc = this.incoming.get(req.migrationId);
        const vm = this.compute.vms.get(req.vmId);
        if (inc?.state === 'RUNNING' || inc?.state === 'FINISHED') {
          inc.state = 'FINISHED';
          return { status: { vmId: req.vmId, powerState: 'POWER_STATE_RUNNING', reason: '', nics: [] } };
        }
        if (!inc && vm?.hostId === hostId)
          return { status: { vmId: req.vmId, powerState: 'POWER_STATE_RUNNING', reason: '', nics: [] } };
        throw err(grpc.status.FAILED_PRECONDITION, 'no incoming VM of this migration runs here');
      },
      abortIncoming: (req: migrationV1.AbortIncomingRequest) => {
        guard('abortIncoming', req);
        const inc = this.incoming.get(req.migrationId);
        if (inc?.state === 'FINISHED') throw err(grpc.status.FAILED_PRECONDITION, 'the VM runs here');
        this.incoming.delete(req.migrationId);
        return {};
      },
      finishOutgoing: (req: migrationV1.FinishOutgoingRequest) => {
        guard('finishOutgoing', req);
        const o = this.outgoing.get(req.migrationId);
        if (!o) return {};
        if (o.state !== O.OUTGOING_STATE_COMPLETED)
          throw err(grpc.status.FAILED_PRECONDITION, 'not completed');
        this.outgoing.delete(req.migrationId);
        return {};
      },
    };
  }

  private newOutgoing(migrationId: string, vmId: string, state: migrationV1.OutgoingState): Outgoing {
    const o: Outgoing = {
      migrationId,
      vmId,
      state,
      error: '',
      rounds: 0,
      destinationHostId: '',
      postCopy: false,
      armed: false,
      sourceHostId: '',
      mirror: [],
      listeners: [],
      startedAt: Date.now(),
    };
    this.outgoing.set(migrationId, o);
    return o;
  }
}

/** compute and storage on one server each, two hosts with agents, one VM on host h1. */
export class FakePool {
  readonly compute = new FakeCompute();
  readonly storage = new FakeStorage();
  readonly agents = new FakeAgents(this.compute);
  computeUrl = '';
  storageUrl = '';
  private servers: grpc.Server[] = [];

  async start(hostCount = 3): Promise<void> {
    for (let i = 1; i <= hostCount; i++) {
      const id = `00000000-0000-4000-8000-00000000000${i}`;
      this.compute.hosts.set(id, {
        id,
        name: `h${i}`,
        state: 'ENABLED',
        memoryFreeMib: 4096,
        epoch: 7,
        address: '',
        accelerator: 'tcg',
      });
      this.storage.fileSrOf.set(id, `10000000-0000-4000-8000-00000000000${i}`);
      await this.agents.start(id);
    }
    const c = await serve([
      { name: 'flotilla.compute.v1.VmMigrationService', impl: this.compute.impl() },
      { name: 'flotilla.compute.v1.HostService', impl: this.compute.hostImpl() },
    ]);
    const s = await serve([{ name: 'flotilla.storage.v1.VmDiskService', impl: this.storage.impl() }]);
    this.servers.push(c.server, s.server);
    this.computeUrl = c.address;
    this.storageUrl = s.address;
  }

  host(n: number): FakeHost {
    return must(this.compute.hosts.get(`00000000-0000-4000-8000-00000000000${n}`));
  }

  addVm(vm: Partial<FakeVm> & { id: string }, disks: FakeDisk[] = []): FakeVm {
    const full: FakeVm = {
      name: `vm-${vm.id.slice(0, 4)}`,
      tenantId: 'tenant-a',
      powerState: 'RUNNING',
      memoryMib: 512,
      hostId: this.host(1).id,
      currentOperationId: '',
      migrationId: '',
      reservedOn: [],
      powerStateReason: '',
      ...vm,
    };
    full.reservedOn = [full.hostId];
    this.compute.vms.set(full.id, full);
    this.storage.disks.set(full.id, disks);
    return full;
  }

  stop(): void {
    this.agents.stopAll();
    for (const s of this.servers) s.forceShutdown();
  }
}
