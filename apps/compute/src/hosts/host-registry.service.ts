import { randomUUID } from 'node:crypto';
import { EntityManager, In } from 'typeorm';
import { computeV1 } from '@flotilla/contracts';
import {
  failedPrecondition,
  invalidArgument,
  notFound,
  occupiesHost,
  stateOnRegister,
  validateIntRange,
  validateLabels,
  validateName,
  type PowerState,
} from '@flotilla/domain';
import { Logger, updateVersionedRow, quotedTable } from '@flotilla/platform';
import { Emit, events, ComputeStore, writeVm } from '../persistence/compute-store';
import { HostRow, VmRow } from '../persistence/entities';

export interface RegistryPolicy {
  pool: string;
  heartbeatIntervalMs: number;
  cpuOvercommitRatio: number;
  memoryOvercommitRatio: number;
}

/**
 * Host agents register and report here. Registration bumps the host's epoch (commands carrying an older
 * one are refused by the agent); every report reconciles the VM records with what the host runs.
 */
export class HostRegistryService {
  /** Per host, VMs the last report contradicted (see reconcile); in memory: a restart only delays. */
  private readonly suspects = new Map<string, Set<string>>();

  constructor(
    private readonly store: ComputeStore,
    private readonly policy: RegistryPolicy,
    private readonly logger: Logger,
  ) {}

  async register(req: computeV1.RegisterHostRequest): Promise<computeV1.RegisterHostResponse> {
    const name = validateName('name', req.name);
    if (!/^[A-Za-z0-9.[\]:-]+:\d{1,5}$/.test(req.address))
      throw invalidArgument('address', 'must be host:port');
    validateIntRange('cpus', req.cpus, 1, 4096);
    validateIntRange('memory_mib', req.memoryMib, 64, 64 * 1024 * 1024, ' MiB');
    const labels = validateLabels('labels', req.labels);
    const cpu = validateHostCpu(req);
    const { host, destroyVmIds } = await this.store.tx(async (m, emit) => {
      const existing = await m.findOne(HostRow, { where: { name }, lock: { mode: 'pessimistic_write' } });
      const fields = {
        address: req.address,
        pool: this.policy.pool,
        driver: req.driver || 'sim',
        accelerator: req.accelerator || '',
        ...cpu,
        cpus: req.cpus,
        memoryMib: req.memoryMib,
        labels,
        down: false,
        stateReason: existing ? reasonOnReturn(existing) : '',
        lastHeartbeatAt: new Date(),
      };
      let host: HostRow;
      if (existing) {
        host = await updateVersionedRow(
          m,
          HostRow,
          { kind: 'host', id: existing.id, version: existing.version },
          {
            ...fields,
            adminState: stateOnRegister(existing.adminState) as HostRow['adminState'],
            epoch: existing.epoch + 1,
          },
        );
      } else {
        host = m.create(HostRow, {
          id: randomUUID(),
          name,
          ...fields,
          adminState: 'ENABLED',
          cpuOvercommitRatio: this.policy.cpuOvercommitRatio,
          memoryOvercommitRatio: this.policy.memoryOvercommitRatio,
          epoch: 1,
          version: 1,
        });
        await m.insert(HostRow, host);
        host = await m.findOneByOrFail(HostRow, { id: host.id });
      }
      const destroyVmIds = await this.reconcile(m, emit, host, req.vms);
      const allocation = (await this.store.allocations(m, [host.id])).get(host.id);
      emit(events.host(existing ? 'UPDATED' : 'CREATED', host, allocation));
      return { host, destroyVmIds };
    });
    this.logger.info({ host: host.name, epoch: host.epoch, address: host.address }, 'host registered');
    return {
      hostId: host.id,
      epoch: host.epoch,
      heartbeatIntervalMs: this.policy.heartbeatIntervalMs,
      destroyVmIds,
    };
  }

  async heartbeat(req: computeV1.HeartbeatRequest): Promise<computeV1.HeartbeatResponse> {
    const destroyVmIds = await this.store.tx(async (m, emit) => {
      const host = await m.findOne(HostRow, {
        where: { id: req.hostId },
        lock: { mode: 'pessimistic_write' },
      });
      if (!host) throw notFound('host', req.hostId);
      if (host.epoch !== req.epoch)
        throw failedPrecondition(
          `host ${host.name} epoch ${req.epoch} is stale (now ${host.epoch}): register again`,
        );
      const accelerator =
        req.accelerator && req.accelerator !== host.accelerator ? { accelerator: req.accelerator } : {};
      const reported = req.cpuModel ? validateHostCpu(req) : undefined;
      const cpu: Partial<Pick<HostRow, 'cpuModel' | 'cpuFlags'>> =
        reported &&
        (reported.cpuModel !== host.cpuModel || reported.cpuFlags.join(' ') !== host.cpuFlags.join(' '))
          ? reported
          : {};
      if (host.down || accelerator.accelerator || cpu.cpuModel !== undefined) {
        const back = await updateVersionedRow(
          m,
          HostRow,
          { kind: 'host', id: host.id, version: host.version },
          {
            ...(host.down ? { down: false, stateReason: reasonOnReturn(host) } : {}),
            lastHeartbeatAt: new Date(),
            ...accelerator,
            ...cpu,
          },
        );
        emit(events.host('UPDATED', back, (await this.store.allocations(m, [host.id])).get(host.id)));
        if (host.down) this.logger.info({ host: host.name }, 'host is back');
        if (accelerator.accelerator)
          this.logger.info(
            { host: host.name, accelerator: accelerator.accelerator },
            'host accelerator changed',
          );
        if (cpu.cpuModel !== undefined)
          this.logger.info(
            { host: host.name, cpuModel: cpu.cpuModel, cpuFlags: cpu.cpuFlags?.length },
            'host CPU changed',
          );
      } else {
        // Liveness only: no version bump or event, or every heartbeat would flood Watch streams.
        await m.query(`UPDATE ${quotedTable(m, HostRow)} SET last_heartbeat_at = now() WHERE id = $1`, [
          host.id,
        ]);
      }
      return this.reconcile(m, emit, host, req.vms);
    });
    return { heartbeatIntervalMs: this.policy.heartbeatIntervalMs, destroyVmIds };
  }

  /**
   * Brings VM records in line with what the host reports, for VMs without an operation in flight (a VM
   * a migration holds has the migration's: neither of its hosts' reports changes it).
   * Returns VMs the host runs that the pool does not place there: the agent destroys them.
   */
  private async reconcile(
    m: EntityManager,
    emit: Emit,
    host: HostRow,
    reported: computeV1.VmStatus[],
  ): Promise<string[]> {
    const recorded = new Map((await m.findBy(VmRow, { hostId: host.id })).map((vm) => [vm.id, vm]));
    const unrecorded = reported.filter((s) => !recorded.has(s.vmId));
    const known = new Map(
      unrecorded.length
        ? (await m.findBy(VmRow, { id: In(unrecorded.map((s) => s.vmId)) })).map((vm) => [vm.id, vm])
        : [],
    );
    // A report is a list the agent took before sending it: it can predate a start, suspend or stop that
    // finished while it travelled. A VM known to the pool is therefore changed on a report's word only when
    // the next report says the same (heartbeats are sequential, so that one was taken after this one was
    // answered). The price: a change nobody asked for (a guest that powers off) shows one heartbeat
    // interval later — the agent reports it at once, then again at its next heartbeat.
    const suspected = this.suspects.get(host.id) ?? new Set<string>();
    const stillSuspected = new Set<string>();
    const confirmed = (doubt: string): boolean => {
      stillSuspected.add(doubt);
      return suspected.has(doubt);
    };
    const destroy: string[] = [];
    // Running there although the pool does not place them there (a host that was cut off): worth a warning.
    // Halted definitions left from an earlier run are only tidied up.
    const placedElsewhere: string[] = [];
    const seen = new Set<string>();
    for (const status of reported) {
      seen.add(status.vmId);
      const vm = recorded.get(status.vmId);
      if (!vm) {
        const elsewhere = known.get(status.vmId);
        // A live migration runs the VM on both of its hosts (incoming PAUSED on the destination, the
        // source's until its cleanup): the migration service owns it until EndVmMigration.
        if (elsewhere?.migrationHostId === host.id) continue;
        const halted = fromProto(status.powerState) === 'HALTED';
        // Halted definitions of VMs the pool keeps halted (not placed anywhere) stay: their console
        // history is read from here until the VM is destroyed or started on another host.
        if (elsewhere && halted && elsewhere.hostId === null) continue;
        if (elsewhere && !confirmed(`${status.vmId}:elsewhere`)) continue;
        destroy.push(status.vmId);
        if (!halted) placedElsewhere.push(status.vmId);
        continue;
      }
      if (vm.currentOperationId) continue;
      const state = fromProto(status.powerState);
      if (state === vm.powerState) continue;
      if (!confirmed(`${vm.id}:${state}`)) continue;
      if (state === 'HALTED') {
        await this.setVm(m, emit, vm, {
          powerState: 'HALTED',
          hostId: null,
          powerStateReason: status.reason || `stopped on host ${host.name}`,
        });
      } else {
        await this.setVm(m, emit, vm, { powerState: state, powerStateReason: '' });
      }
    }
    for (const vm of recorded.values()) {
      if (seen.has(vm.id) || vm.currentOperationId || !occupiesHost(vm.powerState)) continue;
      if (!confirmed(`${vm.id}:absent`)) continue;
      await this.setVm(m, emit, vm, {
        powerState: 'HALTED',
        hostId: null,
        powerStateReason: `not running on host ${host.name} when it reported`,
      });
    }
    this.suspects.set(host.id, stillSuspected);
    if (placedElsewhere.length)
      this.logger.warn(
        { host: host.name, vms: placedElsewhere },
        'host runs VMs placed elsewhere: destroying them',
      );
    return destroy;
  }

  private async setVm(
    m: EntityManager,
    emit: Emit,
    vm: VmRow,
    changes: Partial<Pick<VmRow, 'powerState' | 'powerStateReason' | 'hostId'>>,
  ): Promise<void> {
    await writeVm(m, emit, vm, changes);
  }
}

/**
 * A host's state_reason when its agent registers or reports again: an operator's reason for DISABLED or
 * MAINTENANCE outlives an agent restart; a DOWN host's reason said why it was DOWN, which is over (the
 * operator's own words were replaced then: MAINTENANCE says so in general).
 */
const cpuModelMax = 256;
const cpuFlagsMax = 1024;

/** The CPU an agent reports (cpu_model, cpu_flags), bounded: it is stored and compared at every check. */
function validateHostCpu(
  req: Pick<computeV1.RegisterHostRequest, 'cpuModel' | 'cpuFlags'>,
): Pick<HostRow, 'cpuModel' | 'cpuFlags'> {
  if (req.cpuModel.length > cpuModelMax)
    throw invalidArgument('cpu_model', `is ${req.cpuModel.length} characters; at most ${cpuModelMax}`);
  if (req.cpuFlags.length > cpuFlagsMax)
    throw invalidArgument('cpu_flags', `has ${req.cpuFlags.length} flags; at most ${cpuFlagsMax}`);
  const bad = req.cpuFlags.find((f) => !/^[A-Za-z0-9_.-]{1,64}$/.test(f));
  if (bad !== undefined)
    throw invalidArgument(
      'cpu_flags',
      `has ${JSON.stringify(bad.slice(0, 80))}: flags are /proc/cpuinfo names (letters, digits, _ . -; at most 64)`,
    );
  return { cpuModel: req.cpuModel, cpuFlags: req.cpuFlags };
}

function reasonOnReturn(host: Pick<HostRow, 'down' | 'adminState' | 'stateReason'>): string {
  if (host.adminState === 'ENABLED') return '';
  if (!host.down) return host.stateReason;
  return host.adminState === 'MAINTENANCE' ? 'maintenance' : '';
}

function fromProto(state: computeV1.PowerState): PowerState {
  const s = String(state).replace(/^POWER_STATE_/, '');
  if (s === 'RUNNING' || s === 'PAUSED' || s === 'SUSPENDED' || s === 'HALTED') return s;
  throw invalidArgument('vms.power_state', `${s} is not a state an agent reports`);
}
