import { Command, Option } from 'commander';
import { randomUUID } from 'node:crypto';
import * as path from 'node:path';
import { status } from '@grpc/grpc-js';
import { storageV1 } from '@flotilla/contracts';
import { collectKeyValues, intInRange } from '../args';
import type { Cloud } from '../cloud';
import { action, type CommandContext } from '../context';
import { CliError, ExitCode } from '../errors';
import { age, labels, mebibytes, timestamp, word } from '../format';
import { settle } from '../operations';
import { defaultSrLabel, findDefaultSr } from '../default-sr';
import { bytesBar } from '../progress';
import { configPath, readConfig } from '../profile';
import { uploadImage } from '../vdi-transfer';
import { listWith, noteMore, withListOptions, type ListOptions } from './list-options';

const { ImageVisibility } = storageV1;
type Image = storageV1.Image;

interface RegisterOptions {
  kernel: string;
  initrd?: string;
  cmdline?: string;
  sha256?: string;
  initrdSha256?: string;
  private?: boolean;
  description?: string;
  osType?: string;
  architecture?: string;
  minMemoryMib?: number;
  label?: Record<string, string>;
  requestId?: string;
}

interface BuildDemoOptions {
  catalogueDir?: string;
  cacheDir?: string;
  force?: boolean;
  register: boolean;
}

export function imageCommand(): Command {
  const image = new Command('image').description(
    'the image catalogue: what VMs boot (`flotilla vm create --image <name>`)',
  );
  withListOptions(
    image.command('list').description("list the PUBLIC images and your tenant's PRIVATE ones"),
    'fields: name, kind (KERNEL, DISK), visibility (PUBLIC, PRIVATE), state, os_type, architecture, label.<key>',
  ).action(action(listImages));

  image
    .command('show')
    .description('show one image (host paths only for pool-operator and above)')
    .argument('<image>', 'image id or name')
    .action(action(showImage));

  image
    .command('register')
    .description(
      "register a KERNEL image whose files are installed under every host's catalogue directory (FLOTILLA_IMAGE_DIR); pool-admin only",
    )
    .argument('<name>', "1..63 lowercase letters, digits, '-' or '.'; starts with a letter or digit")
    .requiredOption('--kernel <path>', 'kernel file, relative to the catalogue directory (e.g. demo/vmlinuz)')
    .option('--initrd <path>', 'initrd file, relative to the catalogue directory')
    .option('--cmdline <text>', 'default kernel command line (a VM may give its own)')
    .option('--sha256 <hex>', "the kernel's SHA-256: hosts refuse a kernel that differs")
    .option('--initrd-sha256 <hex>', "the initrd's SHA-256")
    .option('--private', "visible to your tenant only (default: PUBLIC, every tenant's VMs may boot it)")
    .option('--description <text>', 'what the image is')
    .option('--os-type <os>', 'e.g. linux', 'linux')
    .option('--architecture <arch>', 'e.g. x86_64', 'x86_64')
    .option('--min-memory-mib <mib>', 'smallest memory the image boots with', intInRange(0, 4 * 1024 * 1024))
    .option('--label <key=value>', 'label the image (repeatable)', collectKeyValues)
    .option(
      '--request-id <id>',
      'idempotency key: repeating the command with the same id returns the first result (default: a new random id)',
    )
    .action(action(registerImage));

  image
    .command('delete')
    .description('deregister an image: running VMs keep running; VMs that name it cannot start again')
    .argument('<image>', 'image id or name')
    .option(
      '--etag <etag>',
      'only if the image is still at this etag (from `image show --json`); exit 3 if not',
    )
    .action(action(deleteImage));

  image
    .command('build-demo')
    .description(
      'build the demo guest appliance (Debian cloud kernel + busybox initramfs, from Debian packages) into the ' +
        'local cloud\'s catalogue directory and register it as the PUBLIC KERNEL image "demo", and its boot disk ' +
        'as the PUBLIC DISK image "demo-disk" (pool-admin)',
    )
    .addOption(
      new Option(
        '--catalogue-dir <dir>',
        "the hosts' image catalogue directory (default: the one `flotilla up` wrote to the profile: <data dir>/images)",
      ).env('FLOTILLA_IMAGE_DIR'),
    )
    .option(
      '--cache-dir <dir>',
      'where downloaded .deb packages are kept (default: $FLOTILLA_CACHE_DIR or ~/.cache/flotilla)',
    )
    .option('--force', 'rebuild even when an image built from the same packages is there')
    .option('--no-register', 'only build the files; do not touch the catalogue')
    .addHelpText(
      'after',
      `
Then, when the pool serves storage, the demo's boot disk (demo/demo-disk.qcow2) is imported into the
default SR and registered as the PUBLIC DISK image "demo-disk" (left as it is when an image of the same
file is there): \`flotilla vm create <name> --flavor m1.tiny --image demo-disk --disk-size 1G\` boots it
from a disk.

The build is cached: a second run only reads demo/image.json. When an image "demo" is already registered
with the same files (SHA-256 of kernel and initrd) and command line, it is left as it is; when it differs
(a rebuild rewrote the files at the same paths), it is replaced: deregistered, then registered again.
On a pool of several machines, copy <catalogue dir>/demo to every host's FLOTILLA_IMAGE_DIR.`,
    )
    .action(action(buildDemo));
  return image;
}

const kind = (i: Pick<Image, 'kind'>) => word(i.kind, 'IMAGE_KIND_');
const visibility = (i: Pick<Image, 'visibility'>) => word(i.visibility, 'IMAGE_VISIBILITY_');
const state = (i: Pick<Image, 'state' | 'stateReason'>) =>
  word(i.state, 'IMAGE_STATE_') + (i.stateReason ? ` (${i.stateReason})` : '');

async function listImages(ctx: CommandContext, o: ListOptions): Promise<void> {
  const cloud = ctx.cloud();
  const page = await listWith(o, async (p) => {
    const res = await cloud.images.call.listImages({ page: p });
    return { items: res.images, nextPageToken: res.nextPageToken };
  });
  if (ctx.out.json) return ctx.out.printJson({ images: page.items, nextPageToken: page.nextPageToken });
  ctx.out.table(
    ['NAME', 'ID', 'KIND', 'VISIBILITY', 'STATE', 'OS', 'ARCH', 'MIN MEMORY', 'AGE'],
    page.items.map((i) => [
      i.name,
      i.id,
      kind(i),
      visibility(i),
      state(i),
      i.osType,
      i.architecture,
      i.minMemoryMib ? mebibytes(i.minMemoryMib) : '',
      age(i.createdAt),
    ]),
    'no images (build the demo guest with `flotilla image build-demo`)',
  );
  noteMore(ctx.out, page);
}

async function showImage(ctx: CommandContext, ref: string): Promise<void> {
  const { image } = await ctx.cloud().images.call.getImage({ id: ref });
  if (ctx.out.json) return ctx.out.printJson({ image });
  if (image) printImage(ctx, image);
}

function printImage(ctx: CommandContext, i: Image): void {
  ctx.out.details([
    ['name', i.name],
    ['id', i.id],
    ['kind', kind(i)],
    ['visibility', visibility(i)],
    ['tenant', i.tenantId],
    ['state', state(i)],
    ['description', i.description],
    ['os', [i.osType, i.architecture].filter(Boolean).join(' ')],
    ['min memory', i.minMemoryMib ? mebibytes(i.minMemoryMib) : ''],
    ['kernel', i.kernelPath],
    ['initrd', i.initrdPath],
    ['cmdline', i.cmdline],
    ['sha256', i.sha256],
    ['initrd sha256', i.initrdSha256],
    ['labels', labels(i.labels)],
    ['etag', i.etag],
    ['created', timestamp(i.createdAt)],
    ['updated', timestamp(i.updatedAt)],
  ]);
}

function kernelRequest(
  name: string,
  o: RegisterOptions & { minMemoryMib?: number },
): storageV1.RegisterImageRequest {
  return {
    requestId: o.requestId ?? `cli-${randomUUID()}`,
    name,
    description: o.description ?? '',
    labels: o.label ?? {},
    visibility: o.private
      ? ImageVisibility.IMAGE_VISIBILITY_PRIVATE
      : ImageVisibility.IMAGE_VISIBILITY_PUBLIC,
    osType: o.osType ?? '',
    architecture: o.architecture ?? '',
    minDiskBytes: 0,
    minMemoryMib: o.minMemoryMib ?? 0,
    sha256: o.sha256 ?? '',
    srId: '',
    kernel: {
      kernelPath: o.kernel,
      initrdPath: o.initrd ?? '',
      cmdline: o.cmdline ?? '',
      initrdSha256: o.initrdSha256 ?? '',
    },
  };
}

async function registerImage(ctx: CommandContext, name: string, o: RegisterOptions): Promise<void> {
  const cloud = ctx.cloud();
  const response = await cloud.images.call.registerImage(kernelRequest(name, o));
  // KERNEL registrations finish in the call; settle() also covers operations that run on (DISK, later).
  const operation = await settle(cloud, ctx.out, response, { wait: true });
  const image = (await cloud.images.call.getImage({ id: response.image?.id || name })).image;
  if (ctx.out.json) return ctx.out.printJson({ image, operation });
  if (image) printImage(ctx, image);
}

async function deleteImage(ctx: CommandContext, ref: string, o: { etag?: string }): Promise<void> {
  const cloud = ctx.cloud();
  // The name is resolved first so the message names the image whichever way it was given.
  const { image } = await cloud.images.call.getImage({ id: ref });
  const res = await cloud.images.call.deregisterImage({ id: image?.id ?? ref, etag: o.etag ?? '' });
  if (ctx.out.json) return ctx.out.printJson(res);
  ctx.out.line(`image ${image?.name ?? ref} deleted`);
}

/** --catalogue-dir (or FLOTILLA_IMAGE_DIR), else the directory `flotilla up` wrote to the profile in use. */
function catalogueDirFor(ctx: CommandContext, o: BuildDemoOptions): string {
  if (o.catalogueDir) return path.resolve(o.catalogueDir);
  const file = configPath();
  const { profile } = ctx.connection();
  const imageDir = profile ? readConfig(file).profiles[profile]?.imageDir : undefined;
  if (imageDir) return imageDir;
  throw new CliError(
    `no catalogue directory: ${profile ? `profile "${profile}"` : 'no profile'} in ${file} names none ` +
      "(`flotilla up` writes it); pass --catalogue-dir <the hosts' FLOTILLA_IMAGE_DIR>",
    ExitCode.Usage,
  );
}

type Outcome = 'registered' | 'unchanged' | 'replaced';

async function buildDemo(ctx: CommandContext, o: BuildDemoOptions): Promise<void> {
  const catalogueDir = catalogueDirFor(ctx, o);
  // Loaded here: the builder (and its QEMU helpers) costs nothing to the other commands.
  const { buildDemoImage, DEMO_IMAGE_NAME, DemoImageError } = await import('@flotilla/hypervisor');
  ctx.out.note(`building the demo guest into ${catalogueDir}`);
  let manifest;
  try {
    manifest = await buildDemoImage({
      catalogueDir,
      cacheDir: o.cacheDir ? path.resolve(o.cacheDir) : undefined,
      force: o.force,
      log: (line) => ctx.out.note(`  ${line}`),
    });
  } catch (e) {
    if (e instanceof DemoImageError) throw new CliError(e.message, ExitCode.Other);
    throw e;
  }
  const { kernel, initrd } = manifest.files;
  ctx.out.note(
    `demo guest ready: kernel ${manifest.kernel.version}, ${kernel.path} (sha256 ${kernel.sha256.slice(0, 12)}…), ${initrd.path}`,
  );
  if (!o.register) {
    if (ctx.out.json) return ctx.out.printJson({ manifest, catalogueDir });
    return ctx.out.line(`${path.join(catalogueDir, DEMO_IMAGE_NAME)} (not registered: --no-register)`);
  }
  const wanted = kernelRequest(DEMO_IMAGE_NAME, {
    kernel: kernel.path,
    initrd: initrd.path,
    cmdline: manifest.defaultCmdline,
    sha256: kernel.sha256,
    initrdSha256: initrd.sha256,
    description: `Flotilla demo guest: Debian ${manifest.kernel.package} ${manifest.kernel.version} + busybox ${manifest.busybox.version}`,
    osType: 'linux',
    architecture: 'x86_64',
    minMemoryMib: manifest.minMemoryMib,
    label: { 'flotilla.io/builder-revision': manifest.builderRevision },
    // The same build always asks with the same id, so a retried registration returns the first result.
    requestId: `build-demo-${kernel.sha256.slice(0, 16)}-${initrd.sha256.slice(0, 16)}`,
  });
  const cloud = ctx.cloud();
  const { image, outcome } = await registerDemo(cloud, wanted);
  const disk = await registerDemoDisk(ctx, cloud, {
    file: path.join(catalogueDir, manifest.files.disk.path),
    sha256: manifest.files.disk.sha256,
    sizeBytes: manifest.files.disk.sizeBytes,
    virtualSizeBytes: manifest.files.disk.virtualSizeBytes,
    minMemoryMib: manifest.minMemoryMib,
    description: `Flotilla demo guest as a boot disk (SeaBIOS, syslinux): Debian ${manifest.kernel.package} ${manifest.kernel.version}`,
  });
  if (ctx.out.json) return ctx.out.printJson({ image, outcome, diskImage: disk, manifest, catalogueDir });
  ctx.out.line(
    `image ${DEMO_IMAGE_NAME} ${outcome === 'unchanged' ? 'already registered with these files' : outcome}: ` +
      `boot it with \`flotilla vm create <name> --flavor m1.tiny --image ${DEMO_IMAGE_NAME}\``,
  );
  if ('image' in disk)
    ctx.out.line(
      `image ${demoDiskName} ${disk.outcome === 'unchanged' ? 'already registered with this disk' : disk.outcome}: ` +
        `boot it from a disk with \`flotilla vm create <name> --flavor m1.tiny --image ${demoDiskName} --disk-size 1G\``,
    );
  else ctx.out.note(`image ${demoDiskName}: skipped (${disk.skipped})`);
}

/** Leaves a matching "demo" as it is, replaces a different one, registers a missing one. */
async function registerDemo(
  cloud: Cloud,
  wanted: storageV1.RegisterImageRequest,
): Promise<{ image: Image | undefined; outcome: Outcome }> {
  const current = await getIfExists(cloud, wanted.name);
  if (current && sameContent(current, wanted)) return { image: current, outcome: 'unchanged' };
  if (current) {
    // The etag makes a concurrent change win: this run stops with exit 3 instead of deleting it.
    await cloud.images.call.deregisterImage({ id: current.id, etag: current.etag });
  }
  const { image } = await cloud.images.call.registerImage(wanted);
  return { image, outcome: current ? 'replaced' : 'registered' };
}

async function getIfExists(cloud: Cloud, name: string): Promise<Image | undefined> {
  try {
    return (await cloud.images.call.getImage({ id: name })).image;
  } catch (e) {
    if ((e as { code?: number }).code === status.NOT_FOUND) return undefined;
    throw e;
  }
}

function sameContent(image: Image, wanted: storageV1.RegisterImageRequest): boolean {
  const k = wanted.kernel;
  if (!k) return false;
  return (
    image.kind === storageV1.ImageKind.IMAGE_KIND_KERNEL &&
    image.visibility === wanted.visibility &&
    image.sha256 === wanted.sha256 &&
    image.initrdSha256 === k.initrdSha256 &&
    image.cmdline === k.cmdline &&
    // Host paths are shown to pool-operator and above; a caller who cannot see them cannot compare them.
    (!image.kernelPath || (image.kernelPath === k.kernelPath && image.initrdPath === k.initrdPath))
  );
}

/** The DISK image of the demo guest: its boot disk, imported into the default SR. */
export const demoDiskName = 'demo-disk';
/** The SHA-256 of the qcow2 file a DISK image was imported from (the image's own sha256 is of its content). */
const sourceShaLabel = 'flotilla.io/source-sha256';

type DiskOutcome = { image: Image | undefined; outcome: Outcome } | { skipped: string };

/**
 * Imports the demo's boot disk into the default SR and registers it as the PUBLIC DISK image "demo-disk".
 * Idempotent: an image of the same file (by its source SHA-256 label) is left as it is; one of another
 * file is replaced. The imported VDI is only the source of the image's own base copy, so it is destroyed
 * once the image is registered. Skipped, with the reason, when the storage service does not serve SRs yet
 * or there is no default SR.
 */
async function registerDemoDisk(
  ctx: CommandContext,
  cloud: Cloud,
  disk: {
    file: string;
    sha256: string;
    sizeBytes: number;
    virtualSizeBytes: number;
    minMemoryMib: number;
    description: string;
  },
): Promise<DiskOutcome> {
  const unimplemented = (e: unknown) => (e as { code?: number }).code === status.UNIMPLEMENTED;
  let sr;
  try {
    sr = await findDefaultSr(cloud);
  } catch (e) {
    if (unimplemented(e)) return { skipped: 'the storage service does not serve SRs yet' };
    throw e;
  }
  if (!sr)
    return {
      skipped: `no default SR (\`flotilla up\` creates "local"; or label one ${defaultSrLabel}=true)`,
    };
  const current = await getIfExists(cloud, demoDiskName);
  if (current && current.labels?.[sourceShaLabel] === disk.sha256)
    return { image: current, outcome: 'unchanged' };
  ctx.out.note(`importing ${disk.file} into SR ${sr.name}`);
  const bar = bytesBar(ctx.out, `upload ${path.basename(disk.file)}`, disk.sizeBytes);
  let imported;
  try {
    imported = await uploadImage({
      client: cloud.vdis.raw,
      metadata: cloud.authMetadata(),
      header: {
        // Not a fixed id: the VDI of an earlier run is destroyed, and a repeat would return it.
        requestId: `cli-${randomUUID()}`,
        srId: sr.id,
        name: `${demoDiskName} (import)`,
        description: 'source of the demo-disk image; build-demo destroys it once the image is registered',
        labels: { [sourceShaLabel]: disk.sha256 },
        format: storageV1.DiskFormat.DISK_FORMAT_QCOW2,
        sizeBytes: disk.sizeBytes,
        sha256: disk.sha256,
        sourceUrl: '',
        sharable: false,
      },
      file: disk.file,
      onProgress: (b) => bar.update(b),
    });
  } catch (e) {
    if (unimplemented(e)) return { skipped: 'the storage service does not import disks yet' };
    throw e;
  } finally {
    bar.stop();
  }
  const source = await settle(cloud, ctx.out, imported, { wait: true });
  const vdiId = source?.result?.vdi_id || imported.vdi?.id || '';
  if (current) await cloud.images.call.deregisterImage({ id: current.id, etag: current.etag });
  const registered = await cloud.images.call.registerImage({
    requestId: `build-demo-disk-${disk.sha256.slice(0, 32)}`,
    name: demoDiskName,
    description: disk.description,
    labels: { [sourceShaLabel]: disk.sha256 },
    visibility: ImageVisibility.IMAGE_VISIBILITY_PUBLIC,
    osType: 'linux',
    architecture: 'x86_64',
    minDiskBytes: disk.virtualSizeBytes,
    minMemoryMib: disk.minMemoryMib,
    sha256: '',
    srId: sr.id,
    vdiId,
  });
  await settle(cloud, ctx.out, registered, { wait: true });
  // The image holds its own base copy now; the imported source would only take space.
  const destroyed = await cloud.vdis.call.destroyVdi({
    id: vdiId,
    requestId: `cli-${randomUUID()}`,
    etag: '',
  });
  if (destroyed.operation) await settle(cloud, ctx.out, destroyed, { wait: true });
  const image = (await cloud.images.call.getImage({ id: demoDiskName })).image;
  return { image, outcome: current ? 'replaced' : 'registered' };
}
