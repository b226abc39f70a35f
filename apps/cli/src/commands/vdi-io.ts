import { randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { CommandContext } from '../context';
import { CliError, ExitCode } from '../errors';
import { bytesBar, fractionBar } from '../progress';
import { findVdi } from '../resolve';
import { formatBytes } from '../size';
import {
  defaultExportName,
  diskFormat,
  downloadImage,
  sha256OfFile,
  uploadImage,
  type FormatName,
} from '../vdi-transfer';
import { finish, srId } from './vdi-common';

interface ImportOptions {
  sr: string;
  format: FormatName;
  name?: string;
  checksum: boolean;
  sharable?: boolean;
  description?: string;
  label?: Record<string, string>;
  requestId?: string;
  wait: boolean;
}

/** Ctrl-C while bytes move cancels the call (the server removes what it made); returns the signal. */
function interruptible(): { signal: AbortSignal; release(): void } {
  const controller = new AbortController();
  const interrupt = () => controller.abort();
  process.once('SIGINT', interrupt);
  return { signal: controller.signal, release: () => process.removeListener('SIGINT', interrupt) };
}

/** `vdi import`: pre-pass SHA-256, streamed upload, then the import operation (inspection, conversion). */
export async function importVdi(ctx: CommandContext, file: string, o: ImportOptions): Promise<void> {
  const stat = await fs.promises.stat(file).catch(() => undefined);
  if (!stat?.isFile())
    throw new CliError(`${file} is not a regular file (an import sends its size first)`, ExitCode.Usage);
  const cloud = ctx.cloud();
  const sr = await srId(cloud, o.sr);
  const name = o.name ?? path.basename(file);
  const { signal, release } = interruptible();
  try {
    let sha256 = '';
    if (o.checksum) {
      const bar = bytesBar(ctx.out, `sha256 ${path.basename(file)}`, stat.size);
      try {
        sha256 = await sha256OfFile(file, { onProgress: (b) => bar.update(b), signal });
      } catch (e) {
        if (signal.aborted) throw new CliError('import cancelled before the upload', ExitCode.Interrupted);
        throw e;
      } finally {
        bar.stop();
      }
    }
    const bar = bytesBar(ctx.out, `upload ${path.basename(file)}`, stat.size);
    let response;
    try {
      response = await uploadImage({
        client: cloud.vdis.raw,
        metadata: cloud.authMetadata(),
        header: {
          requestId: o.requestId ?? `cli-${randomUUID()}`,
          srId: sr,
          name,
          description: o.description ?? '',
          labels: o.label ?? {},
          format: diskFormat(o.format),
          sizeBytes: stat.size,
          sha256,
          sourceUrl: '',
          sharable: Boolean(o.sharable),
        },
        file,
        onProgress: (b) => bar.update(b),
        signal,
      });
    } finally {
      bar.stop();
    }
    if (!ctx.out.json && ctx.out.interactive)
      ctx.out.note(`uploaded ${formatBytes(stat.size)}; the server now inspects and converts the image`);
    release();
    await finish(ctx, cloud, response, response.vdi?.id, o.wait);
  } finally {
    release();
  }
}

interface ExportOptions {
  format: Exclude<FormatName, 'vhd'>;
  output?: string;
  compress?: boolean;
  force?: boolean;
}

/** `vdi export`: staging progress, then the bytes into a temporary file, verified, renamed into place. */
export async function exportVdi(ctx: CommandContext, ref: string, o: ExportOptions): Promise<void> {
  if (o.compress && o.format !== 'qcow2')
    throw new CliError('--compress applies to --format qcow2 only', ExitCode.Usage);
  const cloud = ctx.cloud();
  const vdi = await findVdi(cloud, ref);
  const out = path.resolve(o.output ?? defaultExportName(vdi.name, o.format));
  const { signal, release } = interruptible();
  let staging: ReturnType<typeof fractionBar> | undefined;
  let bar: ReturnType<typeof bytesBar> | undefined;
  try {
    const done = await downloadImage({
      client: cloud.vdis.raw,
      metadata: cloud.authMetadata(),
      request: { id: vdi.id, format: diskFormat(o.format), compress: Boolean(o.compress) },
      out,
      overwrite: Boolean(o.force),
      onStaging: (f) => {
        staging ??= fractionBar(ctx.out, `staging ${o.format}`);
        staging.update(f);
      },
      onHeader: (h) => {
        staging?.stop();
        bar = bytesBar(ctx.out, `export ${vdi.name}`, h.sizeBytes);
      },
      onProgress: (b) => bar?.update(b),
      signal,
    });
    bar?.stop();
    if (ctx.out.json)
      return ctx.out.printJson({
        path: done.path,
        sizeBytes: done.bytes,
        sha256: done.sha256,
        header: done.header,
      });
    ctx.out.line(`${done.path}  ${formatBytes(done.bytes)}  sha256 ${done.sha256}`);
  } finally {
    staging?.stop();
    bar?.stop();
    release();
  }
}
