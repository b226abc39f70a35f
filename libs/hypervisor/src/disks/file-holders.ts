import * as fs from 'node:fs';

export interface FileHolder {
  pid: number;
  /** The program, and for QEMU the guest name it was started with. */
  what: string;
}

/**
 * The processes that have `file` open, found through /proc/<pid>/fd (Linux; processes of other users are
 * not readable and are left out). For error messages: "in use" alone does not tell an operator whether a
 * VM, a stray qemu-img or a backup tool holds a disk. Costs a scan of every process: call it on failures.
 */
export function fileHolders(file: string, procRoot = '/proc'): FileHolder[] {
  let target: string;
  try {
    target = fs.realpathSync(file);
  } catch {
    return [];
  }
  const holders: FileHolder[] = [];
  for (const entry of safeReaddir(procRoot)) {
    if (!/^\d+$/.test(entry)) continue;
    const fdDir = `${procRoot}/${entry}/fd`;
    const holds = safeReaddir(fdDir).some((fd) => {
      try {
        return fs.readlinkSync(`${fdDir}/${fd}`) === target;
      } catch {
        return false;
      }
    });
    if (holds) holders.push({ pid: Number(entry), what: describeProcess(`${procRoot}/${entry}`) });
  }
  return holders;
}

/** "pid 123 (qemu-system-x86_64, guest web-1)", joined: for the end of an "in use" message. */
export function describeHolders(holders: FileHolder[]): string {
  return holders.map((h) => `pid ${h.pid} (${h.what})`).join(', ');
}

function describeProcess(dir: string): string {
  let argv: string[];
  try {
    argv = fs.readFileSync(`${dir}/cmdline`, 'utf8').split('\0').filter(Boolean);
  } catch {
    return 'gone';
  }
  const program = (argv[0] ?? '?').split('/').pop() ?? '?';
  const nameAt = argv.indexOf('-name');
  const guest = nameAt >= 0 ? /guest=((?:[^,]|,,)*)/.exec(argv[nameAt + 1] ?? '')?.[1] : undefined;
  return guest ? `${program}, guest ${guest.replace(/,,/g, ',')}` : program;
}

function safeReaddir(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}
