import { spawn } from 'node:child_process';
import { findOnPath } from '../qemu/real-qemu';
import { describeHolders, fileHolders } from './file-holders';

/**
 * Every qemu-img run of Flotilla: an argument array (no shell), the format always explicit in the
 * arguments (the callers' job, checked here), CPU-time and address-space limits applied by prlimit (a
 * crafted image must not make qemu-img spin or allocate without bound: CVE-2015-5162, CVE-2024-4467),
 * stderr turned into one clear message, `-p` progress parsed from stdout, and cancellation by signal.
 */

export interface QemuImgLimits {
  cpuSeconds: number;
  /** RLIMIT_AS: virtual address space, not resident memory. */
  memoryBytes: number;
}

/**
 * How much a run may use. Metadata work (create, info, resize, a snapshot overlay) is small whatever the
 * image: a fixed limit. Data work (check, convert, rebase) grows with the image, so its CPU limit is a base
 * plus an allowance per GiB of virtual size: a plain copy of 1 GiB of incompressible data takes under
 * 1 s of CPU here, decompressing a compressed qcow2 or streamOptimized VMDK a few seconds, and compressing
 * (streamOptimized export, compressed qcow2) about 17 s per GiB: compressing runs get the larger allowance.
 * Address space is measured as virtual memory: qemu-img's thread pool reserves stacks and malloc arenas it
 * never touches (a 1 GiB convert peaks at ~25 MiB resident but needs a few hundred MiB of address space),
 * and MALLOC_ARENA_MAX keeps that reservation predictable.
 */
export interface QemuImgLimitPolicy {
  metadata: QemuImgLimits;
  dataBaseCpuSeconds: number;
  dataCpuSecondsPerGib: number;
  compressCpuSecondsPerGib: number;
  dataMemoryBytes: number;
}

export const DEFAULT_QEMU_IMG_LIMITS: QemuImgLimitPolicy = {
  metadata: { cpuSeconds: 30, memoryBytes: 1024 ** 3 },
  dataBaseCpuSeconds: 60,
  dataCpuSecondsPerGib: 10,
  compressCpuSecondsPerGib: 60,
  dataMemoryBytes: 2 * 1024 ** 3,
};

export type QemuImgWork = 'metadata' | 'data' | 'compress';

export function qemuImgLimits(
  work: QemuImgWork,
  virtualSizeBytes: number,
  policy: QemuImgLimitPolicy = DEFAULT_QEMU_IMG_LIMITS,
): QemuImgLimits {
  if (work === 'metadata') return policy.metadata;
  const gib = Math.max(1, Math.ceil(virtualSizeBytes / 1024 ** 3));
  const perGib = work === 'compress' ? policy.compressCpuSecondsPerGib : policy.dataCpuSecondsPerGib;
  return { cpuSeconds: policy.dataBaseCpuSeconds + perGib * gib, memoryBytes: policy.dataMemoryBytes };
}

export type QemuImgFailure =
  /** The file system is full (ENOSPC). */
  | 'no-space'
  /** Another process (a running VM's QEMU) holds the image's lock. */
  | 'locked'
  /** The CPU-time or memory limit ended it. */
  | 'limit'
  /** Cache mode none asked for O_DIRECT and the file system has none. */
  | 'no-direct-io'
  | 'cancelled'
  | 'failed';

export class QemuImgError extends Error {
  constructor(
    readonly failure: QemuImgFailure,
    message: string,
    readonly exitCode?: number,
  ) {
    super(message);
    this.name = 'QemuImgError';
  }
}

export interface QemuImgRun {
  /** qemu-img's arguments, the subcommand first. */
  args: string[];
  limits: QemuImgLimits;
  signal?: AbortSignal;
  /** Fraction 0..1 from `-p` output, called when it grows. */
  onProgress?: (fraction: number) => void;
  /** Exit codes that are answers, not failures (qemu-img check: 2 corrupt, 3 leaks, 63 unsupported). */
  okExitCodes?: number[];
  /** How long an image locked by another process is tried again; default LOCK_PATIENCE_MS. */
  lockPatienceMs?: number;
}

export interface QemuImgResult {
  exitCode: number;
  stdout: string;
}

/** A 'locked' failure naming who holds the image, which qemu-img's own message does not say. */
function withHolders(e: QemuImgError): QemuImgError {
  const file = /Could not open '([^']+)'/.exec(e.message)?.[1];
  const holders = file ? fileHolders(file) : [];
  if (!holders.length) return e;
  return new QemuImgError(e.failure, `${e.message}; held open by ${describeHolders(holders)}`, e.exitCode);
}

/** Subcommands and the option that must carry the format in each (never guessed: DESIGN §8). */
const formatOption: Record<string, string[]> = {
  create: ['-f'],
  info: ['-f'],
  check: ['-f'],
  resize: ['-f'],
  convert: ['-f', '-O'],
  rebase: ['-f'],
};

const PROGRESS = /\((\d+(?:\.\d+)?)\/100%\)/g;
/** Stdout kept for JSON answers; progress output is parsed as it arrives and not kept. */
const MAX_STDOUT = 4 * 1024 * 1024;
const MAX_STDERR = 64 * 1024;

export interface QemuImgOptions {
  binary?: string;
  prlimit?: string;
  /** util-linux setpriv, for --pdeathsig; null: not used. */
  setpriv?: string | null;
  policy?: QemuImgLimitPolicy;
}

/** Runs qemu-img under prlimit. One instance per agent; injectable for tests (STYLE 20). */
export class QemuImg {
  readonly binary: string;
  readonly prlimit: string;
  readonly setpriv: string | undefined;
  readonly policy: QemuImgLimitPolicy;

  constructor(options: QemuImgOptions = {}) {
    this.binary = options.binary ?? findOnPath('qemu-img') ?? 'qemu-img';
    this.prlimit = options.prlimit ?? findOnPath('prlimit') ?? '/usr/bin/prlimit';
    this.setpriv = options.setpriv === null ? undefined : (options.setpriv ?? findOnPath('setpriv'));
    this.policy = options.policy ?? DEFAULT_QEMU_IMG_LIMITS;
  }

  limits(work: QemuImgWork, virtualSizeBytes = 0): QemuImgLimits {
    return qemuImgLimits(work, virtualSizeBytes, this.policy);
  }

  /**
   * Runs qemu-img once; an image still locked is tried again for a few seconds: a QEMU that is letting go of
   * it (a disk just unplugged, a VM just stopped or migrated away) releases its lock a moment after saying
   * so, and under load that moment can be long (QEMU frees a removed disk after an RCU grace period). A VM
   * that really holds the image still fails, later.
   */
  async run(run: QemuImgRun): Promise<QemuImgResult> {
    const giveUpAt = Date.now() + (run.lockPatienceMs ?? LOCK_PATIENCE_MS);
    for (;;) {
      try {
        return await this.runOnce(run);
      } catch (e) {
        if (!(e instanceof QemuImgError) || e.failure !== 'locked') throw e;
        if (Date.now() >= giveUpAt) throw withHolders(e);
        if (run.signal?.aborted) throw new QemuImgError('cancelled', `qemu-img ${run.args[0]} cancelled`);
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    }
  }

  private runOnce(run: QemuImgRun): Promise<QemuImgResult> {
    try {
      assertExplicitFormat(run.args);
    } catch (e) {
      return Promise.reject(e as Error);
    }
    const { cpuSeconds, memoryBytes } = run.limits;
    const argv = [
      `--cpu=${Math.ceil(cpuSeconds)}`,
      `--as=${Math.ceil(memoryBytes)}`,
      '--core=0',
      '--',
      // A qemu-img whose agent died is killed with it (the parent-death signal survives exec), so a
      // restarted agent never races an orphan still writing into the SR.
      ...(this.setpriv ? [this.setpriv, '--pdeathsig', 'KILL', '--'] : []),
      this.binary,
      ...run.args,
    ];
    return new Promise((resolve, reject) => {
      if (run.signal?.aborted) {
        reject(new QemuImgError('cancelled', `qemu-img ${run.args[0]} cancelled`));
        return;
      }
      // prlimit (and setpriv) exec qemu-img: the child's pid is qemu-img's, and killing it ends the work.
      const child = spawn(this.prlimit, argv, {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LC_ALL: 'C', MALLOC_ARENA_MAX: '4' },
      });
      let stdout = '';
      let stderr = '';
      let lastFraction = -1;
      let cancelled = false;
      const onAbort = () => {
        cancelled = true;
        child.kill('SIGKILL');
      };
      run.signal?.addEventListener('abort', onAbort, { once: true });
      child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
        if (run.onProgress) {
          for (const m of chunk.matchAll(PROGRESS)) {
            const fraction = Math.min(1, Number(m[1]) / 100);
            if (fraction > lastFraction) {
              lastFraction = fraction;
              run.onProgress(fraction);
            }
          }
        } else if (stdout.length < MAX_STDOUT) stdout += chunk;
      });
      child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
        if (stderr.length < MAX_STDERR) stderr += chunk;
      });
      child.once('error', (e) => {
        run.signal?.removeEventListener('abort', onAbort);
        reject(new QemuImgError('failed', `cannot run qemu-img under ${this.prlimit}: ${e.message}`));
      });
      child.once('close', (code, signal) => {
        run.signal?.removeEventListener('abort', onAbort);
        const what = `qemu-img ${run.args[0]}`;
        if (cancelled) return reject(new QemuImgError('cancelled', `${what} cancelled`));
        if (code !== null && (code === 0 || run.okExitCodes?.includes(code)))
          return resolve({ exitCode: code, stdout });
        reject(describeFailure(what, code, signal, stderr, run.limits));
      });
    });
  }
}

/** How long an image locked by another process is tried again (see QemuImg.run). */
const LOCK_PATIENCE_MS = 30_000;

function assertExplicitFormat(args: string[]): void {
  const needed = formatOption[args[0]];
  if (!needed) throw new Error(`qemu-img ${args[0]} is not a subcommand Flotilla runs`);
  for (const option of needed)
    if (!args.includes(option))
      throw new Error(`qemu-img ${args[0]} without ${option}: the format must be explicit`);
}

function describeFailure(
  what: string,
  code: number | null,
  signal: NodeJS.Signals | null,
  stderr: string,
  limits: QemuImgLimits,
): QemuImgError {
  // qemu-img prefixes its errors with "qemu-img: "; the last lines say what went wrong.
  const said = stderr
    .split('\n')
    .map((l) => l.replace(/^qemu-img: /, '').trim())
    .filter(Boolean)
    .slice(-3)
    .join('; ')
    .slice(0, 600);
  if (signal === 'SIGXCPU' || signal === 'SIGKILL')
    return new QemuImgError(
      'limit',
      `${what} exceeded its CPU-time limit of ${limits.cpuSeconds} s and was stopped (image too large or hostile)`,
    );
  if (/Cannot allocate memory|failed to allocate|Failed to allocate/i.test(said) || signal === 'SIGABRT')
    return new QemuImgError(
      'limit',
      `${what} ran out of its address-space limit of ${Math.round(limits.memoryBytes / 2 ** 20)} MiB${said ? `: ${said}` : ''}`,
    );
  if (/No space left on device/i.test(said))
    return new QemuImgError('no-space', `${what}: the file system is full: ${said}`, code ?? undefined);
  if (/Failed to get .*lock|Is another process using the image/i.test(said))
    return new QemuImgError(
      'locked',
      `${what}: the image is in use by another process (a running VM?): ${said}`,
      code ?? undefined,
    );
  if (/Invalid argument/.test(said) && /Could not open/.test(said))
    return new QemuImgError('no-direct-io', `${what}: ${said}`, code ?? undefined);
  return new QemuImgError(
    'failed',
    `${what} failed (${signal ? `signal ${signal}` : `exit code ${code}`})${said ? `: ${said}` : ''}`,
    code ?? undefined,
  );
}
