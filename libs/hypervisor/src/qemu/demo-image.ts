/**
 * The demo guest appliance: a Debian cloud kernel and a busybox initramfs, built from Debian packages only
 * (`apt-get download` + `dpkg-deb -x`, nothing else is fetched), plus a SeaBIOS-bootable qcow2 disk
 * (MBR → syslinux on FAT → the same kernel and initrd). The guest's behaviour lives in demo-init.ts.
 *
 * Layout under the catalogue directory:
 *   demo/vmlinuz  demo/initrd.img  demo/demo-disk.qcow2  demo/image.json (DemoImageManifest)
 * The directory is built beside the target and renamed into place, so readers never see half an image;
 * a lock file keeps parallel builders (jest workers) from doing the work twice.
 */
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { constants as fsConstants, promises as fs } from 'node:fs';
import { homedir } from 'node:os';
import { join, relative } from 'node:path';
import { gzipSync } from 'node:zlib';
import {
  PROBE_MARKER,
  DEMO_INIT_SCRIPT,
  DEMO_MODULES,
  DEMO_PROFILE,
  DEMO_STATUS_CGI,
  DEMO_UDHCPC_SCRIPT,
} from './demo-init';

export {
  DEMO_POWERBUTTON_IGNORED_MARKER,
  DEMO_POWEROFF_MARKER,
  DEMO_READY_LINE,
  DEMO_READY_MARKER,
  DEMO_DIRTY_MARKER,
  DEMO_PEER_MARKER,
  DEMO_TICK_LINE,
  PROBE_MARKER,
} from './demo-init';

export const DEMO_IMAGE_NAME = 'demo';
/** Resolved to its versioned package (linux-image-<abi>-cloud-amd64) at build time. */
export const DEMO_KERNEL_METAPACKAGE = 'linux-image-cloud-amd64';
export const DEMO_BUSYBOX_PACKAGE = 'busybox-static';
/** Kernel boot: serial console, reboot at once on panic (QEMU sees it through pvpanic first). */
export const DEMO_DEFAULT_CMDLINE = 'console=ttyS0 panic=-1 quiet';
/** Kernel + initramfs need ~60 MiB; a dirtying guest needs demo.dirty MiB more on top (twice, with /dev/shm). */
export const DEMO_MIN_MEMORY_MIB = 128;
/** Changes whenever the builder makes a different image from the same packages. */
const BUILDER_FORMAT = 1;

export interface DemoImageFile {
  /** Relative to the catalogue directory, e.g. `demo/vmlinuz`. */
  path: string;
  sha256: string;
  sizeBytes: number;
}

export interface DemoImageManifest {
  name: typeof DEMO_IMAGE_NAME;
  /** Hash of what the builder puts in (init, modules, layout): a different value means rebuild. */
  builderRevision: string;
  kernel: { package: string; version: string; release: string };
  busybox: { package: string; version: string };
  defaultCmdline: string;
  minMemoryMib: number;
  files: {
    kernel: DemoImageFile;
    initrd: DemoImageFile;
    /** Boots through SeaBIOS → MBR → syslinux with `diskCmdline`; format is always qcow2. */
    disk: DemoImageFile & { format: 'qcow2'; virtualSizeBytes: number };
  };
  /** The kernel command line baked into the boot disk (TICKs never go to the boot disk itself). */
  diskCmdline: string;
  /** Kernel modules in the initramfs (the named ones and their dependencies). */
  modules: string[];
  builtAt: string;
}

export interface BuildDemoImageOptions {
  catalogueDir: string;
  /** Downloaded .deb files; default `$FLOTILLA_CACHE_DIR` or `~/.cache/flotilla`. */
  cacheDir?: string;
  log?: (line: string) => void;
  signal?: AbortSignal;
  /** Rebuild even when the manifest matches (e.g. to pick up a newer kernel from apt). */
  force?: boolean;
}

/** Something the build needs is missing or failed; the message says what to do. */
export class DemoImageError extends Error {
  override name = 'DemoImageError';
}

const MANIFEST = 'image.json';
const LOCK_STALE_MS = 15 * 60_000;
const LOCK_WAIT_MS = 20 * 60_000;

const TOOL_PACKAGES: Record<string, string> = {
  'apt-get': 'apt',
  'apt-cache': 'apt',
  'dpkg-deb': 'dpkg',
  'mkfs.vfat': 'dosfstools',
  syslinux: 'syslinux',
  mcopy: 'mtools',
  'qemu-img': 'qemu-utils',
};
const SYSLINUX_MBR = '/usr/lib/syslinux/mbr/mbr.bin';

export function defaultCacheDir(): string {
  return process.env.FLOTILLA_CACHE_DIR || join(homedir(), '.cache', 'flotilla');
}

export function builderRevision(): string {
  return createHash('sha256')
    .update(
      JSON.stringify([
        BUILDER_FORMAT,
        DEMO_INIT_SCRIPT,
        DEMO_UDHCPC_SCRIPT,
        DEMO_STATUS_CGI,
        DEMO_PROFILE,
        DEMO_MODULES,
        DEMO_DEFAULT_CMDLINE,
        syslinuxConfig(),
      ]),
    )
    .digest('hex')
    .slice(0, 16);
}

/**
 * Builds `<catalogueDir>/demo/` unless a matching image is there already (then it only reads the manifest:
 * no apt, no rebuild). Returns the manifest.
 */
export async function buildDemoImage(options: BuildDemoImageOptions): Promise<DemoImageManifest> {
  const { catalogueDir, signal } = options;
  const log = options.log ?? (() => undefined);
  const target = join(catalogueDir, DEMO_IMAGE_NAME);
  if (!options.force) {
    const current = await readMatchingManifest(catalogueDir);
    if (current) return current;
  }
  await fs.mkdir(catalogueDir, { recursive: true });
  const release = await acquireLock(join(catalogueDir, `.${DEMO_IMAGE_NAME}.lock`), signal, log);
  try {
    // Another builder may have finished while we waited for the lock.
    if (!options.force) {
      const current = await readMatchingManifest(catalogueDir);
      if (current) return current;
    }
    const work = join(
      catalogueDir,
      `.${DEMO_IMAGE_NAME}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`,
    );
    await fs.mkdir(work);
    try {
      const manifest = await buildInto(
        work,
        { ...options, cacheDir: options.cacheDir ?? defaultCacheDir() },
        log,
      );
      await publish(work, target, catalogueDir);
      return (await readMatchingManifest(catalogueDir)) ?? manifest;
    } finally {
      await fs.rm(work, { recursive: true, force: true });
    }
  } finally {
    await release();
  }
}

let forTests: Promise<DemoImageManifest & { dir: string; catalogueDir: string }> | undefined;

/**
 * The demo image for tests, built once per machine into `<cacheDir>/catalogue` (safe under parallel jest
 * workers: one builds, the others wait for its lock and reuse the result). `dir` is the absolute demo/ dir.
 */
export function demoImageForTests(): Promise<DemoImageManifest & { dir: string; catalogueDir: string }> {
  forTests ??= (async () => {
    const catalogueDir = join(defaultCacheDir(), 'catalogue');
    const manifest = await buildDemoImage({ catalogueDir });
    return { ...manifest, catalogueDir, dir: join(catalogueDir, DEMO_IMAGE_NAME) };
  })();
  forTests.catch(() => (forTests = undefined));
  return forTests;
}

/** Absolute paths of the image's files. */
export function demoImagePaths(catalogueDir: string, manifest: DemoImageManifest) {
  return {
    kernel: join(catalogueDir, manifest.files.kernel.path),
    initrd: join(catalogueDir, manifest.files.initrd.path),
    disk: join(catalogueDir, manifest.files.disk.path),
  };
}

/** The accelerator probe's guest (structurally accel-probe's ProbeGuest): marker, then power-off. */
export function demoProbeGuest(catalogueDir: string, manifest: DemoImageManifest) {
  const paths = demoImagePaths(catalogueDir, manifest);
  return {
    kernel: paths.kernel,
    initrd: paths.initrd,
    cmdline: `${manifest.defaultCmdline} demo.probe=1`,
    marker: PROBE_MARKER,
  };
}

export interface DemoGuestOptions {
  /** Shown by HTTP and DEMO-READY; characters outside [A-Za-z0-9._:-] become `_` in the guest. */
  name?: string;
  /** Static address `A.B.C.D/N`; DHCP on eth0 without it. */
  ip?: string;
  gateway?: string;
  /** `IP` or `IP:PORT`: ping and HTTP-check it, then print DEMO-PEER. */
  peer?: string;
  /** Memory-dirtying workload over this many MiB (needs about twice that on top of minMemoryMib). */
  dirtyMib?: number;
  /** Pause between dirtying passes (0: flat out, ~1 GB/s under TCG). */
  dirtySleepSec?: number;
  /** Print DEMO-POWERBUTTON-IGNORED instead of powering off (to exercise the clean-shutdown timeout). */
  ignorePowerButton?: boolean;
  /** Console TICK line every N seconds (0: never; the status CGI still counts). Default 1. */
  tickEverySec?: number;
  /** Where TICKs go besides the console: 'auto' (a blank /dev/vda), 'none', or `/dev/vdX`. */
  tickDisk?: 'auto' | 'none' | `/dev/vd${string}`;
  /** A shell on the serial console after Enter is pressed there. Default true. */
  consoleShell?: boolean;
}

/** The kernel command line for a demo guest; throws DemoImageError on values the guest could not parse. */
export function demoCmdline(options: DemoGuestOptions = {}, base = DEMO_DEFAULT_CMDLINE): string {
  const parts = [base];
  const bad = (what: string, value: unknown, want: string) =>
    new DemoImageError(`demo guest option ${what}=${String(value)} is invalid: want ${want}`);
  const token = (what: string, value: string, re: RegExp, want: string) => {
    if (!re.test(value)) throw bad(what, value, want);
    return value;
  };
  const ipv4 = '(?:\\d{1,3}\\.){3}\\d{1,3}';
  if (options.name !== undefined) {
    parts.push(
      `demo.name=${token('name', options.name, /^[A-Za-z0-9._:-]{1,63}$/, '1-63 of [A-Za-z0-9._:-]')}`,
    );
  }
  if (options.ip !== undefined) {
    parts.push(`demo.ip=${token('ip', options.ip, new RegExp(`^${ipv4}/\\d{1,2}$`), 'A.B.C.D/N')}`);
  }
  if (options.gateway !== undefined) {
    parts.push(`demo.gw=${token('gateway', options.gateway, new RegExp(`^${ipv4}$`), 'A.B.C.D')}`);
  }
  if (options.peer !== undefined) {
    parts.push(
      `demo.peer=${token('peer', options.peer, new RegExp(`^${ipv4}(:\\d{1,5})?$`), 'A.B.C.D or A.B.C.D:PORT')}`,
    );
  }
  const uint = (what: string, value: number | undefined, max: number) => {
    if (value === undefined) return undefined;
    if (!Number.isInteger(value) || value < 0 || value > max) throw bad(what, value, `an integer 0..${max}`);
    return value;
  };
  const dirty = uint('dirtyMib', options.dirtyMib, 65536);
  if (dirty) parts.push(`demo.dirty=${dirty}`);
  if (options.dirtySleepSec !== undefined) {
    const s = options.dirtySleepSec;
    if (!Number.isFinite(s) || s < 0 || s > 3600) throw bad('dirtySleepSec', s, 'seconds 0..3600');
    parts.push(`demo.dsleep=${Number(s.toFixed(3))}`);
  }
  if (options.ignorePowerButton) parts.push('demo.ignore_powerbutton=1');
  const tick = uint('tickEverySec', options.tickEverySec, 86400);
  if (tick !== undefined) parts.push(`demo.tick=${tick}`);
  if (options.tickDisk !== undefined) {
    const d = options.tickDisk;
    if (d !== 'auto' && d !== 'none' && !/^\/dev\/vd[a-z]$/.test(d))
      throw bad('tickDisk', d, "'auto', 'none' or /dev/vdX");
    parts.push(`demo.disk=${d === 'none' ? 0 : d}`);
  }
  if (options.consoleShell === false) parts.push('demo.shell=0');
  return parts.join(' ');
}

// --- the build --------------------------------------------------------------------------------------------

async function buildInto(
  work: string,
  options: BuildDemoImageOptions & { cacheDir: string },
  log: (line: string) => void,
): Promise<DemoImageManifest> {
  const { signal, cacheDir } = options;
  const kernelPackage = await resolveKernelPackage(signal);
  const busyboxVersion = await candidateVersion(DEMO_BUSYBOX_PACKAGE, signal);
  log(`demo image: kernel ${kernelPackage.name} ${kernelPackage.version}, busybox ${busyboxVersion}`);
  const [kernelDeb, busyboxDeb] = await Promise.all([
    fetchDeb(kernelPackage.name, kernelPackage.version, cacheDir, signal, log),
    fetchDeb(DEMO_BUSYBOX_PACKAGE, busyboxVersion, cacheDir, signal, log),
  ]);

  const kernelTree = join(work, 'kernel-deb');
  const busyboxTree = join(work, 'busybox-deb');
  await Promise.all([
    run('dpkg-deb', ['-x', kernelDeb, kernelTree], { signal, timeoutMs: 180_000 }),
    run('dpkg-deb', ['-x', busyboxDeb, busyboxTree], { signal, timeoutMs: 60_000 }),
  ]);
  const release = await kernelRelease(kernelTree, kernelPackage.name);
  const busybox = join(busyboxTree, 'bin', 'busybox');
  await fs.access(busybox, fsConstants.X_OK).catch(() => {
    throw new DemoImageError(
      `${busyboxDeb} has no executable bin/busybox: is it really ${DEMO_BUSYBOX_PACKAGE}?`,
    );
  });

  const out = join(work, 'out');
  await fs.mkdir(out);
  await fs.copyFile(join(kernelTree, 'boot', `vmlinuz-${release}`), join(out, 'vmlinuz'));

  const rootfs = join(work, 'rootfs');
  const modules = await stageRootfs(rootfs, { kernelTree, release, busybox, signal });
  const initrd = gzipSync(await newcArchive(rootfs, DEV_NODES), { level: 9 });
  await fs.writeFile(join(out, 'initrd.img'), initrd);
  log(`demo image: initrd ${initrd.length} bytes, ${modules.length} modules`);

  const disk = await buildBootDisk(work, join(out, 'vmlinuz'), join(out, 'initrd.img'), signal);
  await fs.rm(kernelTree, { recursive: true, force: true });

  const file = async (name: string): Promise<DemoImageFile> => {
    const data = await fs.readFile(join(out, name));
    return {
      path: `${DEMO_IMAGE_NAME}/${name}`,
      sha256: createHash('sha256').update(data).digest('hex'),
      sizeBytes: data.length,
    };
  };
  const manifest: DemoImageManifest = {
    name: DEMO_IMAGE_NAME,
    builderRevision: builderRevision(),
    kernel: { package: kernelPackage.name, version: kernelPackage.version, release },
    busybox: { package: DEMO_BUSYBOX_PACKAGE, version: busyboxVersion },
    defaultCmdline: DEMO_DEFAULT_CMDLINE,
    minMemoryMib: DEMO_MIN_MEMORY_MIB,
    files: {
      kernel: await file('vmlinuz'),
      initrd: await file('initrd.img'),
      disk: { ...(await file('demo-disk.qcow2')), format: 'qcow2', virtualSizeBytes: disk.virtualSizeBytes },
    },
    diskCmdline: DISK_CMDLINE,
    modules,
    builtAt: new Date().toISOString(),
  };
  // The manifest is written last: a directory with an image.json is complete.
  await fs.writeFile(join(out, MANIFEST), JSON.stringify(manifest, null, 2) + '\n');
  await fs.rename(out, join(work, 'demo'));
  return manifest;
}

/** linux-image-cloud-amd64 → linux-image-6.1.0-56-cloud-amd64 at apt's candidate version. */
async function resolveKernelPackage(signal?: AbortSignal): Promise<{ name: string; version: string }> {
  const meta = await aptShow(DEMO_KERNEL_METAPACKAGE, signal);
  const name = (meta.get('Depends') ?? '')
    .split(',')
    .map((d) => d.trim().split(/\s/)[0])
    .find((d) => /^linux-image-[0-9][\w.+-]*-cloud-amd64$/.test(d));
  if (!name) {
    throw new DemoImageError(
      `${DEMO_KERNEL_METAPACKAGE} does not depend on a versioned linux-image-*-cloud-amd64 package ` +
        `(Depends: ${meta.get('Depends') ?? 'none'}): check the apt sources`,
    );
  }
  return { name, version: await candidateVersion(name, signal) };
}

async function candidateVersion(pkg: string, signal?: AbortSignal): Promise<string> {
  const version = (await aptShow(pkg, signal)).get('Version');
  if (!version) throw new DemoImageError(`apt-cache show ${pkg} gave no Version`);
  return version;
}

async function aptShow(pkg: string, signal?: AbortSignal): Promise<Map<string, string>> {
  let stdout: string;
  try {
    stdout = await run('apt-cache', ['show', '--no-all-versions', pkg], { signal, timeoutMs: 60_000 });
  } catch (err) {
    if (err instanceof DemoImageError && /No packages found|Unable to locate|not found/i.test(err.message)) {
      throw new DemoImageError(
        `apt knows no package ${pkg}: the package lists are missing or stale. ` +
          `Run \`apt-get update\` (as root) and retry.\n${err.message}`,
      );
    }
    throw err;
  }
  const fields = new Map<string, string>();
  for (const line of stdout.split('\n')) {
    const m = /^([A-Za-z-]+): (.*)$/.exec(line);
    if (m && !fields.has(m[1])) fields.set(m[1], m[2]);
  }
  if (!fields.get('Package')) {
    throw new DemoImageError(`apt knows no package ${pkg}: run \`apt-get update\` (as root) and retry`);
  }
  return fields;
}

/** `<cacheDir>/debs/<name>_<version>_amd64.deb`, downloaded once with `apt-get download`. */
async function fetchDeb(
  name: string,
  version: string,
  cacheDir: string,
  signal: AbortSignal | undefined,
  log: (line: string) => void,
): Promise<string> {
  const debs = join(cacheDir, 'debs');
  const cached = join(debs, `${name}_${version.replace(/:/g, '%3a')}_amd64.deb`);
  if (await isDebOf(cached, name, version, signal)) return cached;
  await fs.mkdir(debs, { recursive: true });
  // A private download dir, then rename: concurrent builders never see each other's partial files.
  const tmp = await fs.mkdtemp(join(debs, '.download-'));
  try {
    log(`demo image: apt-get download ${name}=${version}`);
    try {
      await run('apt-get', ['download', '-q', `${name}=${version}`], {
        cwd: tmp,
        signal,
        timeoutMs: 600_000,
      });
    } catch (err) {
      const msg = err instanceof Error ? err.message : String(err);
      const hint = /Unable to locate|Can't find|has no installation candidate|404|Failed to fetch/i.test(msg)
        ? 'the package lists are missing or out of date: run `apt-get update` (as root) and retry'
        : 'check the network and apt sources (`apt-get update`)';
      throw new DemoImageError(`apt-get download ${name}=${version} failed: ${hint}.\n${msg}`);
    }
    const got = (await fs.readdir(tmp)).filter((f) => f.endsWith('.deb'));
    if (got.length !== 1) throw new DemoImageError(`apt-get download ${name} left ${got.length} .deb files`);
    await fs.rename(join(tmp, got[0]), cached);
  } finally {
    await fs.rm(tmp, { recursive: true, force: true });
  }
  if (!(await isDebOf(cached, name, version, signal))) {
    throw new DemoImageError(`${cached} is not ${name} ${version}: delete it and retry`);
  }
  return cached;
}

async function isDebOf(path: string, name: string, version: string, signal?: AbortSignal): Promise<boolean> {
  try {
    await fs.access(path);
  } catch {
    return false;
  }
  try {
    const out = await run('dpkg-deb', ['--showformat=${Package} ${Version}', '--show', path], {
      signal,
      timeoutMs: 30_000,
    });
    return out.trim() === `${name} ${version}`;
  } catch {
    return false;
  }
}

async function kernelRelease(kernelTree: string, pkg: string): Promise<string> {
  const boot = await fs.readdir(join(kernelTree, 'boot')).catch(() => [] as string[]);
  const vmlinuz = boot.find((f) => f.startsWith('vmlinuz-'));
  if (!vmlinuz) throw new DemoImageError(`${pkg} has no /boot/vmlinuz-*: is it a kernel image package?`);
  return vmlinuz.slice('vmlinuz-'.length);
}

// --- the initramfs ----------------------------------------------------------------------------------------

/** Nodes the kernel needs before devtmpfs is mounted (/dev/console for init's stdio). */
const DEV_NODES: NewcEntry[] = [
  { path: 'dev', mode: 0o040755 },
  { path: 'dev/console', mode: 0o020600, rdev: [5, 1] },
  { path: 'dev/null', mode: 0o020666, rdev: [1, 3] },
];

async function stageRootfs(
  rootfs: string,
  ctx: { kernelTree: string; release: string; busybox: string; signal?: AbortSignal },
): Promise<string[]> {
  const { kernelTree, release, busybox, signal } = ctx;
  for (const d of [
    'bin',
    'sbin',
    'usr/bin',
    'usr/sbin',
    'etc',
    'proc',
    'sys',
    'run',
    'tmp',
    'root',
    'www/cgi-bin',
  ]) {
    await fs.mkdir(join(rootfs, d), { recursive: true });
  }
  await fs.copyFile(busybox, join(rootfs, 'bin/busybox'));
  await fs.chmod(join(rootfs, 'bin/busybox'), 0o755);
  const applets = (await run(busybox, ['--list-full'], { signal, timeoutMs: 10_000 }))
    .split('\n')
    .filter(Boolean);
  for (const applet of applets) {
    if (applet === 'bin/busybox' || applet.includes('..')) continue;
    await fs.symlink('/bin/busybox', join(rootfs, applet)).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'EEXIST') throw err;
    });
  }
  const write = (path: string, text: string, mode: number) =>
    fs.writeFile(join(rootfs, path), text, { mode });
  await write('init', DEMO_INIT_SCRIPT, 0o755);
  await write('etc/udhcpc.script', DEMO_UDHCPC_SCRIPT, 0o755);
  await write('www/cgi-bin/status', DEMO_STATUS_CGI, 0o755);
  await write('etc/profile', DEMO_PROFILE, 0o644);
  await write('etc/passwd', 'root:x:0:0:root:/root:/bin/sh\n', 0o644);
  await write('etc/group', 'root:x:0:\n', 0o644);
  await write('etc/resolv.conf', '', 0o644);

  // The wanted modules and their dependencies, from a modules.dep of the whole package (it ships none).
  const kmods = join(kernelTree, 'lib/modules', release);
  await run(busybox, ['depmod', '-b', kernelTree, release], { signal, timeoutMs: 120_000 });
  const dep = new Map<string, string[]>();
  for (const line of (await fs.readFile(join(kmods, 'modules.dep'), 'utf8')).split('\n')) {
    const [mod, deps] = line.split(':');
    if (mod && deps !== undefined) dep.set(mod, deps.trim().split(/\s+/).filter(Boolean));
  }
  const byName = new Map<string, string>();
  for (const mod of dep.keys()) byName.set(modName(mod), mod);
  const wanted = new Set<string>();
  const add = (mod: string) => {
    if (wanted.has(mod)) return;
    wanted.add(mod);
    for (const d of dep.get(mod) ?? []) add(d);
  };
  for (const name of DEMO_MODULES) {
    const mod = byName.get(modName(name));
    if (!mod) {
      const builtin = await fs.readFile(join(kmods, 'modules.builtin'), 'utf8').catch(() => '');
      if (builtin.split('\n').some((m) => modName(m) === modName(name))) continue; // built in: nothing to ship
      throw new DemoImageError(`kernel ${release} has no module ${name}: the demo guest needs it`);
    }
    add(mod);
  }
  const shipped = [...wanted].sort();
  for (const mod of shipped) {
    await fs.mkdir(join(rootfs, 'lib/modules', release, mod, '..'), { recursive: true });
    await fs.copyFile(join(kmods, mod), join(rootfs, 'lib/modules', release, mod));
  }
  await run(busybox, ['depmod', '-b', rootfs, release], { signal, timeoutMs: 60_000 });
  return shipped.map((m) => modName(m));
}

function modName(path: string): string {
  return (path.split('/').pop() ?? '').replace(/\.ko(\.\w+)?$/, '').replace(/-/g, '_');
}

interface NewcEntry {
  path: string;
  mode: number;
  data?: Buffer;
  rdev?: [number, number];
}

/**
 * A cpio "newc" archive of `root` (plus synthetic entries), written here rather than by cpio(1) so device
 * nodes need no mknod (no root) and the archive is reproducible (sorted, mtime 0, owner root).
 */
async function newcArchive(root: string, extra: NewcEntry[]): Promise<Buffer> {
  const entries = new Map<string, NewcEntry>();
  for (const e of extra) entries.set(e.path, e);
  const walk = async (dir: string) => {
    for (const name of (await fs.readdir(dir)).sort()) {
      const abs = join(dir, name);
      const path = relative(root, abs);
      const st = await fs.lstat(abs);
      if (st.isDirectory()) {
        entries.set(path, { path, mode: 0o040000 | (st.mode & 0o7777) });
        await walk(abs);
      } else if (st.isSymbolicLink()) {
        entries.set(path, { path, mode: 0o120777, data: Buffer.from(await fs.readlink(abs)) });
      } else if (st.isFile()) {
        entries.set(path, { path, mode: 0o100000 | (st.mode & 0o7777), data: await fs.readFile(abs) });
      }
    }
  };
  await walk(root);
  const parts: Buffer[] = [];
  const pad = (n: number) => Buffer.alloc((4 - (n % 4)) % 4);
  let ino = 1;
  const push = (e: NewcEntry) => {
    const name = Buffer.from(e.path + '\0');
    const size = e.data?.length ?? 0;
    const fields = [
      ino++,
      e.mode,
      0,
      0,
      1,
      0,
      size,
      0,
      0,
      e.rdev?.[0] ?? 0,
      e.rdev?.[1] ?? 0,
      name.length,
      0,
    ];
    const header = Buffer.from('070701' + fields.map((f) => f.toString(16).padStart(8, '0')).join(''));
    parts.push(header, name, pad(header.length + name.length));
    if (e.data) parts.push(e.data, pad(size));
  };
  // Sorted paths put every directory before its contents.
  for (const [, e] of [...entries].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) push(e);
  push({ path: 'TRAILER!!!', mode: 0 });
  return Buffer.concat(parts);
}

// --- the boot disk ----------------------------------------------------------------------------------------

/** The disk's own command line: demo.disk=0 so the guest never writes TICKs over its boot sector. */
const DISK_CMDLINE = `${DEMO_DEFAULT_CMDLINE} demo.disk=0`;
const PART_START_SECTOR = 2048;

function syslinuxConfig(): string {
  // SERIAL: syslinux's one banner line on the serial console tells a disk boot from a kernel boot.
  return [
    'SERIAL 0 115200',
    'DEFAULT demo',
    'PROMPT 0',
    'TIMEOUT 0',
    'LABEL demo',
    '  KERNEL /vmlinuz',
    '  INITRD /initrd.img',
    `  APPEND ${DISK_CMDLINE}`,
    '',
  ].join('\n');
}

/**
 * MBR (syslinux mbr.bin + one active FAT16 partition at 1 MiB) → syslinux → vmlinuz + initrd.img, all
 * done on an image file through mtools: no loop devices, no mounts, no root needed.
 */
async function buildBootDisk(
  work: string,
  kernel: string,
  initrd: string,
  signal?: AbortSignal,
): Promise<{ virtualSizeBytes: number }> {
  const mbr = await fs.readFile(SYSLINUX_MBR).catch(() => {
    throw new DemoImageError(
      `${SYSLINUX_MBR} is missing: apt-get install -y syslinux-common syslinux mtools dosfstools`,
    );
  });
  const payload = (await fs.stat(kernel)).size + (await fs.stat(initrd)).size;
  const MiB = 1024 * 1024;
  // Room for the files, syslinux and FAT overhead; at least 32 MiB so mkfs picks FAT16.
  const partBytes = Math.max(32, Math.ceil((payload * 1.1 + 4 * MiB) / (8 * MiB)) * 8) * MiB;
  const partSectors = partBytes / 512;
  const raw = join(work, 'disk.raw');
  const diskBytes = PART_START_SECTOR * 512 + partBytes;
  await fs.writeFile(raw, Buffer.alloc(0));
  await fs.truncate(raw, diskBytes);

  await run(
    'mkfs.vfat',
    [
      '-F',
      '16',
      '-n',
      'FLOTILLA',
      `--offset=${PART_START_SECTOR}`,
      '-h',
      `${PART_START_SECTOR}`,
      raw,
      `${partBytes / 1024}`,
    ],
    { signal, timeoutMs: 60_000 },
  );
  const offsetBytes = `${PART_START_SECTOR * 512}`;
  const env = { ...process.env, MTOOLS_SKIP_CHECK: '1', MTOOLS_NO_VFAT: '' };
  await run('syslinux', ['--offset', offsetBytes, '--install', raw], { signal, timeoutMs: 60_000 });
  const cfg = join(work, 'syslinux.cfg');
  await fs.writeFile(cfg, syslinuxConfig());
  const fat = `${raw}@@${offsetBytes}`;
  await run('mcopy', ['-i', fat, kernel, '::vmlinuz'], { signal, timeoutMs: 60_000, env });
  await run('mcopy', ['-i', fat, initrd, '::initrd.img'], { signal, timeoutMs: 60_000, env });
  await run('mcopy', ['-i', fat, cfg, '::syslinux.cfg'], { signal, timeoutMs: 60_000, env });

  // MBR: boot code, one active partition (type 0x0e, FAT16 LBA), boot signature.
  const sector = Buffer.alloc(512);
  mbr.copy(sector, 0, 0, Math.min(mbr.length, 440));
  const entry = sector.subarray(446, 462);
  entry[0] = 0x80;
  entry.set([0xfe, 0xff, 0xff], 1); // CHS start: "use LBA"
  entry[4] = 0x0e;
  entry.set([0xfe, 0xff, 0xff], 5); // CHS end: "use LBA"
  entry.writeUInt32LE(PART_START_SECTOR, 8);
  entry.writeUInt32LE(partSectors, 12);
  sector[510] = 0x55;
  sector[511] = 0xaa;
  const fh = await fs.open(raw, 'r+');
  try {
    await fh.write(sector, 0, 512, 0);
  } finally {
    await fh.close();
  }

  const qcow2 = join(work, 'out', 'demo-disk.qcow2');
  await run('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, qcow2], { signal, timeoutMs: 120_000 });
  await fs.rm(raw, { force: true });
  return { virtualSizeBytes: diskBytes };
}

// --- publishing, locking, reading -------------------------------------------------------------------------

async function publish(work: string, target: string, catalogueDir: string): Promise<void> {
  const built = join(work, 'demo');
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      await fs.rename(built, target);
      return;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err;
    }
    // Someone else's image is there: keep it if it is current (we are the loser), else move it aside.
    if (await readMatchingManifest(catalogueDir)) return;
    const old = join(
      catalogueDir,
      `.${DEMO_IMAGE_NAME}.old-${process.pid}-${randomBytes(4).toString('hex')}`,
    );
    await fs.rename(target, old).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
    await fs.rm(old, { recursive: true, force: true });
  }
  throw new DemoImageError(`could not move the demo image into ${target}: something keeps replacing it`);
}

/** The manifest in `<catalogueDir>/demo/` if it was made by this builder and its files are all there. */
export async function readMatchingManifest(catalogueDir: string): Promise<DemoImageManifest | undefined> {
  let manifest: DemoImageManifest;
  try {
    manifest = JSON.parse(await fs.readFile(join(catalogueDir, DEMO_IMAGE_NAME, MANIFEST), 'utf8'));
  } catch {
    return undefined;
  }
  if (manifest?.name !== DEMO_IMAGE_NAME || manifest.builderRevision !== builderRevision()) return undefined;
  for (const f of [manifest.files?.kernel, manifest.files?.initrd, manifest.files?.disk]) {
    if (!f || typeof f.path !== 'string') return undefined;
    const st = await fs.stat(join(catalogueDir, f.path)).catch(() => undefined);
    if (!st || st.size !== f.sizeBytes) return undefined;
  }
  return manifest;
}

async function acquireLock(
  lock: string,
  signal: AbortSignal | undefined,
  log: (line: string) => void,
): Promise<() => Promise<void>> {
  const deadline = Date.now() + LOCK_WAIT_MS;
  let said = false;
  for (;;) {
    signal?.throwIfAborted();
    try {
      await fs.writeFile(lock, `${process.pid}\n`, { flag: 'wx' });
      return () => fs.rm(lock, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const [owner, st] = await Promise.all([
      fs.readFile(lock, 'utf8').catch(() => ''),
      fs.stat(lock).catch(() => undefined),
    ]);
    const pid = Number.parseInt(owner, 10);
    // A lock whose owner died (or that is absurdly old) is stale. An empty file is one being written.
    if ((pid > 0 && !isAlive(pid)) || (st && Date.now() - st.mtimeMs > LOCK_STALE_MS)) {
      await fs.rm(lock, { force: true });
      continue;
    }
    if (Date.now() > deadline) {
      throw new DemoImageError(
        `${lock} is held by process ${owner.trim() || '?'} for too long: delete it if that process is gone`,
      );
    }
    if (!said) log(`demo image: waiting for the builder holding ${lock} (pid ${owner.trim() || '?'})`);
    said = true;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Runs a program with an argument array (never a shell), a deadline and an abort signal; resolves stdout. */
function run(
  cmd: string,
  args: string[],
  opts: { timeoutMs: number; signal?: AbortSignal; cwd?: string; env?: NodeJS.ProcessEnv },
): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      cmd,
      args,
      {
        cwd: opts.cwd,
        env: opts.env,
        signal: opts.signal,
        timeout: opts.timeoutMs,
        killSignal: 'SIGKILL',
        maxBuffer: 16 * 1024 * 1024,
        encoding: 'utf8',
      },
      (err, stdout, stderr) => {
        if (!err) return resolve(stdout);
        const e = err as NodeJS.ErrnoException & { killed?: boolean; signal?: string };
        const shown = `${cmd} ${args.join(' ')}`;
        if (e.name === 'AbortError') return reject(err);
        if (e.code === 'ENOENT') {
          const pkg = TOOL_PACKAGES[cmd];
          return reject(
            new DemoImageError(
              `${cmd} is not installed${pkg ? `: apt-get install -y --no-install-recommends ${pkg}` : ''}`,
            ),
          );
        }
        if (e.killed || e.signal === 'SIGKILL') {
          return reject(new DemoImageError(`${shown} took longer than ${opts.timeoutMs} ms and was killed`));
        }
        const tail = `${stderr}`.trim().split('\n').slice(-8).join('\n');
        reject(new DemoImageError(`${shown} failed (${e.code ?? e.signal}): ${tail || 'no output'}`));
      },
    );
  });
}
