import { randomUUID } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { commonV1, computeV1, migrationV1 } from '@flotilla/contracts';
import { grpcStatus, serviceDefinition } from '@flotilla/platform';
import type { MigrationPort } from '../migrations/migration-port';

/**
 * Test doubles for the evacuation suite, both deterministic. FakeCompute serves the part of compute's
 * gRPC API an evacuation uses (HostService, VmService.ListVms/ShutdownVm, OperationService.WaitOperation)
 * over a real grpc-js server on loopback, with hosts and VMs in memory and allocations derived from them.
 * FakeMigrations runs each migration as a small state machine (RUNNING → SUCCEEDED/FAILED/CANCELLED) that
 * moves the VM in FakeCompute when it succeeds; the real migrations have their own suites.
 */

const MiB = 1024 * 1024;

export interface FakeVm {
  id: string;
  name: string;
  hostId: string;
  powerState: 'RUNNING' | 'PAUSED' | 'HALTED';
  memoryMib: number;
  vcpus: number;
}

export interface FakeHost {
  id: string;
  name: string;
  state: 'ENABLED' | 'DISABLED' | 'MAINTENANCE' | 'DOWN';
  stateReason: string;
  memoryMib: number;
  cpus: number;
}

export class FakeCompute {
  readonly hosts = new Map<string, FakeHost>();
  readonly vms = new Map<string, FakeVm>();
  /** ShutdownVm calls: VM id and timeout asked. */
  readonly shutdowns: Array<{ vmId: string; timeoutMs: number; requestId: string }> = [];
  private readonly operations = new Map<string, commonV1.Operation>();
  private server?: grpc.Server;

  addHost(name: string, o: Partial<FakeHost> = {}): FakeHost {
    const host: FakeHost = {
      id: randomUUID(),
      name,
      state: 'ENABLED',
      stateReason: '',
      memoryMib: 8192,
      cpus: 8,
      ...o,
    };
    this.hosts.set(host.id, host);
    return host;
  }

  addVm(host: FakeHost, name: string, o: Partial<FakeVm> = {}): FakeVm {
    const vm: FakeVm = {
      id: randomUUID(),
      name,
      hostId: host.id,
      powerState: 'RUNNING',
      memoryMib: 512,
      vcpus: 1,
      ...o,
    };
    this.vms.set(vm.id, vm);
    return vm;
  }

  residents(hostId: string): FakeVm[] {
    return [...this.vms.values()].filter((v) => v.hostId === hostId && v.powerState !== 'HALTED');
  }

  hostProto(h: FakeHost): computeV1.Host {
    const vms = this.residents(h.id);
    return {
      id: h.id,
      name: h.name,
      state: `HOST_STATE_${h.state}` as computeV1.HostState,
      stateReason: h.stateReason,
      driver: 'sim',
      cpus: h.cpus,
      memoryMib: h.memoryMib,
      cpuOvercommitRatio: 1,
      memoryOvercommitRatio: 1,
      vcpusAllocated: vms.reduce((a, v) => a + v.vcpus, 0),
      memoryMibAllocated: vms.reduce((a, v) => a + v.memoryMib, 0),
      vmCount: vms.length,
    } as computeV1.Host;
  }

  async start(address: string): Promise<void> {
    const server = new grpc.Server();
    const unary =
      <Q, R>(fn: (req: Q) => R) =>
      (call: grpc.ServerUnaryCall<Q, R>, cb: grpc.sendUnaryData<R>) => {
        try {
          cb(null, fn(call.request));
        } catch (e) {
          cb(e as grpc.ServiceError);
        }
      };
    const host = (id: string) => {
      const h = this.hosts.get(id) ?? [...this.hosts.values()].find((x) => x.name === id);
      if (!h) throw grpcStatus(grpc.status.NOT_FOUND, `host ${id} not found`);
      return h;
    };
    server.addService(serviceDefinition('flotilla.compute.v1.HostService'), {
      getHost: unary((req: computeV1.GetHostRequest) => ({ host: this.hostProto(host(req.id)) })),
      listHosts: unary(() => ({
        hosts: [...this.hosts.values()].map((h) => this.hostProto(h)),
        nextPageToken: '',
      })),
      enableHost: unary((req: computeV1.EnableHostRequest) => {
        const h = host(req.id);
        if (h.state === 'DOWN') throw grpcStatus(grpc.status.FAILED_PRECONDITION, `host ${h.name} is DOWN`);
        Object.assign(h, { state: 'ENABLED', stateReason: '' });
        return { host: this.hostProto(h) };
      }),
      disableHost: unary((req: computeV1.DisableHostRequest) => {
        const h = host(req.id);
        if (h.state !== 'DOWN')
          Object.assign(h, { state: req.maintenance ? 'MAINTENANCE' : 'DISABLED', stateReason: req.reason });
        return { host: this.hostProto(h) };
      }),
    });
    server.addService(serviceDefinition('flotilla.compute.v1.VmService'), {
      listVms: unary((req: computeV1.ListVmsRequest) => {
        const terms = Object.fromEntries((req.page?.filter ?? '').split(',').map((t) => t.split('=')));
        const vms = [...this.vms.values()].filter(
          (v) =>
            (!terms.host_id || v.hostId === terms.host_id) &&
            (!terms.power_state || v.powerState === terms.power_state),
        );
        return {
          vms: vms.map((v) => ({ ...v, powerState: `POWER_STATE_${v.powerState}`, tenantId: 't1' })),
          nextPageToken: '',
        };
      }),
      shutdownVm: unary((req: computeV1.ShutdownVmRequest) => {
        const existing = [...this.operations.values()].find((o) => o.requestId === req.requestId);
        if (existing) return { operation: existing };
        const vm = this.vms.get(req.id);
        if (!vm) throw grpcStatus(grpc.status.NOT_FOUND, `vm ${req.id} not found`);
        this.shutdowns.push({ vmId: vm.id, timeoutMs: req.timeoutMs, requestId: req.requestId });
        vm.powerState = 'HALTED';
        vm.hostId = '';
        const operation = {
          id: randomUUID(),
          kind: 'vm.shutdown',
          state: commonV1.OperationState.OPERATION_STATE_SUCCEEDED,
          requestId: req.requestId,
          progress: 1,
        } as commonV1.Operation;
        this.operations.set(operation.id, operation);
        return { operation };
      }),
    });
    server.addService(serviceDefinition('flotilla.common.v1.OperationService'), {
      waitOperation: unary((req: commonV1.WaitOperationRequest) => ({
        operation: this.operations.get(req.id),
      })),
    });
    await new Promise<void>((resolve, reject) =>
      server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (e) => (e ? reject(e) : resolve())),
    );
    this.server = server;
  }

  stop(): void {
    this.server?.forceShutdown();
  }
}

interface FakeMigration {
  migration: migrationV1.Migration;
  polls: number;
}

export class FakeMigrations implements MigrationPort {
  /** Preflight blockers by VM id. */
  readonly blockers = new Map<string, migrationV1.Blocker[]>();
  /** VMs whose start the scheduler refuses (RESOURCE_EXHAUSTED). */
  readonly noRoom = new Set<string>();
  /** VMs whose migration fails and rolls back. */
  readonly failing = new Set<string>();
  /** VMs whose next N migrations find their destination filled up meanwhile (RESOURCE_EXHAUSTED). */
  readonly destinationFull = new Map<string, number>();
  /** VMs whose migration passes its point of no return at once (cancel refused). */
  readonly committed = new Set<string>();
  /** VMs whose first start answer is lost (UNAVAILABLE after creating the migration). */
  readonly loseFirstAnswer = new Set<string>();
  /** While true, migrations stay RUNNING. */
  hold = false;
  peakRunning = 0;
  readonly migrations = new Map<string, FakeMigration>();
  private readonly byRequest = new Map<string, string>();

  constructor(private readonly compute: FakeCompute) {}

  get running(): number {
    return [...this.migrations.values()].filter(
      (m) => m.migration.state === migrationV1.MigrationState.MIGRATION_STATE_RUNNING,
    ).length;
  }

  migrationOf(vmId: string): migrationV1.Migration | undefined {
    return [...this.migrations.values()].find((m) => m.migration.vmId === vmId)?.migration;
  }

  preflight(spec: migrationV1.MigrationSpec): Promise<migrationV1.PreflightCheck> {
    const vm = this.compute.vms.get(spec.vmId);
    if (!vm) return Promise.reject(grpcStatus(grpc.status.NOT_FOUND, `vm ${spec.vmId} not found`));
    const blockers = this.blockers.get(vm.id) ?? [];
    return Promise.resolve({
      migratable: blockers.length === 0,
      blockers,
      warnings: [],
      destinationHostId: blockers.length ? '' : (this.destination(vm)?.id ?? ''),
      vdiMap: {},
      memoryBytes: vm.memoryMib * MiB,
      storageBytesToCopy: 0,
      estimatedTotalTimeMs: 0,
      estimatedDowntimeMs: 0,
      checkedAt: new Date(),
    });
  }

  start(input: {
    requestId: string;
    spec: migrationV1.MigrationSpec;
    evacuationId: string;
  }): Promise<migrationV1.Migration> {
    const earlier = this.byRequest.get(input.requestId);
    if (earlier) return Promise.resolve(this.snapshot(earlier));
    const vm = this.compute.vms.get(input.spec.vmId);
    if (!vm) return Promise.reject(grpcStatus(grpc.status.NOT_FOUND, `vm ${input.spec.vmId} not found`));
    if (this.noRoom.has(vm.id))
      return Promise.reject(
        grpcStatus(grpc.status.RESOURCE_EXHAUSTED, `no host has ${vm.memoryMib} MiB free`),
      );
    const id = randomUUID();
    this.migrations.set(id, {
      polls: 0,
      migration: {
        id,
        vmId: vm.id,
        sourceHostId: vm.hostId,
        destinationHostId: this.destination(vm)?.id ?? '',
        state: migrationV1.MigrationState.MIGRATION_STATE_RUNNING,
        pointOfNoReturnPassed: this.committed.has(vm.id),
        evacuationId: input.evacuationId,
      } as migrationV1.Migration,
    });
    this.byRequest.set(input.requestId, id);
    this.peakRunning = Math.max(this.peakRunning, this.running);
    if (this.loseFirstAnswer.delete(vm.id))
      return Promise.reject(grpcStatus(grpc.status.UNAVAILABLE, 'connection reset before the answer'));
    return Promise.resolve(this.snapshot(id));
  }

  get(id: string): Promise<migrationV1.Migration> {
    const m = this.migrations.get(id);
    if (!m) return Promise.reject(grpcStatus(grpc.status.NOT_FOUND, `migration ${id} not found`));
    m.polls++;
    if (
      !this.hold &&
      m.polls >= 2 &&
      m.migration.state === migrationV1.MigrationState.MIGRATION_STATE_RUNNING
    )
      this.end(m);
    return Promise.resolve(this.snapshot(id));
  }

  cancel(id: string): Promise<migrationV1.Migration> {
    const m = this.migrations.get(id);
    if (!m) return Promise.reject(grpcStatus(grpc.status.NOT_FOUND, `migration ${id} not found`));
    if (
      m.migration.state !== migrationV1.MigrationState.MIGRATION_STATE_RUNNING ||
      m.migration.pointOfNoReturnPassed
    )
      return Promise.reject(
        grpcStatus(grpc.status.FAILED_PRECONDITION, `migration ${id} cannot be cancelled now`),
      );
    m.migration.state = migrationV1.MigrationState.MIGRATION_STATE_CANCELLED;
    m.migration.error = { code: grpc.status.CANCELLED, message: 'cancelled by request', details: [] };
    return Promise.resolve(this.snapshot(id));
  }

  private end(m: FakeMigration): void {
    const vm = this.compute.vms.get(m.migration.vmId);
    const full = this.destinationFull.get(m.migration.vmId) ?? 0;
    if (full > 0) {
      this.destinationFull.set(m.migration.vmId, full - 1);
      m.migration.state = migrationV1.MigrationState.MIGRATION_STATE_FAILED;
      m.migration.error = {
        code: grpc.status.RESOURCE_EXHAUSTED,
        message: `the migration cannot start: INSUFFICIENT_MEMORY: host ${m.migration.destinationHostId} has 0 MiB of memory free`,
        details: [],
      };
      return;
    }
    if (this.failing.has(m.migration.vmId) || !vm) {
      m.migration.state = migrationV1.MigrationState.MIGRATION_STATE_FAILED;
      m.migration.error = {
        code: grpc.status.UNAVAILABLE,
        message: 'destination agent went away; rolled back',
        details: [],
      };
      return;
    }
    m.migration.state = migrationV1.MigrationState.MIGRATION_STATE_SUCCEEDED;
    vm.hostId = m.migration.destinationHostId;
  }

  private destination(vm: FakeVm): FakeHost | undefined {
    const free = (h: FakeHost) =>
      this.compute.hostProto(h).memoryMib - this.compute.hostProto(h).memoryMibAllocated;
    return [...this.compute.hosts.values()]
      .filter((h) => h.id !== vm.hostId && h.state === 'ENABLED')
      .sort((a, b) => free(b) - free(a))[0];
  }

  private snapshot(id: string): migrationV1.Migration {
    const m = this.migrations.get(id);
    if (!m) throw new Error(`no migration ${id}`);
    return structuredClone(m.migration);
  }
}
