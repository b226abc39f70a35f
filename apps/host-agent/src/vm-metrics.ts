import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { DriverVmMetrics, HypervisorDriver } from '@flotilla/hypervisor';
import { Logger } from '@flotilla/platform';

/**
 * The host's Prometheus metrics: per running VM, the counters its hypervisor keeps (sampled at each
 * scrape: one QMP round trip and a /proc read per VM), and the agent process's own.
 */
export class VmMetricsExporter {
  readonly registry = new Registry();
  private readonly states = this.gauge('flotilla_host_vms', 'VMs defined on this host by power state', [
    'power_state',
  ]);
  private readonly cpu = this.counter('flotilla_vm_cpu_seconds_total', 'CPU time of the VM process', [
    'vm_id',
  ]);
  private readonly resident = this.gauge(
    'flotilla_vm_resident_memory_bytes',
    'resident memory of the VM process',
    ['vm_id'],
  );
  private readonly disk = {
    readBytes: this.counter('flotilla_vm_disk_read_bytes_total', 'bytes the guest read from a disk', [
      'vm_id',
      'device',
    ]),
    writeBytes: this.counter('flotilla_vm_disk_written_bytes_total', 'bytes the guest wrote to a disk', [
      'vm_id',
      'device',
    ]),
    readOps: this.counter('flotilla_vm_disk_read_ops_total', 'read requests of the guest to a disk', [
      'vm_id',
      'device',
    ]),
    writeOps: this.counter('flotilla_vm_disk_write_ops_total', 'write requests of the guest to a disk', [
      'vm_id',
      'device',
    ]),
  };
  private readonly nic = {
    rx: this.counter('flotilla_vm_nic_received_bytes_total', 'bytes a NIC received, where counted', [
      'vm_id',
      'mac',
    ]),
    tx: this.counter('flotilla_vm_nic_transmitted_bytes_total', 'bytes a NIC sent, where counted', [
      'vm_id',
      'mac',
    ]),
  };

  constructor(
    private readonly driver: HypervisorDriver,
    private readonly logger: Logger,
  ) {
    collectDefaultMetrics({ register: this.registry, prefix: 'flotilla_agent_' });
  }

  /** Samples every VM, then renders the Prometheus text exposition. */
  async exposition(): Promise<string> {
    const all = await this.driver.list();
    const running = all.filter((vm) => vm.powerState === 'RUNNING' || vm.powerState === 'PAUSED');
    const samples = await Promise.all(
      running.map((vm) =>
        this.driver.metrics(vm.vmId).catch((e: unknown) => {
          // A VM that stops between list and read has no counters: skip it.
          this.logger.debug({ vmId: vm.vmId, err: e }, 'no metrics for vm');
          return undefined;
        }),
      ),
    );
    for (const m of [
      this.states,
      this.cpu,
      this.resident,
      ...Object.values(this.disk),
      ...Object.values(this.nic),
    ])
      m.reset();
    for (const state of ['RUNNING', 'PAUSED', 'SUSPENDED', 'HALTED'])
      this.states.set({ power_state: state }, all.filter((vm) => vm.powerState === state).length);
    for (const m of samples.filter((s): s is DriverVmMetrics => s !== undefined)) this.record(m);
    return this.registry.metrics();
  }

  private record(m: DriverVmMetrics): void {
    this.cpu.inc({ vm_id: m.vmId }, m.cpuTimeNs / 1e9);
    this.resident.set({ vm_id: m.vmId }, m.residentMemoryBytes);
    for (const d of m.disks) {
      const l = { vm_id: m.vmId, device: d.device };
      this.disk.readBytes.inc(l, d.readBytes);
      this.disk.writeBytes.inc(l, d.writeBytes);
      this.disk.readOps.inc(l, d.readOps);
      this.disk.writeOps.inc(l, d.writeOps);
    }
    for (const n of m.nics) {
      this.nic.rx.inc({ vm_id: m.vmId, mac: n.mac }, n.rxBytes);
      this.nic.tx.inc({ vm_id: m.vmId, mac: n.mac }, n.txBytes);
    }
  }

  private counter(name: string, help: string, labelNames: string[]): Counter<string> {
    return new Counter({ name, help, labelNames, registers: [this.registry] });
  }

  private gauge(name: string, help: string, labelNames: string[]): Gauge<string> {
    return new Gauge({ name, help, labelNames, registers: [this.registry] });
  }
}
