import type { Type } from '@nestjs/common';
import { Logger, OperationService, TransactionalStore } from '@flotilla/platform';
import { StorageAgents } from '../srs/agents';
import { StorageRunner } from '../srs/operation-runner';
import { SrHosts } from '../srs/sr-space';
import { VdiService } from '../vdis/vdi.service';
import { VmDiskMigrations } from './disk-migration';
import { ComputeLink } from './compute-link';
import { VbdReconciler } from './vbd-reconciler';
import { VbdGrpc, VmDiskGrpc } from './vbd.grpc';
import { VbdService } from './vbd.service';
import { VmDiskSnapshots, VmSnapshotVdis } from './vm-disk-snapshots';
import { RootDiskVdis, VmDiskService } from './vm-disk.service';

export { vbdRecords } from './vbd-records';

/** The VBD bounded context as the storage service wires it: its controllers, providers and clean-up. */
export interface VbdContext {
  controllers: Type<unknown>[];
  providers: Array<{ provide: unknown; useValue: unknown }>;
  close(): Promise<void>;
}

export function vbdContext(deps: {
  store: TransactionalStore;
  operations: OperationService;
  runner: StorageRunner;
  rootDisks: RootDiskVdis;
  snapshotVdis: VmSnapshotVdis;
  /** What VM migrations use of VDIs, SRs and agents (their disks' files are moved between hosts). */
  vdis: VdiService;
  agents: StorageAgents;
  srHosts: SrHosts;
  /** Asks the chain keeper for a pass. */
  afterChange: () => void;
  computeUrl: string;
  serviceToken: string;
  logger: Logger;
  /** How often VBD states are checked against their VMs (host DOWN → UNKNOWN; VM gone → DETACHED). */
  reconcileIntervalMs?: number;
}): VbdContext {
  const compute = new ComputeLink(deps.computeUrl, deps.serviceToken);
  const vbds = new VbdService(deps.store, deps.operations, compute, deps.logger);
  vbds.register(deps.runner);
  const disks = new VmDiskService(deps.store, deps.rootDisks, deps.logger);
  const reconciler = new VbdReconciler(deps.store, compute, deps.logger, deps.reconcileIntervalMs);
  reconciler.start();
  return {
    controllers: [VbdGrpc, VmDiskGrpc],
    providers: [
      { provide: VbdService, useValue: vbds },
      { provide: VmDiskService, useValue: disks },
      { provide: VmDiskSnapshots, useValue: new VmDiskSnapshots(deps.store, deps.snapshotVdis, deps.logger) },
      {
        provide: VmDiskMigrations,
        useValue: new VmDiskMigrations({
          store: deps.store,
          vdis: deps.vdis,
          agents: deps.agents,
          srHosts: deps.srHosts,
          afterChange: deps.afterChange,
          logger: deps.logger,
        }),
      },
    ],
    close: async () => {
      await reconciler.stop();
      compute.close();
    },
  };
}
