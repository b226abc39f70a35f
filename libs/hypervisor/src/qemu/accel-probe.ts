import { execFile, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { QEMU_BINARY } from './qemu-process';
import { writeJsonAtomically } from './vm-directory';

export type AcceleratorChoice = 'kvm' | 'tcg' | 'auto';

export interface AcceleratorVerdict {
  accelerator: 'kvm' | 'tcg';
  reason: string;
  /** How long the probe guest took to print its marker (or until the deadline), when a probe ran. */
  probeMs?: number;
}

/** A tiny guest that prints `marker` on its serial console and powers off when booted with `cmdline`. */
export interface ProbeGuest {
  kernel: string;
  initrd?: string;
  cmdline: string;
  marker: string;
}

export interface AcceleratorProbeOptions {
  /** Where the verdict is cached (`accel-probe.json`) and the probe guest's files are written. */
  stateDir: string;
  /** 'kvm' or 'tcg' skips the probe (the agent maps FLOTILLA_ACCEL to it); 'auto' probes. */
  choice?: AcceleratorChoice;
  /** Without a guest there is nothing honest to probe with: TCG, and the reason says so. */
  guest?: ProbeGuest;
  /** A normal KVM host boots the probe guest in well under a second; TCG takes ~2 s. */
  deadlineMs?: number;
  binary?: string;
  kvmDevice?: string;
}

interface CachedVerdict extends AcceleratorVerdict {
  key: string;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function qemuVersion(binary: string): Promise<string> {
  return new Promise((resolve) =>
    execFile(binary, ['--version'], { timeout: 10_000 }, (err, stdout) =>
      resolve(err ? `unavailable (${err.message})` : stdout.split('\n')[0].trim()),
    ),
  );
}

function fileIdentity(file: string | undefined): string {
  if (!file) return 'none';
  try {
    const st = fs.statSync(file);
    return `${file}:${st.size}:${Math.trunc(st.mtimeMs)}`;
  } catch {
    return `${file}:missing`;
  }
}

/**
 * Decides KVM or TCG by booting a real kernel with `-accel kvm -cpu host` and waiting for its marker on the
 * serial console — never from /dev/kvm existing or `query-kvm`: on some hosts /dev/kvm opens (PVM) yet stock
 * kernels hang in it. The verdict is cached, keyed by QEMU version, probe kernel and /dev/kvm presence.
 */
export async function chooseAccelerator(options: AcceleratorProbeOptions): Promise<AcceleratorVerdict> {
  const choice = options.choice ?? 'auto';
  if (choice === 'kvm' || choice === 'tcg')
    return { accelerator: choice, reason: `FLOTILLA_ACCEL=${choice}` };
  const binary = options.binary ?? QEMU_BINARY;
  const kvmDevice = options.kvmDevice ?? '/dev/kvm';
  const hasKvm = fs.existsSync(kvmDevice);
  const guest = options.guest;
  const key = [
    await qemuVersion(binary),
    fileIdentity(guest?.kernel),
    fileIdentity(guest?.initrd),
    guest?.cmdline ?? '',
    `${kvmDevice}:${hasKvm ? 'present' : 'absent'}`,
  ].join('|');
  const cacheFile = path.join(options.stateDir, 'accel-probe.json');
  try {
    const cached = JSON.parse(fs.readFileSync(cacheFile, 'utf8')) as CachedVerdict;
    if (cached.key === key)
      return { accelerator: cached.accelerator, reason: cached.reason, probeMs: cached.probeMs };
  } catch {
    // no cache yet, or unreadable: probe
  }
  const verdict: AcceleratorVerdict = !hasKvm
    ? { accelerator: 'tcg', reason: `kvm probe: ${kvmDevice} does not exist` }
    : !guest
      ? {
          accelerator: 'tcg',
          reason: 'kvm probe: no probe kernel available (build the demo image), so not trusting KVM',
        }
      : await bootProbeGuest({
          ...options,
          guest,
          binary,
          accelerator: 'kvm',
          deadlineMs: options.deadlineMs ?? 8000,
        });
  fs.mkdirSync(options.stateDir, { recursive: true });
  writeJsonAtomically(cacheFile, { ...verdict, key });
  return verdict;
}

/**
 * Boots the probe guest once under `accelerator` and reports whether its marker came within the deadline.
 * The driver probes 'kvm'; 'tcg' is for checking the probe guest itself (a TCG miss means the guest is wrong).
 */
export async function bootProbeGuest(options: {
  stateDir: string;
  guest: ProbeGuest;
  accelerator: 'kvm' | 'tcg';
  binary?: string;
  deadlineMs: number;
}): Promise<AcceleratorVerdict> {
  const { guest, deadlineMs, accelerator } = options;
  const binary = options.binary ?? QEMU_BINARY;
  const tag = `${accelerator} probe`;
  const dir = fs.mkdtempSync(path.join(options.stateDir, '.accel-probe-'));
  const serialLog = path.join(dir, 'serial.log');
  const qemuLog = path.join(dir, 'qemu.log');
  // The same accelerator and CPU a VM would get: a probe that passes must mean real guests run.
  // prettier-ignore
  const argv = [
    '-no-user-config', '-nodefaults', '-display', 'none', '-machine', 'q35', '-accel', accelerator, '-cpu', accelerator === 'kvm' ? 'host' : 'qemu64',
    '-m', '128', '-no-reboot', '-kernel', guest.kernel,
    ...(guest.initrd ? ['-initrd', guest.initrd] : []),
    '-append', guest.cmdline, '-serial', `file:${serialLog}`,
  ];
  const log = fs.openSync(qemuLog, 'w');
  const started = Date.now();
  const child = spawn(binary, argv, { stdio: ['ignore', log, log], detached: true });
  fs.closeSync(log);
  let exited: { code: number | null; signal: string | null } | undefined;
  child.once('exit', (code, signal) => (exited = { code, signal }));
  child.once('error', () => (exited = { code: null, signal: null }));
  const read = (f: string) => {
    try {
      return fs.readFileSync(f, 'utf8');
    } catch {
      return '';
    }
  };
  try {
    for (;;) {
      const elapsed = Date.now() - started;
      if (read(serialLog).includes(guest.marker))
        return { accelerator, reason: `${tag}: guest ready in ${elapsed} ms`, probeMs: elapsed };
      if (exited) {
        const why = read(qemuLog).trim().split('\n').slice(-2).join(' ') || `exit code ${exited.code}`;
        return {
          accelerator: 'tcg',
          reason: `${tag}: QEMU failed under ${accelerator} (${why})`,
          probeMs: elapsed,
        };
      }
      if (elapsed > deadlineMs) {
        const lastLine = read(serialLog).trim().split('\n').pop()?.slice(0, 80) || 'no serial output';
        return {
          accelerator: 'tcg',
          reason: `${tag}: no ready marker within ${deadlineMs / 1000} s (last console line: ${lastLine})`,
          probeMs: elapsed,
        };
      }
      await sleep(25);
    }
  } finally {
    if (!exited && child.pid) {
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    const deadline = Date.now() + 5000;
    while (!exited && Date.now() < deadline) await sleep(10);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
