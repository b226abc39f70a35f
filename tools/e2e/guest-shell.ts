import { computeV1 } from '@flotilla/contracts';
import { GiveUp, GrpcClient, waitFor } from '@flotilla/platform';

/**
 * The demo guest's root shell on its serial console, through the public AttachVmConsole stream: what a user
 * types in `flotilla vm console`. Commands run one at a time; each answer ends at a marker the guest
 * computes (so the echo of the typed line never matches it).
 */
export class GuestShell {
  private output = '';
  private n = 0;
  private ended: string | undefined;
  private readonly stream;

  constructor(vms: GrpcClient<computeV1.VmServiceClient>, vmId: string) {
    this.stream = vms.duplex<computeV1.AttachVmConsoleRequest, computeV1.AttachVmConsoleResponse>(
      'AttachVmConsole',
    );
    this.stream.on('data', (r: computeV1.AttachVmConsoleResponse) => {
      this.output += Buffer.from(r.data).toString();
    });
    this.stream.on('error', (e: Error) => (this.ended = `failed: ${e.message}`));
    this.stream.on('end', () => (this.ended ??= 'ended by the server'));
    this.stream.write({ id: vmId, data: Buffer.from('\r') });
  }

  /** The first keys after attaching may be swallowed: press Enter until the shell answers. */
  async ready(): Promise<void> {
    await waitFor(
      'the guest shell to answer',
      () => {
        if (this.ended) throw new GiveUp(`the console stream ${this.ended}`);
        this.stream.write({ id: '', data: Buffer.from('\recho shell-$((6*7))\r') });
        return this.output.includes('shell-42');
      },
      { timeoutMs: 60_000, intervalMs: 2000 },
    );
  }

  /** Runs `command` once and returns what it printed. */
  async run(command: string, timeoutMs = 60_000): Promise<string> {
    const n = 1000 + ++this.n;
    const from = this.output.length;
    const end = `END-${n}-`;
    this.stream.write({ id: '', data: Buffer.from(`${command}; echo ${end}$((${n}*1))\r`) });
    return waitFor(
      `the guest to run: ${command}`,
      () => {
        if (this.ended)
          throw new GiveUp(`the console stream ${this.ended}; output: ${this.output.slice(from)}`);
        const at = this.output.indexOf(`${end}${n}`, from);
        if (at < 0) throw new Error(`console so far: ${JSON.stringify(this.output.slice(from).slice(-300))}`);
        return this.output.slice(from, at);
      },
      { timeoutMs, intervalMs: 200 },
    );
  }

  close(): void {
    this.stream.cancel();
  }
}
