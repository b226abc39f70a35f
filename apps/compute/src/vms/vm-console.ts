import { Observable } from 'rxjs';
import { computeV1 } from '@flotilla/contracts';
import { DomainError, ErrorCode, failedPrecondition, invalidArgument } from '@flotilla/domain';
import { Caller, domainErrorFromGrpc, requireRole } from '@flotilla/platform';
import { AgentClients, AgentConsoleStream } from '../hosts/agent-clients';
import { hostState } from '../mappers';
import { ComputeStore } from '../persistence/compute-store';
import { HostRow, VmRow } from '../persistence/entities';
import { VmService } from './vm.service';

const consoleLogDefaultBytes = 64 * 1024;
const consoleLogMaxBytes = 1024 * 1024;

/**
 * What a VM's host tells about it live: the serial console (history and interactive) and its counters.
 * Compute checks the caller may see the VM, then talks to the VM's host agent.
 */
export class VmConsole {
  constructor(
    private readonly store: ComputeStore,
    private readonly vms: VmService,
    private readonly agents: AgentClients,
  ) {}

  async log(caller: Caller, id: string, maxBytes: number): Promise<Buffer> {
    if (maxBytes < 0 || maxBytes > consoleLogMaxBytes)
      throw invalidArgument('max_bytes', `must be 0..${consoleLogMaxBytes}; got ${maxBytes}`);
    const { vm, host } = await this.hostOf(caller, id, 'read its console log', false);
    const res = await this.agents.call(host, (a) =>
      a.getVmConsoleLog({ vmId: vm.id, maxBytes: maxBytes || consoleLogDefaultBytes }),
    );
    return Buffer.from(res.data);
  }

  async metrics(caller: Caller, id: string): Promise<computeV1.VmMetrics> {
    const { vm, host } = await this.hostOf(caller, id, 'read its metrics', true);
    const res = await this.agents.call(host, (a) => a.getVmMetrics({ vmId: vm.id }));
    if (!res.metrics) throw new DomainError(ErrorCode.Internal, `host ${host.name} sent no metrics`);
    return res.metrics;
  }

  /** Relays the console: the first request names the VM, the rest carry keystrokes. */
  attach(
    caller: Caller,
    requests: Observable<computeV1.AttachVmConsoleRequest>,
  ): Observable<computeV1.AttachVmConsoleResponse> {
    return new Observable((subscriber) => {
      let upstream: AgentConsoleStream | undefined;
      let closed = false;
      const pending: Buffer[] = [];
      const sub = requests.subscribe({
        next: (req) => {
          if (upstream) return void upstream.write({ vmId: '', data: req.data });
          if (pending.length) return void pending.push(Buffer.from(req.data));
          pending.push(Buffer.from(req.data));
          void this.open(caller, req.id)
            .then(({ vm, host }) => {
              if (closed) return;
              const s = (upstream = this.agents.console(host));
              s.write({ vmId: vm.id, data: Buffer.concat(pending) });
              s.on('data', (r: computeV1.AgentServiceAttachVmConsoleResponse) =>
                subscriber.next({ data: r.data }),
              );
              s.on('error', (e) => subscriber.error(domainErrorFromGrpc(e)));
              s.on('end', () => subscriber.complete());
            })
            .catch((e: unknown) => subscriber.error(e));
        },
        error: () => upstream?.cancel(),
        complete: () => upstream?.end(),
      });
      return () => {
        closed = true;
        sub.unsubscribe();
        upstream?.cancel();
      };
    });
  }

  private async open(caller: Caller, id: string): Promise<{ vm: VmRow; host: HostRow }> {
    if (!id) throw invalidArgument('id', 'is required in the first request: the VM to attach to');
    return this.hostOf(caller, id, 'attach to its console', true);
  }

  private async hostOf(
    caller: Caller,
    id: string,
    action: string,
    mustRun: boolean,
  ): Promise<{ vm: VmRow; host: HostRow }> {
    requireRole(caller, mustRun && action.startsWith('attach') ? 'vm-operator' : 'read-only', action);
    const vm = await this.vms.get(caller, id);
    const running = vm.powerState === 'RUNNING' || vm.powerState === 'PAUSED';
    // A halted VM's console history stays on the host it last ran on (its last start says which).
    const hostId = vm.hostId ?? (mustRun ? null : await this.store.lastHostOf(vm.id));
    if (!hostId || (mustRun && !running))
      throw failedPrecondition(
        `vm ${vm.name} is ${vm.powerState}: start it first (${mustRun ? 'it must be RUNNING or PAUSED' : 'it has not run on a host'})`,
      );
    const host = await this.store.manager.findOneByOrFail(HostRow, { id: hostId });
    if (hostState(host) === 'DOWN')
      throw new DomainError(
        ErrorCode.Unavailable,
        `host ${host.name} of vm ${vm.name} is DOWN: try again later`,
      );
    return { vm, host };
  }
}
