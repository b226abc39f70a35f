import { Metadata } from '@grpc/grpc-js';
import { Controller, Inject } from '@nestjs/common';
import { GrpcMethod } from '@nestjs/microservices';
import { migrationV1 } from '@flotilla/contracts';
import { DomainError, ErrorCode, invalidArgument, validateIntRange } from '@flotilla/domain';
import { HypervisorDriver } from '@flotilla/hypervisor';
import { ServiceIdentity } from '@flotilla/platform';
import { withDriverErrors } from '../agent.errors';
import { HYPERVISOR_DRIVER, toProto } from '../agent.grpc';
import { HostRegistration, PerVmQueue } from '../host-state';
import { HostImageCatalogue } from '../image-catalogue';
import { SrPaths } from '../sr-paths';
import { VmSpecResolver } from '../vm-spec';
import { toOutgoingStatus } from './outgoing-status';

/** Address the incoming QEMU's migration and NBD listeners bind to (FLOTILLA_MIGRATION_HOST). */
export const MIGRATION_LISTEN_HOST = 'MIGRATION_LISTEN_HOST';

/** GetOutgoingStatus long-polls at most this long (agent.proto). */
export const MAX_STATUS_WAIT_MS = 10_000;
/** FinishIncoming's wait when the request gives none (agent.proto). */
const DEFAULT_FINISH_TIMEOUT_MS = 30_000;
/** QEMU's downtime-limit bounds, as MigrationParameters states them. */
const MAX_DOWNTIME_LIMIT_MS = 60_000;

const migrationIdPattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/**
 * MigrationAgentService: the migration service's steps on this host, carried out by the hypervisor driver.
 * The controller keeps no state of its own: the driver knows each migration by its id (and re-attaches to
 * it after an agent restart), so any call can be repeated by a migration service that restarted, against
 * an agent that restarted. Commands run one at a time per VM, in the queue AgentService uses too; the
 * status long poll does not queue, so a cancel is never held behind it.
 */
@Controller()
export class MigrationAgentGrpc implements migrationV1.MigrationAgentServiceController {
  private readonly specs: VmSpecResolver;

  constructor(
    @Inject(ServiceIdentity) private readonly identity: ServiceIdentity,
    @Inject(HostRegistration) private readonly registration: HostRegistration,
    @Inject(HYPERVISOR_DRIVER) private readonly driver: HypervisorDriver,
    @Inject(HostImageCatalogue) catalogue: HostImageCatalogue,
    @Inject(SrPaths) srPaths: SrPaths,
    @Inject(PerVmQueue) private readonly queue: PerVmQueue,
    @Inject(MIGRATION_LISTEN_HOST) private readonly listenHost: string,
  ) {
    this.specs = new VmSpecResolver(catalogue, srPaths);
  }

  @GrpcMethod('MigrationAgentService', 'PrepareIncoming')
  prepareIncoming(
    req: migrationV1.PrepareIncomingRequest,
    md: Metadata,
  ): Promise<migrationV1.PrepareIncomingResponse> {
    return this.command(md, req, req.spec?.vmId ?? '', async () => {
      this.requireLiveMigration();
      const spec = this.specs.vmSpec(req.spec);
      const vbdIds = new Set(spec.disks.map((d) => d.id));
      req.receiveVbdIds.forEach((id, i) => {
        if (!vbdIds.has(id))
          throw invalidArgument(
            `receive_vbd_ids[${i}]`,
            `${JSON.stringify(id)} is not the vbd_id of a disk in spec.disks: name the disks that arrive through NBD by their VBD ids`,
          );
      });
      if (req.postCopy) this.requirePostCopy();
      const incoming = await this.driver.prepareIncoming(spec, {
        migrationId: req.migrationId,
        listenHost: this.listenHost,
        receiveDiskIds: [...new Set(req.receiveVbdIds)],
        postCopy: req.postCopy,
        sourceDeviceLayout: deviceLayout(req.sourceDeviceLayout),
      });
      return {
        migrationAddress: incoming.migrationAddress,
        nbdAddress: incoming.nbdAddress ?? '',
        nbdExports: incoming.nbdExports,
        status: toProto(incoming.status),
      };
    });
  }

  @GrpcMethod('MigrationAgentService', 'GetVmDeviceLayout')
  getVmDeviceLayout(
    req: migrationV1.GetVmDeviceLayoutRequest,
    md: Metadata,
  ): Promise<migrationV1.GetVmDeviceLayoutResponse> {
    return this.command(md, req, req.vmId, async () => {
      this.requireLiveMigration();
      return { deviceLayout: await this.driver.deviceLayout(req.vmId) };
    });
  }

  @GrpcMethod('MigrationAgentService', 'StartDiskMirror')
  startDiskMirror(
    req: migrationV1.StartDiskMirrorRequest,
    md: Metadata,
  ): Promise<migrationV1.StartDiskMirrorResponse> {
    return this.command(md, req, req.vmId, async () => {
      this.requireLiveMigration();
      if (!req.targets.length) throw invalidArgument('targets', 'name at least one disk to mirror');
      const targets = req.targets.map((t, i) => {
        if (!t.vbdId) throw invalidArgument(`targets[${i}].vbd_id`, 'is required');
        if (!t.exportName) throw invalidArgument(`targets[${i}].export_name`, 'is required');
        return {
          diskId: t.vbdId,
          nbdAddress: peerAddress(`targets[${i}].nbd_address`, t.nbdAddress),
          exportName: t.exportName,
        };
      });
      await this.driver.startDiskMirror(
        req.vmId,
        req.migrationId,
        targets,
        positive('bandwidth_bytes_per_sec', req.bandwidthBytesPerSec),
      );
      return {};
    });
  }

  @GrpcMethod('MigrationAgentService', 'StartOutgoing')
  startOutgoing(
    req: migrationV1.StartOutgoingRequest,
    md: Metadata,
  ): Promise<migrationV1.StartOutgoingResponse> {
    return this.command(md, req, req.vmId, async () => {
      this.requireLiveMigration();
      const p = req.parameters;
      if (!p) throw invalidArgument('parameters', 'is required: set every migration parameter explicitly');
      const destination = peerAddress('destination_address', req.destinationAddress);
      if (p.postCopy) this.requirePostCopy();
      await this.driver.startOutgoing(req.vmId, req.migrationId, destination, {
        downtimeLimitMs: validateIntRange(
          'parameters.downtime_limit_ms',
          p.downtimeLimitMs,
          1,
          MAX_DOWNTIME_LIMIT_MS,
        ),
        bandwidthBytesPerSec: positive('parameters.bandwidth_bytes_per_sec', p.bandwidthBytesPerSec),
        autoConverge: p.autoConverge,
        postCopy: p.postCopy,
        switchWhenReady: p.switchWhenReady,
      });
      return {};
    });
  }

  /** A read, but it carries the epoch like every call here: a stale caller must not act on the answer. */
  @GrpcMethod('MigrationAgentService', 'GetOutgoingStatus')
  async getOutgoingStatus(
    req: migrationV1.GetOutgoingStatusRequest,
    md: Metadata,
  ): Promise<migrationV1.GetOutgoingStatusResponse> {
    this.check(md, req, req.vmId);
    if (req.waitMs < 0) throw invalidArgument('wait_ms', `must be 0 or more; got ${req.waitMs}`);
    const waitMs = Math.min(req.waitMs, MAX_STATUS_WAIT_MS);
    const status = await withDriverErrors(() =>
      this.driver.outgoingStatus(req.vmId, req.migrationId, waitMs),
    );
    return { status: toOutgoingStatus(status) };
  }

  @GrpcMethod('MigrationAgentService', 'TuneOutgoing')
  tuneOutgoing(
    req: migrationV1.TuneOutgoingRequest,
    md: Metadata,
  ): Promise<migrationV1.TuneOutgoingResponse> {
    return this.command(md, req, req.vmId, async () => {
      if (req.bandwidthBytesPerSec < 0)
        throw invalidArgument(
          'bandwidth_bytes_per_sec',
          `must be 0 (unchanged) or more; got ${req.bandwidthBytesPerSec}`,
        );
      if (!req.bandwidthBytesPerSec && !req.startPostCopy)
        throw invalidArgument(
          'bandwidth_bytes_per_sec',
          'nothing to change: set bandwidth_bytes_per_sec, start_post_copy, or both',
        );
      await this.driver.tuneOutgoing(req.vmId, req.migrationId, {
        ...(req.bandwidthBytesPerSec ? { bandwidthBytesPerSec: req.bandwidthBytesPerSec } : {}),
        ...(req.startPostCopy ? { startPostCopy: true } : {}),
      });
      return {};
    });
  }

  @GrpcMethod('MigrationAgentService', 'SwitchOver')
  switchOver(req: migrationV1.SwitchOverRequest, md: Metadata): Promise<migrationV1.SwitchOverResponse> {
    return this.command(md, req, req.vmId, async () => {
      await this.driver.switchOver(req.vmId, req.migrationId);
      return {};
    });
  }

  @GrpcMethod('MigrationAgentService', 'CancelOutgoing')
  cancelOutgoing(
    req: migrationV1.CancelOutgoingRequest,
    md: Metadata,
  ): Promise<migrationV1.CancelOutgoingResponse> {
    return this.command(md, req, req.vmId, async () => {
      await this.driver.cancelOutgoing(req.vmId, req.migrationId);
      return {};
    });
  }

  @GrpcMethod('MigrationAgentService', 'FinishIncoming')
  finishIncoming(
    req: migrationV1.FinishIncomingRequest,
    md: Metadata,
  ): Promise<migrationV1.FinishIncomingResponse> {
    return this.command(md, req, req.vmId, async () => {
      const timeoutMs = req.timeoutMs
        ? validateIntRange('timeout_ms', req.timeoutMs, 1, 600_000)
        : DEFAULT_FINISH_TIMEOUT_MS;
      return { status: toProto(await this.driver.finishIncoming(req.vmId, req.migrationId, timeoutMs)) };
    });
  }

  @GrpcMethod('MigrationAgentService', 'AbortIncoming')
  abortIncoming(
    req: migrationV1.AbortIncomingRequest,
    md: Metadata,
  ): Promise<migrationV1.AbortIncomingResponse> {
    return this.command(md, req, req.vmId, async () => {
      await this.driver.abortIncoming(req.vmId, req.migrationId);
      return {};
    });
  }

  @GrpcMethod('MigrationAgentService', 'FinishOutgoing')
  finishOutgoing(
    req: migrationV1.FinishOutgoingRequest,
    md: Metadata,
  ): Promise<migrationV1.FinishOutgoingResponse> {
    return this.command(md, req, req.vmId, async () => {
      await this.driver.finishOutgoing(req.vmId, req.migrationId);
      return {};
    });
  }

  /** Identity, epoch, then the ids every call names. */
  private check(md: Metadata, req: { epoch: number; migrationId: string }, vmId: string): void {
    this.identity.verify(md);
    this.registration.checkEpoch(req.epoch);
    if (!migrationIdPattern.test(req.migrationId))
      throw invalidArgument(
        'migration_id',
        `must be the migration's id (letters, digits, '.', '_', '-'; at most 128), got ${JSON.stringify(req.migrationId.slice(0, 80))}`,
      );
    if (!vmId) throw invalidArgument('vm_id', 'is required');
  }

  /** A step that changes the VM: after the checks, in the VM's queue. */
  private async command<T>(
    md: Metadata,
    req: { epoch: number; migrationId: string },
    vmId: string,
    work: () => Promise<T>,
  ): Promise<T> {
    this.check(md, req, vmId);
    return await withDriverErrors(() => this.queue.run(vmId, work));
  }

  private requireLiveMigration(): void {
    if (!this.driver.capabilities().liveMigration)
      throw new DomainError(
        ErrorCode.FailedPrecondition,
        `the ${this.driver.name} driver of this host cannot live-migrate VMs: choose another host, or migrate offline`,
      );
  }

  private requirePostCopy(): void {
    if (!this.driver.capabilities().postCopy)
      throw new DomainError(
        ErrorCode.FailedPrecondition,
        `this host cannot take part in post-copy migration (the ${this.driver.name} driver refuses it here: no userfaultfd, or guests under TCG, where QEMU's post-copy corrupts some of them): migrate without post_copy`,
      );
  }
}

/**
 * An address the destination agent answered: non-empty, printable, no spaces. Its form is the driver's
 * (QEMU: host:port; sim: a sim address), and the driver refuses one it did not make with 'invalid-spec'.
 */
/** A source's device layout is the source driver's JSON: bounded here, read by the driver. */
function deviceLayout(value: string): string {
  if (value.length > 64 * 1024)
    throw invalidArgument(
      'source_device_layout',
      `is ${value.length} characters; at most 65536: pass GetVmDeviceLayout's answer unchanged`,
    );
  return value;
}

function peerAddress(field: string, value: string): string {
  if (!value || value.length > 300 || !/^[\x21-\x7e]+$/.test(value))
    throw invalidArgument(
      field,
      `must be the address the destination agent answered (e.g. 10.0.0.2:49152), got ${JSON.stringify(value.slice(0, 80))}`,
    );
  return value;
}

function positive(field: string, value: number): number {
  if (!Number.isSafeInteger(value) || value <= 0)
    throw invalidArgument(field, `must be a whole number above 0 (bytes per second); got ${value}`);
  return value;
}
