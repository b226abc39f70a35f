import { EventEmitter } from 'node:events';
import * as net from 'node:net';

/** QEMU's run states (qapi/run-state.json) that the driver tells apart. */
export type QemuRunState =
  | 'running'
  | 'paused'
  | 'shutdown'
  | 'guest-panicked'
  | 'inmigrate'
  | 'postmigrate'
  | 'prelaunch'
  | 'finish-migrate'
  | 'restore-vm'
  | 'save-vm'
  | 'suspended'
  | 'internal-error'
  | 'io-error'
  | 'watchdog'
  | 'colo'
  | 'debug';

export type QemuMigrationStatus =
  | 'none'
  | 'setup'
  | 'cancelling'
  | 'cancelled'
  | 'active'
  | 'postcopy-active'
  | 'postcopy-paused'
  | 'postcopy-recover'
  | 'completed'
  | 'failed'
  | 'colo'
  | 'pre-switchover'
  | 'device'
  | 'wait-unplug';

export interface QemuBlockStats {
  device: string;
  qdev?: string;
  'node-name'?: string;
  stats: { rd_bytes: number; wr_bytes: number; rd_operations: number; wr_operations: number };
}

/** The commands the driver uses, with their arguments and results (qapi/*.json). */
export interface QmpCommands {
  qmp_capabilities: { args: { enable?: string[] }; result: Record<string, never> };
  'query-status': { args: undefined; result: { status: QemuRunState; running: boolean } };
  'query-version': {
    args: undefined;
    result: { qemu: { major: number; minor: number; micro: number }; package: string };
  };
  'query-kvm': { args: undefined; result: { enabled: boolean; present: boolean } };
  'query-migrate': {
    args: undefined;
    result: { status?: QemuMigrationStatus; 'error-desc'?: string; 'total-time'?: number };
  };
  'query-blockstats': { args: undefined; result: QemuBlockStats[] };
  'migrate-set-parameters': {
    args: { 'max-bandwidth'?: number; 'downtime-limit'?: number };
    result: Record<string, never>;
  };
  'migrate-set-capabilities': {
    args: { capabilities: { capability: string; state: boolean }[] };
    result: Record<string, never>;
  };
  migrate: { args: { uri: string }; result: Record<string, never> };
  'migrate-incoming': { args: { uri: string }; result: Record<string, never> };
  migrate_cancel: { args: undefined; result: Record<string, never> };
  system_powerdown: { args: undefined; result: Record<string, never> };
  system_reset: { args: undefined; result: Record<string, never> };
  stop: { args: undefined; result: Record<string, never> };
  cont: { args: undefined; result: Record<string, never> };
  quit: { args: undefined; result: Record<string, never> };
  // --- block devices (qapi/block-core.json, qapi/qdev.json, qapi/job.json) ---
  'blockdev-add': { args: Record<string, unknown>; result: Record<string, never> };
  'blockdev-del': { args: { 'node-name': string }; result: Record<string, never> };
  'query-named-block-nodes': { args: { flat?: boolean }; result: QemuBlockNode[] };
  'query-block': { args: undefined; result: QemuBlockInfo[] };
  device_add: {
    args: Record<string, unknown> & { driver: string; id: string };
    result: Record<string, never>;
  };
  device_del: { args: { id: string }; result: Record<string, never> };
  'qom-list': { args: { path: string }; result: { name: string; type: string }[] };
  'blockdev-snapshot': { args: { node: string; overlay: string }; result: Record<string, never> };
  block_resize: { args: { 'node-name': string; size: number }; result: Record<string, never> };
  'block-stream': {
    args: {
      'job-id': string;
      device: string;
      'base-node'?: string;
      'backing-file'?: string;
      'auto-dismiss'?: boolean;
    };
    result: Record<string, never>;
  };
  'query-jobs': { args: undefined; result: QemuJobInfo[] };
  'job-dismiss': { args: { id: string }; result: Record<string, never> };
}

/** One block node (query-named-block-nodes). `file` of a protocol node is its host path. */
export interface QemuBlockNode {
  'node-name': string;
  drv: string;
  file: string;
  ro: boolean;
  image?: { 'virtual-size': number; filename: string };
}

/** One guest-facing block backend (query-block): `qdev` is the device's QOM path. */
export interface QemuBlockInfo {
  device: string;
  qdev?: string;
  inserted?: { 'node-name': string; file: string; ro: boolean; image: { 'virtual-size': number } };
}

export interface QemuJobInfo {
  id: string;
  type: string;
  status:
    | 'undefined'
    | 'created'
    | 'running'
    | 'paused'
    | 'ready'
    | 'standby'
    | 'waiting'
    | 'pending'
    | 'aborting'
    | 'concluded'
    | 'null';
  error?: string;
}
export type QmpCommandName = keyof QmpCommands;

/** Asynchronous events (qapi/*.json) with the fields the driver reads; others arrive with untyped data. */
export interface QmpEventData {
  SHUTDOWN: { guest: boolean; reason: string };
  RESET: { guest: boolean; reason: string };
  POWERDOWN: undefined;
  STOP: undefined;
  RESUME: undefined;
  GUEST_PANICKED: { action: string; info?: unknown };
  MIGRATION: { status: QemuMigrationStatus };
  BLOCK_JOB_READY: { device: string; type: string };
  BLOCK_JOB_COMPLETED: { device: string; type: string; error?: string };
  BLOCK_JOB_CANCELLED: { device: string; type: string };
  BLOCK_JOB_ERROR: { device: string; operation: string; action: string };
  DEVICE_DELETED: { device?: string; path: string };
}
export type QmpEvent = {
  [K in keyof QmpEventData]: {
    event: K;
    data: QmpEventData[K];
    timestamp: { seconds: number; microseconds: number };
  };
}[keyof QmpEventData];
/** Any event, typed or not: QEMU may send events this file does not list. */
export interface QmpAnyEvent {
  event: string;
  data?: unknown;
  timestamp: { seconds: number; microseconds: number };
}

/** QEMU answered a command with an error: its `class` (e.g. GenericError, CommandNotFound) and `desc`. */
export class QmpError extends Error {
  constructor(
    readonly command: string,
    readonly errorClass: string,
    readonly desc: string,
  ) {
    super(`QMP ${command} failed: ${errorClass}: ${desc}`);
    this.name = 'QmpError';
  }
}

/** The command got no answer: the connection dropped, timed out, or was closed by us. */
export class QmpConnectionError extends Error {
  constructor(
    readonly kind: 'connect' | 'closed' | 'timeout' | 'protocol',
    message: string,
  ) {
    super(message);
    this.name = 'QmpConnectionError';
  }
}

export interface QmpConnectOptions {
  socketPath: string;
  /** Deadline for connect + greeting + qmp_capabilities. */
  timeoutMs?: number;
  /** Default deadline of each command. */
  commandTimeoutMs?: number;
}

interface Pending {
  command: string;
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout;
}

/** Lines longer than this are not QMP: a peer that sends them is cut off instead of filling memory. */
const MAX_LINE_BYTES = 16 * 1024 * 1024;

/**
 * A QMP connection on a unix socket: greeting, capabilities negotiation, commands correlated by `id` (several
 * may be in flight), asynchronous events on an emitter ('event' for all, or the event's own name). When the
 * socket drops, every pending command fails at once with a QmpConnectionError naming the cause: never a hang.
 */
export class QmpClient {
  private readonly events = new EventEmitter();
  private readonly pending = new Map<string, Pending>();
  private nextId = 1;
  private buffer = '';
  private closedError?: QmpConnectionError;
  private readonly closedPromise: Promise<QmpConnectionError>;
  private resolveClosed!: (e: QmpConnectionError) => void;
  /** Filled by the greeting. */
  version?: { major: number; minor: number; micro: number };

  private constructor(
    private readonly socket: net.Socket,
    private readonly commandTimeoutMs: number,
    private readonly socketPath: string,
  ) {
    this.events.setMaxListeners(0);
    this.closedPromise = new Promise((r) => (this.resolveClosed = r));
  }

  static async connect(options: QmpConnectOptions): Promise<QmpClient> {
    const timeoutMs = options.timeoutMs ?? 5000;
    const socket = net.createConnection(options.socketPath);
    const client = new QmpClient(socket, options.commandTimeoutMs ?? 30_000, options.socketPath);
    const greeting = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(
          new QmpConnectionError('timeout', `QMP ${options.socketPath}: no greeting within ${timeoutMs} ms`),
        );
      }, timeoutMs);
      client.onGreeting = (v) => {
        clearTimeout(timer);
        client.version = v;
        resolve();
      };
      socket.once('error', (e: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(new QmpConnectionError('connect', `QMP ${options.socketPath}: ${e.code ?? e.message}`));
      });
      void client.closedPromise.then((e) => {
        clearTimeout(timer);
        reject(e);
      });
    });
    client.attach();
    try {
      await greeting;
      await client.execute('qmp_capabilities', {}, { timeoutMs });
    } catch (e) {
      client.close();
      throw e;
    }
    return client;
  }

  /** Set by connect() while it waits for the greeting; a greeting after that is ignored. */
  private onGreeting: (version: { major: number; minor: number; micro: number }) => void = () => undefined;

  private attach(): void {
    this.socket.setEncoding('utf8');
    this.socket.on('data', (chunk: string) => this.onData(chunk));
    this.socket.on('error', (e: NodeJS.ErrnoException) =>
      this.fail(new QmpConnectionError('closed', `QMP ${this.socketPath}: ${e.code ?? e.message}`)),
    );
    this.socket.on('close', () =>
      this.fail(new QmpConnectionError('closed', `QMP ${this.socketPath}: connection closed by QEMU`)),
    );
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    let newline: number;
    while ((newline = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, newline).trim();
      this.buffer = this.buffer.slice(newline + 1);
      if (line) this.onLine(line);
      if (this.closedError) return;
    }
    if (this.buffer.length > MAX_LINE_BYTES) this.protocolError('line too long');
  }

  private onLine(line: string): void {
    let message: Record<string, unknown>;
    try {
      message = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return this.protocolError(`not JSON: ${line.slice(0, 80)}`);
    }
    if (typeof message !== 'object' || message === null) return this.protocolError('not an object');
    if ('QMP' in message) {
      const qmp = message['QMP'] as { version?: { qemu?: { major: number; minor: number; micro: number } } };
      const v = qmp?.version?.qemu;
      this.onGreeting(v ?? { major: 0, minor: 0, micro: 0 });
      return;
    }
    if ('event' in message) {
      const event = message as unknown as QmpAnyEvent;
      this.events.emit('event', event);
      this.events.emit(event.event, event);
      return;
    }
    const id = message['id'];
    const pending = typeof id === 'string' ? this.pending.get(id) : undefined;
    if (!pending) return; // an answer to a command we gave up on (timed out)
    this.pending.delete(id as string);
    clearTimeout(pending.timer);
    if ('error' in message) {
      const err = message['error'] as { class?: string; desc?: string };
      pending.reject(new QmpError(pending.command, err?.class ?? 'unknown', err?.desc ?? ''));
    } else {
      pending.resolve(message['return']);
    }
  }

  private protocolError(what: string): void {
    this.fail(new QmpConnectionError('protocol', `QMP ${this.socketPath}: protocol error: ${what}`));
    this.socket.destroy();
  }

  private fail(error: QmpConnectionError): void {
    if (this.closedError) return;
    this.closedError = error;
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      this.pending.delete(id);
      p.reject(new QmpConnectionError(error.kind, `${error.message} (while running ${p.command})`));
    }
    this.resolveClosed(error);
    this.events.emit('close', error);
  }

  /** Sends one command and resolves with its typed result, or rejects with QmpError / QmpConnectionError. */
  execute<C extends QmpCommandName>(
    command: C,
    ...rest: QmpCommands[C]['args'] extends undefined
      ? [args?: undefined, options?: { timeoutMs?: number }]
      : [args: QmpCommands[C]['args'], options?: { timeoutMs?: number }]
  ): Promise<QmpCommands[C]['result']> {
    const [args, options] = rest;
    return this.send(command, args, options?.timeoutMs) as Promise<QmpCommands[C]['result']>;
  }

  /** For commands this file does not type (tests, diagnostics). */
  executeRaw(command: string, args?: object, options?: { timeoutMs?: number }): Promise<unknown> {
    return this.send(command, args, options?.timeoutMs);
  }

  private send(
    command: string,
    args: object | undefined,
    timeoutMs = this.commandTimeoutMs,
  ): Promise<unknown> {
    if (this.closedError)
      return Promise.reject(
        new QmpConnectionError(this.closedError.kind, `${this.closedError.message} (before ${command})`),
      );
    const id = `flotilla-${this.nextId++}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new QmpConnectionError('timeout', `QMP ${command}: no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { command, resolve, reject, timer });
      const message =
        args === undefined ? { execute: command, id } : { execute: command, arguments: args, id };
      this.socket.write(JSON.stringify(message) + '\n');
    });
  }

  on<K extends keyof QmpEventData>(
    event: K,
    listener: (e: Extract<QmpEvent, { event: K }>) => void,
  ): () => void;
  on(event: 'event', listener: (e: QmpAnyEvent) => void): () => void;
  on(event: 'close', listener: (e: QmpConnectionError) => void): () => void;
  on(event: string, listener: (e: never) => void): () => void {
    const l = listener as (e: unknown) => void;
    this.events.on(event, l);
    return () => this.events.off(event, l);
  }

  /**
   * Resolves with the first event named `event` that satisfies `predicate`; rejects on timeout or when the
   * connection drops first.
   */
  waitForEvent<K extends keyof QmpEventData>(
    event: K,
    options: { timeoutMs: number; predicate?: (e: Extract<QmpEvent, { event: K }>) => boolean },
  ): Promise<Extract<QmpEvent, { event: K }>> {
    return new Promise((resolve, reject) => {
      if (this.closedError) return reject(this.closedError);
      const done = () => {
        clearTimeout(timer);
        off();
        offClose();
      };
      const timer = setTimeout(() => {
        done();
        reject(new QmpConnectionError('timeout', `QMP: no ${event} event within ${options.timeoutMs} ms`));
      }, options.timeoutMs);
      const off = this.on(event, (e) => {
        if (options.predicate && !options.predicate(e)) return;
        done();
        resolve(e);
      });
      const offClose = this.on('close', (e) => {
        done();
        reject(e);
      });
    });
  }

  /** Resolves when the connection ends, with the reason. */
  get closed(): Promise<QmpConnectionError> {
    return this.closedPromise;
  }

  get isClosed(): boolean {
    return this.closedError !== undefined;
  }

  close(): void {
    this.fail(new QmpConnectionError('closed', `QMP ${this.socketPath}: closed by the client`));
    this.socket.destroy();
  }
}
