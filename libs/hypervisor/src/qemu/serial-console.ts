import * as fs from 'node:fs';
import * as net from 'node:net';
import { DriverConsole } from '../driver';

/** The last `maxBytes` of a log file (empty when it does not exist yet). */
export function tailFile(file: string, maxBytes: number): Buffer {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch {
    return Buffer.alloc(0);
  }
  try {
    const size = fs.fstatSync(fd).size;
    const length = Math.max(0, Math.min(size, Math.floor(maxBytes)));
    const buf = Buffer.alloc(length);
    fs.readSync(fd, buf, 0, length, size - length);
    return buf;
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Keeps a log that QEMU appends to (logappend=on) from growing without bound across boots: when it exceeds
 * `maxBytes`, only its last `keepBytes` stay. Call while no QEMU writes it.
 */
export function trimLogFile(file: string, maxBytes: number, keepBytes: number): void {
  let size: number;
  try {
    size = fs.statSync(file).size;
  } catch {
    return;
  }
  if (size <= maxBytes) return;
  const tail = tailFile(file, keepBytes);
  fs.writeFileSync(`${file}.tmp`, tail, { mode: 0o600 });
  fs.renameSync(`${file}.tmp`, file);
}

/** Output chunks of one attached console, as an async iterable that ends when the console closes. */
class ConsoleOutput implements AsyncIterable<Buffer> {
  private readonly queue: Buffer[] = [];
  private waiting?: (r: IteratorResult<Buffer>) => void;
  private ended = false;

  push(chunk: Buffer): void {
    if (this.ended) return;
    if (this.waiting) {
      const w = this.waiting;
      this.waiting = undefined;
      w({ value: chunk, done: false });
    } else {
      this.queue.push(chunk);
    }
  }

  end(): void {
    this.ended = true;
    if (this.waiting) {
      const w = this.waiting;
      this.waiting = undefined;
      w({ value: undefined, done: true });
    }
  }

  [Symbol.asyncIterator](): AsyncIterator<Buffer> {
    return {
      next: () => {
        const chunk = this.queue.shift();
        if (chunk) return Promise.resolve({ value: chunk, done: false });
        if (this.ended) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => (this.waiting = resolve));
      },
      return: () => {
        this.end();
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }
}

/**
 * One connection to a VM's console.sock shared by every attached console: QEMU's chardev socket server takes a
 * single client, so output fans out to all attachments and every attachment's writes go to the guest. The
 * connection opens with the first attachment and closes with the last one, or when QEMU goes away.
 */
export class SerialConsoleHub {
  private socket?: net.Socket;
  private connecting?: Promise<net.Socket>;
  private readonly outputs = new Set<ConsoleOutput>();

  constructor(private readonly socketPath: string) {}

  async attach(): Promise<DriverConsole> {
    const socket = await this.connect();
    const output = new ConsoleOutput();
    this.outputs.add(output);
    let closed = false;
    return {
      output,
      write: (data: Buffer) => {
        if (!closed && !socket.destroyed) socket.write(data);
      },
      close: () => {
        if (closed) return;
        closed = true;
        output.end();
        this.outputs.delete(output);
        if (this.outputs.size === 0) this.disconnect();
      },
    };
  }

  private connect(): Promise<net.Socket> {
    if (this.socket && !this.socket.destroyed) return Promise.resolve(this.socket);
    this.connecting ??= new Promise<net.Socket>((resolve, reject) => {
      const socket = net.createConnection(this.socketPath);
      socket.once('connect', () => {
        this.socket = socket;
        this.connecting = undefined;
        resolve(socket);
      });
      // After connecting, an error is always followed by 'close', which ends the outputs.
      socket.on('error', (e) => {
        this.connecting = undefined;
        reject(e);
      });
      socket.on('data', (chunk: Buffer) => {
        for (const o of this.outputs) o.push(chunk);
      });
      socket.on('close', () => {
        if (this.socket === socket) this.socket = undefined;
        for (const o of this.outputs) o.end();
        this.outputs.clear();
      });
    });
    return this.connecting;
  }

  private disconnect(): void {
    this.socket?.destroy();
    this.socket = undefined;
  }

  /** Ends every attached console (the VM stopped, or the agent closes). */
  close(): void {
    for (const o of this.outputs) o.end();
    this.outputs.clear();
    this.disconnect();
  }
}
