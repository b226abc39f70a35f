/**
 * The one seam between Flotilla and a hypervisor (like nova/virt/driver.py). The host agent calls it; every
 * method is idempotent (asking for the state a VM is already in succeeds), so an agent that restarts in the
 * middle of a command can simply repeat it.
 */
export type DriverPowerState = 'HALTED' | 'RUNNING' | 'PAUSED' | 'SUSPENDED';

/** How the VM boots. Paths are absolute host paths the agent resolved from its image catalogue. */
export type DriverBoot =
  /** Direct kernel boot, like a Xen PV guest. */
  | { kind: 'kernel'; kernel: string; initrd?: string; cmdline: string }
  /** Firmware (SeaBIOS) boot from the first disk. */
  | { kind: 'disk' };

export interface DriverDisk {
  /** Absolute path of the disk image on this host. */
  path: string;
  /** Always explicit: a format is never guessed from the content (DESIGN §8). */
  format: 'qcow2' | 'raw';
  readOnly?: boolean;
  /**
   * Stable id of the attachment (the VBD id); names the QEMU block node and device so that hot-unplug,
   * live snapshot and resize find it again after an agent restart. Absent: derived from the position.
   */
  id?: string;
  /** Boot from this disk (SeaBIOS bootindex 0). Absent: the first disk boots when boot.kind is 'disk'. */
  bootable?: boolean;
}

/** A guest TCP port reachable from the host through a user-mode NIC (QEMU hostfwd, loopback only). */
export interface DriverPortForward {
  guestPort: number;
  /** 0 or absent: the driver picks a free loopback port and reports it in the status. */
  hostPort?: number;
}

/**
 * A NIC. Until the network service provides bridges every NIC is user-mode networking with `restrict=on`:
 * the guest reaches nothing beyond the host, and the host reaches the guest only through `forwards`.
 */
export interface DriverNic {
  /** Locally administered unicast MAC, e.g. 52:54:00:12:34:56. */
  mac: string;
  forwards: DriverPortForward[];
}

export interface DriverVmSpec {
  vmId: string;
  name: string;
  vcpus: number;
  memoryMib: number;
  boot: DriverBoot;
  disks: DriverDisk[];
  nics: DriverNic[];
}

export interface DriverVmStatus {
  vmId: string;
  powerState: DriverPowerState;
  /** Why it is in that state when nobody asked (guest shutdown, crash, killed). */
  reason?: string;
  /** Where each forwarded guest port answers on this host while the VM runs. */
  forwards?: { guestPort: number; hostAddress: string }[];
}

export interface HostCapacity {
  cpus: number;
  memoryMib: number;
}

/** What a driver can do, as data: callers test a capability, never a driver name. */
export interface DriverCapabilities {
  accelerator: 'kvm' | 'tcg' | 'sim';
  /** Why the accelerator was chosen (probe result, override). */
  acceleratorReason: string;
  /**
   * The CPU model guests get ("qemu64", "host: <model name>", "sim") and the feature flags they see (empty
   * where the model fixes them). Follows the accelerator: a running guest moves live only to a host that
   * gives it the same CPU or, with flags, a superset of them.
   */
  cpuModel: string;
  cpuFlags: string[];
  pause: boolean;
  suspend: boolean;
  liveMigration: boolean;
  hotplugDisks: boolean;
  console: boolean;
  /** Post-copy live migration (QEMU: userfaultfd on the destination). */
  postCopy: boolean;
}

export interface ShutdownOptions {
  /** false: ACPI power button first, hard stop after timeoutMs. */
  hard: boolean;
  timeoutMs: number;
}

/** Counters of one running VM, read from the hypervisor (QMP, /proc). Monotonic while the VM runs. */
export interface DriverVmMetrics {
  vmId: string;
  /** CPU time of the VM's process (vCPUs and device emulation), ns. */
  cpuTimeNs: number;
  residentMemoryBytes: number;
  disks: { device: string; readBytes: number; writeBytes: number; readOps: number; writeOps: number }[];
  /** Empty where the hypervisor keeps no per-NIC counters (user-mode networking in QEMU 7.2). */
  nics: { mac: string; rxBytes: number; txBytes: number }[];
}

/** An attached serial console: guest output in, keystrokes out. Several may be attached at once. */
export interface DriverConsole {
  /** Guest output from the moment of attaching; ends when the console closes or the VM stops. */
  output: AsyncIterable<Buffer>;
  write(data: Buffer): void;
  close(): void;
}

export interface HypervisorDriver {
  readonly name: 'qemu' | 'sim';
  capabilities(): DriverCapabilities;
  capacity(): HostCapacity;
  /** Re-reads the state directory after an agent restart and reports VMs that kept running. */
  recover(): Promise<DriverVmStatus[]>;
  /** Defines the VM if needed and boots it; a running VM is left as it is; a SUSPENDED one is resumed. */
  start(spec: DriverVmSpec): Promise<DriverVmStatus>;
  shutdown(vmId: string, options: ShutdownOptions): Promise<DriverVmStatus>;
  reboot(vmId: string, options: { hard: boolean }): Promise<DriverVmStatus>;
  pause(vmId: string): Promise<DriverVmStatus>;
  unpause(vmId: string): Promise<DriverVmStatus>;
  /** Saves the guest's memory and device state to the state directory and stops the VM (SUSPENDED). */
  suspend(vmId: string): Promise<DriverVmStatus>;
  /** Restores a SUSPENDED VM from its saved state: the guest continues where it was. */
  resume(vmId: string): Promise<DriverVmStatus>;
  /** Stops the VM if it runs and removes everything the host holds for it. Unknown VMs succeed. */
  destroy(vmId: string): Promise<void>;
  status(vmId: string): Promise<DriverVmStatus | undefined>;
  list(): Promise<DriverVmStatus[]>;
  /** Called whenever a VM's state changes without being asked (guest shutdown, crash, process killed). */
  onUnrequestedChange(listener: (status: DriverVmStatus) => void): void;
  metrics(vmId: string): Promise<DriverVmMetrics>;
  /** The last `maxBytes` of the serial console's history (survives agent restarts). */
  consoleLog(vmId: string, maxBytes: number): Promise<Buffer>;
  attachConsole(vmId: string): Promise<DriverConsole>;
  /**
   * Hot-plugs a disk into a running VM (blockdev-add + device_add); returns the guest device name, e.g.
   * "vdb". A disk with the same id already plugged is success. 'unsupported' where the driver cannot.
   */
  plugDisk(vmId: string, disk: DriverDisk & { id: string }): Promise<{ device: string }>;
  /**
   * Asks the guest to release the disk (device_del) and waits up to timeoutMs for DEVICE_DELETED, then
   * removes the block node. force cannot take a device from a guest that holds it (QEMU removes PCIe
   * devices only with the guest's consent): it fails with 'timeout' as well. A disk not plugged
   * is success; a guest that keeps the disk fails with 'timeout'.
   */
  unplugDisk(vmId: string, diskId: string, options: { timeoutMs: number; force: boolean }): Promise<void>;
  /** Absolute paths of the image files the running VM has open (every node of every chain). */
  openDiskFiles(vmId: string): Promise<string[]>;
  /**
   * Live external snapshot of the disk whose top file is `topPath`: the VM continues on `newTopPath`, a
   * qcow2 overlay the caller created with `topPath` as its backing file (blockdev-add + blockdev-snapshot).
   */
  snapshotDisk(vmId: string, topPath: string, newTopPath: string): Promise<void>;
  /** Grows the disk whose top file is `topPath` while the VM runs (block_resize); the guest sees it. */
  resizeDisk(vmId: string, topPath: string, sizeBytes: number): Promise<void>;
  /**
   * Merges the backing chain of `topPath` down to (excluding) `baseFile` into the top file while the VM runs
   * (block-stream), and waits for the job to finish. baseFile undefined: merge the whole chain.
   */
  streamDisk(vmId: string, topPath: string, baseFile: string | undefined): Promise<void>;
  // ---- Live migration (capabilities().liveMigration; 'unsupported' otherwise) ----
  // The QEMUs talk directly over TCP; these methods set them up and watch them. Each is idempotent for its
  // migrationId (an agent that restarts re-attaches to a migration QEMU kept running) and refuses another
  // migration of the same VM with 'invalid-state' naming the one in progress.
  /**
   * Destination: starts the VM paused, waiting for an incoming migration on a port of `listenHost`
   * (-incoming defer + migrate-incoming), and an NBD server exporting `receiveDiskIds` writable. The VM
   * runs by itself once the source switches over. Reports the incoming VM (PAUSED, with its forwards).
   */
  prepareIncoming(spec: DriverVmSpec, options: DriverIncomingOptions): Promise<DriverIncoming>;
  /**
   * Source: how the running VM's devices sit (ports, disks hot-plugged since boot), opaque outside the
   * driver; prepareIncoming on the destination rebuilds the same machine from it. '' when nothing to say.
   */
  deviceLayout(vmId: string): Promise<string>;
  /** Source: mirrors disks into the destination's NBD exports (blockdev-mirror, write-blocking). */
  startDiskMirror(
    vmId: string,
    migrationId: string,
    targets: DriverMirrorTarget[],
    bandwidthBytesPerSec: number,
  ): Promise<void>;
  /**
   * Source: sets every parameter and capability explicitly (events, return-path, pause-before-switchover,
   * auto-converge, postcopy-ram) and starts sending memory to `destinationAddress` (host:port).
   */
  startOutgoing(
    vmId: string,
    migrationId: string,
    destinationAddress: string,
    parameters: DriverMigrationParameters,
  ): Promise<void>;
  /** Source: the migration's state; with waitMs, resolves early when the state or round changes. */
  outgoingStatus(vmId: string, migrationId: string, waitMs: number): Promise<DriverOutgoingStatus>;
  /** Source: new bandwidth cap (0: unchanged) and/or the switch to post-copy (migrate-start-postcopy). */
  tuneOutgoing(
    vmId: string,
    migrationId: string,
    tune: { bandwidthBytesPerSec?: number; startPostCopy?: boolean },
  ): Promise<void>;
  /** Source: lets a migration waiting in 'pre-switchover' finish (migrate-continue); done already: no-op. */
  switchOver(vmId: string, migrationId: string): Promise<void>;
  /** Source: migrate_cancel and cancel the mirror jobs; the VM runs on here. 'invalid-state' after completion. */
  cancelOutgoing(vmId: string, migrationId: string): Promise<void>;
  /** Destination: waits up to timeoutMs for the incoming VM to run, stops the NBD server; an ordinary VM now. */
  finishIncoming(vmId: string, migrationId: string, timeoutMs: number): Promise<DriverVmStatus>;
  /** Destination: kills the incoming QEMU and removes its state (not its disk files). */
  abortIncoming(vmId: string, migrationId: string): Promise<void>;
  /** Source: after completion, stops the source QEMU (postmigrate) and removes the VM's state here. */
  finishOutgoing(vmId: string, migrationId: string): Promise<void>;
  /** Releases connections and timers; VMs keep running. */
  close(): Promise<void>;
}

export interface DriverIncomingOptions {
  migrationId: string;
  /** Address the migration and NBD listeners bind to (the agent's migration address, e.g. 127.0.0.1). */
  listenHost: string;
  /** Disk ids (DriverDisk.id: the VBD ids) that arrive through NBD while the VM still runs on the source. */
  receiveDiskIds: string[];
  postCopy: boolean;
  /** deviceLayout() of the source; absent or '': the layout a fresh start would have. */
  sourceDeviceLayout?: string;
}

export interface DriverIncoming {
  /** host:port the source sends memory to. */
  migrationAddress: string;
  /** host:port of the NBD server; absent when no disk is received. */
  nbdAddress?: string;
  /** Disk id → NBD export name. */
  nbdExports: Record<string, string>;
  status: DriverVmStatus;
}

export interface DriverMirrorTarget {
  diskId: string;
  nbdAddress: string;
  exportName: string;
}

export interface DriverMigrationParameters {
  downtimeLimitMs: number;
  bandwidthBytesPerSec: number;
  autoConverge: boolean;
  postCopy: boolean;
  /**
   * The switch is armed: the driver continues from 'pre-switchover' by itself, at once, as switchOver would
   * (unless cancelOutgoing came first). Without it the migration waits there for switchOver.
   */
  switchWhenReady?: boolean;
}

export type DriverOutgoingState =
  | 'mirroring'
  | 'setup'
  | 'active'
  | 'pre-switchover'
  | 'device'
  | 'postcopy-active'
  | 'completed'
  | 'failed'
  | 'cancelling'
  | 'cancelled';

export interface DriverOutgoingStatus {
  state: DriverOutgoingState;
  error?: string;
  /** As the hypervisor measures them; 0 until known. */
  totalTimeMs: number;
  downtimeMs: number;
  setupTimeMs: number;
  expectedDowntimeMs: number;
  memoryTotalBytes: number;
  memoryTransferredBytes: number;
  memoryRemainingBytes: number;
  /** Memory and disks sent so far. */
  bytesTransferred: number;
  /** Completed passes over memory (QEMU's dirty-sync-count). */
  rounds: number;
  dirtyRateBytesPerSec: number;
  transferRateBytesPerSec: number;
  cpuThrottlePercent: number;
  postCopyRequests: number;
  disks: { diskId: string; totalBytes: number; doneBytes: number; ready: boolean; error?: string }[];
}

export class DriverError extends Error {
  constructor(
    readonly kind:
      'not-found' | 'invalid-state' | 'capacity' | 'invalid-spec' | 'unsupported' | 'failed' | 'timeout',
    message: string,
  ) {
    super(message);
    this.name = 'DriverError';
  }
}
