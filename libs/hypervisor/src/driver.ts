/**
 * The one seam between Flotilla and a hypervisor (like nova/virt/driver.py). The host agent calls it; every
 * method is idempotent (asking for the state a VM is already in succeeds), so an agent that restarts in the
 * middle of a command can simply repeat it.
 */
export type DriverPowerState = 'HALTED' | 'RUNNING' | 'PAUSED' | 'SUSPENDED';

export interface DriverVmSpec {
  vmId: string;
  name: string;
  vcpus: number;
  memoryMib: number;
  boot: { image?: string; kernel?: string; initrd?: string; cmdline?: string };
}

export interface DriverVmStatus {
  vmId: string;
  powerState: DriverPowerState;
  /** Why it is in that state when nobody asked (guest shutdown, crash, killed). */
  reason?: string;
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
  pause: boolean;
  suspend: boolean;
  liveMigration: boolean;
  hotplugDisks: boolean;
  console: boolean;
}

export interface ShutdownOptions {
  /** false: ACPI power button first, hard stop after timeoutMs. */
  hard: boolean;
  timeoutMs: number;
}

export interface HypervisorDriver {
  readonly name: 'qemu' | 'sim';
  capabilities(): DriverCapabilities;
  capacity(): HostCapacity;
  /** Re-reads the state directory after an agent restart and reports VMs that kept running. */
  recover(): Promise<DriverVmStatus[]>;
  /** Defines the VM if needed and boots it; a running VM is left as it is. */
  start(spec: DriverVmSpec): Promise<DriverVmStatus>;
  shutdown(vmId: string, options: ShutdownOptions): Promise<DriverVmStatus>;
  reboot(vmId: string, options: { hard: boolean }): Promise<DriverVmStatus>;
  pause(vmId: string): Promise<DriverVmStatus>;
  unpause(vmId: string): Promise<DriverVmStatus>;
  /** Stops the VM if it runs and removes everything the host holds for it. Unknown VMs succeed. */
  destroy(vmId: string): Promise<void>;
  status(vmId: string): Promise<DriverVmStatus | undefined>;
  list(): Promise<DriverVmStatus[]>;
}

export class DriverError extends Error {
  constructor(
    readonly kind: 'not-found' | 'invalid-state' | 'capacity' | 'failed',
    message: string,
  ) {
    super(message);
    this.name = 'DriverError';
  }
}
