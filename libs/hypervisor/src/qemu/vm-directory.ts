import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DriverError, DriverMigrationParameters, DriverPowerState } from '../driver';
import { QemuLaunchSpec, QemuRuntimePaths } from './qemu-command';
import { validateVmId } from './vm-spec-validation';

/** What the agent last asked of the VM and why it is in its state; the truth comes from QEMU (query-status). */
export interface VmStateRecord {
  intended: DriverPowerState;
  reason?: string;
  updatedAt: string;
}

/**
 * The live migration this host takes part in for the VM (`migration.json`), so that a restarted agent
 * re-attaches to it: which side this host is, the migration's id, and what it set up in QEMU. Written
 * before QEMU is changed: a crash in between leaves a record that a repeated call completes or cleans up.
 */
export type MigrationRecord = IncomingMigrationRecord | OutgoingMigrationRecord;

export interface IncomingMigrationRecord {
  role: 'incoming';
  migrationId: string;
  postCopy: boolean;
  /** host:port QEMU listens on for the memory stream; absent until migrate-incoming was sent. */
  migrationAddress?: string;
  nbdAddress?: string;
  /** Disk id → NBD export name (also the block export's id). */
  nbdExports: Record<string, string>;
}

export interface OutgoingMigrationRecord {
  role: 'outgoing';
  migrationId: string;
  /** One per mirrored disk: the job and the NBD client node it writes into. */
  mirrors: { diskId: string; jobId: string; targetNode: string }[];
  /** Set once `migrate` is about to be sent. */
  destinationAddress?: string;
  parameters?: DriverMigrationParameters;
  /** Whether the guest ran when memory started to move: a cancel runs it again only then. */
  wasRunning?: boolean;
  /** switchOver sent migrate-continue: past the point of no return unless QEMU reports a failure. */
  switchedOver?: boolean;
  /** Cancelled by cancelOutgoing: nothing is in flight any more. */
  cancelled?: boolean;
}

/** Longest unix socket path Linux accepts (sun_path is 108 bytes with the NUL). */
const MAX_SOCKET_PATH = 107;

/**
 * Where a VM's sockets go when its directory is too deep for a unix socket path (a data dir under a long
 * home or project path): a short directory named after the state dir, on a tmpfs that is not aged like
 * /tmp where possible (/run for root, else $XDG_RUNTIME_DIR), so a restarted agent computes the same place.
 */
export function shortSocketRoot(stateDir: string): string {
  const id = createHash('sha256').update(path.resolve(stateDir)).digest('hex').slice(0, 12);
  const base =
    process.getuid?.() === 0
      ? '/run/flotilla'
      : process.env.XDG_RUNTIME_DIR
        ? path.join(process.env.XDG_RUNTIME_DIR, 'flotilla')
        : path.join(os.tmpdir(), `flotilla-${process.getuid?.() ?? 'u'}`);
  return path.join(base, id);
}

/**
 * One VM's directory under the agent's state dir: `<stateDir>/<vmId>/`. Everything the host holds for the VM
 * lives here, so destroy removes one directory and a restarted agent finds every VM by listing the state dir.
 */
export class VmDirectory {
  readonly dir: string;
  readonly specFile: string;
  readonly stateFile: string;
  readonly pidFile: string;
  readonly qmpSocket: string;
  readonly consoleSocket: string;
  readonly serialLog: string;
  /** QEMU's own stdout/stderr, redirected to a file (a pipe nobody reads would block QEMU). */
  readonly qemuLog: string;
  /** Memory and device state while SUSPENDED. */
  readonly savedState: string;
  /** The migration in progress, if any (MigrationRecord). */
  readonly migrationFile: string;
  /** Where QEMU sends or receives the saved state during suspend/resume. */
  readonly migrationSocket: string;
  /** The directory holding the sockets: `dir`, or a short one when `dir` is too deep for socket paths. */
  readonly socketDir: string;

  constructor(
    stateDir: string,
    readonly vmId: string,
  ) {
    validateVmId(vmId);
    this.dir = path.join(stateDir, vmId);
    this.specFile = path.join(this.dir, 'spec.json');
    this.stateFile = path.join(this.dir, 'state.json');
    this.pidFile = path.join(this.dir, 'qemu.pid');
    const fits = (dir: string) => Buffer.byteLength(path.join(dir, 'console.sock')) <= MAX_SOCKET_PATH;
    this.socketDir = fits(this.dir) ? this.dir : path.join(shortSocketRoot(stateDir), vmId);
    this.qmpSocket = path.join(this.socketDir, 'qmp.sock');
    this.consoleSocket = path.join(this.socketDir, 'console.sock');
    this.serialLog = path.join(this.dir, 'serial.log');
    this.qemuLog = path.join(this.dir, 'qemu.log');
    this.savedState = path.join(this.dir, 'saved-state.bin');
    this.migrationSocket = path.join(this.socketDir, 'migrate.sock');
    this.migrationFile = path.join(this.dir, 'migration.json');
    if (!fits(this.socketDir))
      throw new DriverError(
        'invalid-spec',
        `vmId: ${this.migrationSocket} is longer than a unix socket path may be: set a shorter TMPDIR or XDG_RUNTIME_DIR`,
      );
  }

  get runtimePaths(): QemuRuntimePaths {
    return {
      pidFile: this.pidFile,
      qmpSocket: this.qmpSocket,
      consoleSocket: this.consoleSocket,
      serialLog: this.serialLog,
    };
  }

  exists(): boolean {
    return fs.existsSync(this.specFile);
  }

  create(): void {
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    fs.mkdirSync(this.socketDir, { recursive: true, mode: 0o700 });
  }

  readSpec(): QemuLaunchSpec | undefined {
    return readJson<QemuLaunchSpec>(this.specFile);
  }

  writeSpec(spec: QemuLaunchSpec): void {
    writeJsonAtomically(this.specFile, spec);
  }

  readState(): VmStateRecord | undefined {
    return readJson<VmStateRecord>(this.stateFile);
  }

  writeState(intended: DriverPowerState, reason?: string): void {
    writeJsonAtomically(this.stateFile, { intended, reason, updatedAt: new Date().toISOString() });
  }

  readMigration(): MigrationRecord | undefined {
    return readJson<MigrationRecord>(this.migrationFile);
  }

  /**
   * `durable: false` skips the fsync (about 2 ms here) where the guest is paused waiting for the write: the
   * record still survives the agent dying (the page cache keeps it), and a host crash takes QEMU along.
   */
  writeMigration(record: MigrationRecord, options: { durable?: boolean } = {}): void {
    writeJsonAtomically(this.migrationFile, record, options.durable ?? true);
  }

  removeMigration(): void {
    fs.rmSync(this.migrationFile, { force: true });
  }

  hasSavedState(): boolean {
    return fs.existsSync(this.savedState);
  }

  readPid(): number | undefined {
    try {
      const pid = Number(fs.readFileSync(this.pidFile, 'utf8').trim());
      return Number.isInteger(pid) && pid > 1 ? pid : undefined;
    } catch {
      return undefined;
    }
  }

  /** Sockets a killed QEMU leaves behind (a clean exit removes them itself). */
  removeSockets(): void {
    for (const f of [this.qmpSocket, this.consoleSocket, this.migrationSocket]) fs.rmSync(f, { force: true });
  }

  /**
   * Everything a killed QEMU leaves behind, pidfile included. Only once its QEMU is known to be gone: QEMU's
   * lock is on the pidfile's inode, so removing a live one would let a second QEMU lock a new file.
   */
  removeRuntimeFiles(): void {
    this.removeSockets();
    fs.rmSync(this.pidFile, { force: true });
  }

  remove(): void {
    fs.rmSync(this.dir, { recursive: true, force: true });
    if (this.socketDir !== this.dir) fs.rmSync(this.socketDir, { recursive: true, force: true });
  }

  /** The vmIds that have a directory in `stateDir`. */
  static list(stateDir: string): string[] {
    let names: string[];
    try {
      names = fs.readdirSync(stateDir);
    } catch {
      return [];
    }
    return names.filter((n) => {
      try {
        validateVmId(n);
        return fs.existsSync(path.join(stateDir, n, 'spec.json'));
      } catch {
        return false;
      }
    });
  }
}

function readJson<T>(file: string): T | undefined {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as T;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

/** Write-then-rename (with fsync): a crash leaves the old file or the new one, never half of one. */
export function writeJsonAtomically(file: string, value: unknown, durable = true): void {
  const tmp = `${file}.${process.pid}.tmp`;
  const fd = fs.openSync(tmp, 'w', 0o600);
  try {
    fs.writeSync(fd, JSON.stringify(value, null, 2));
    if (durable) fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
}
