import { randomUUID } from 'node:crypto';
import { storageV1 } from '@flotilla/contracts';
import type { Logger } from '@flotilla/platform';
import { listAllImages } from '../compat/list-all';
import type { PoolApi } from '../compat/pool-api';
import { OpenStackError, notFound } from './errors';
import {
  exportFormats,
  glanceVersions,
  imageDocument,
  importFormats,
  QueuedImage,
  queuedDocument,
} from './glance-documents';
import { storeImageData } from './glance-upload';
import { pageAfter, parseLimit } from './paging';
import { diskFormatLabel, glanceIdOf } from './pool-lists';
import { AuthedCtx, isObject, isUuid, json, readJson, Reply } from './request';
import { exportVdi } from './vdi-streams';

export interface GlanceOptions {
  pool: PoolApi;
  publicUrl: string;
  logger: Logger;
  /** Largest upload spooled to a temporary file when the client sends no Content-Length (chunked). */
  spoolLimitBytes?: number;
}

const imageNamePattern = /^[a-z0-9][a-z0-9.-]{0,62}$/;

/**
 * Glance v2 over the pool's image catalogue. An image made with POST /v2/images is "queued" until its
 * data arrives: such records live only in this gateway's memory (a restart forgets queued images that
 * never got data; clients upload right after creating). PUT …/file imports the bytes as a VDI in the
 * default SR, registers it as a PRIVATE DISK image labelled with the Glance id, and destroys the import.
 */
export class Glance {
  private readonly queued = new Map<string, QueuedImage>();

  constructor(private readonly o: GlanceOptions) {}

  /** Forgets queued images (the front is going away). */
  close(): void {
    this.queued.clear();
  }

  versions() {
    return glanceVersions(`${this.o.publicUrl.replace(/\/+$/, '')}/image`);
  }

  async handle(ctx: AuthedCtx): Promise<Reply | undefined> {
    const [collection, id, sub, ...rest] = ctx.segments;
    const m = ctx.method === 'HEAD' ? 'GET' : ctx.method;
    const notAllowed = () =>
      new OpenStackError(405, `The method ${ctx.method} is not allowed for this resource.`);
    if (collection === 'schemas')
      throw new OpenStackError(501, 'Glance schemas are not served by this cloud.');
    if (collection !== 'images' || rest.length > 0) throw notFound('The resource could not be found.');
    if (id === undefined) {
      if (m === 'GET') return this.list(ctx);
      if (m === 'POST') return this.create(ctx);
      throw notAllowed();
    }
    if (sub === undefined) {
      if (m === 'GET') return json(200, await this.show(ctx, id));
      if (m === 'DELETE') return this.remove(ctx, id);
      if (m === 'PATCH')
        throw new OpenStackError(501, 'Updating image properties is not supported by this cloud.');
      throw notAllowed();
    }
    if (sub === 'file') {
      if (m === 'PUT') return this.upload(ctx, id);
      if (m === 'GET') return this.download(ctx, id);
      throw notAllowed();
    }
    throw notFound('The resource could not be found.');
  }

  private call(ctx: AuthedCtx) {
    return this.o.pool.as(ctx.identity.principal, ctx.requestId);
  }

  private queuedOf(ctx: AuthedCtx): QueuedImage[] {
    return [...this.queued.values()].filter((q) => q.tenantId === ctx.identity.principal.tenantId);
  }

  private async list(ctx: AuthedCtx): Promise<Reply> {
    const q = ctx.query;
    const limit = parseLimit(q.get('limit'), { max: 1000, fallback: 25 });
    const filters: Array<[string, string]> = [];
    for (const key of ['name', 'visibility', 'status', 'disk_format', 'container_format', 'owner', 'id']) {
      const v = q.get(key);
      if (v !== null) filters.push([key, v]);
    }
    const images = await listAllImages(this.o.pool, this.call(ctx));
    const docs: Array<Record<string, unknown>> = [
      ...this.queuedOf(ctx).map(queuedDocument),
      ...images.map(imageDocument),
    ];
    const visible = docs
      .filter((d) => filters.every(([k, v]) => (k === 'visibility' && v === 'all') || String(d[k]) === v))
      .sort(
        (a, b) =>
          String(b.created_at).localeCompare(String(a.created_at)) ||
          String(a.id).localeCompare(String(b.id)),
      );
    const { page, nextMarker } = pageAfter(visible, (d) => String(d.id), { limit, marker: q.get('marker') });
    const body: Record<string, unknown> = { images: page, first: '/v2/images', schema: '/v2/schemas/images' };
    if (nextMarker) {
      const next = new URLSearchParams(q);
      next.set('marker', nextMarker);
      next.set('limit', String(limit));
      body.next = `/v2/images?${next.toString()}`;
    }
    return json(200, body);
  }

  private async find(
    ctx: AuthedCtx,
    id: string,
  ): Promise<{ queued: QueuedImage; image?: undefined } | { queued?: undefined; image: storageV1.Image }> {
    const missing = () => notFound(`No image found with ID ${id}`);
    if (!isUuid(id)) throw missing();
    const queued = this.queued.get(id);
    if (queued && queued.tenantId === ctx.identity.principal.tenantId) return { queued };
    const image = (await listAllImages(this.o.pool, this.call(ctx))).find((i) => glanceIdOf(i) === id);
    if (!image) throw missing();
    return { image };
  }

  private async show(ctx: AuthedCtx, id: string) {
    const { queued, image } = await this.find(ctx, id);
    return queued ? queuedDocument(queued) : imageDocument(image);
  }

  private async create(ctx: AuthedCtx): Promise<Reply> {
    const body = await readJson(ctx.req);
    if (!isObject(body))
      throw new OpenStackError(400, 'The request body must be a JSON object of image properties.');
    const id = typeof body.id === 'string' ? body.id : randomUUID();
    if (!isUuid(id)) throw new OpenStackError(400, `Invalid id ${id}: an image id is a UUID.`);
    const name = body.name === undefined || body.name === null ? `image-${id.slice(0, 8)}` : body.name;
    if (typeof name !== 'string' || !imageNamePattern.test(name))
      throw new OpenStackError(
        400,
        `Invalid name ${JSON.stringify(name)}: image names here are 1 to 63 lowercase letters, digits, '-' or '.', starting with a letter or digit.`,
      );
    const diskFormat = body.disk_format ?? null;
    if (diskFormat !== null && (typeof diskFormat !== 'string' || !(diskFormat in importFormats)))
      throw new OpenStackError(
        400,
        `Invalid disk_format ${JSON.stringify(diskFormat)}: use raw, qcow2, vmdk or vhd.`,
      );
    const containerFormat = body.container_format ?? null;
    if (containerFormat !== null && containerFormat !== 'bare')
      throw new OpenStackError(
        400,
        `Invalid container_format ${JSON.stringify(containerFormat)}: only bare is supported.`,
      );
    const visibility = body.visibility ?? 'private';
    if (visibility !== 'private' && visibility !== 'public')
      throw new OpenStackError(
        400,
        `Invalid visibility ${JSON.stringify(visibility)}: use private or public.`,
      );
    const taken =
      this.queued.has(id) ||
      (await listAllImages(this.o.pool, this.call(ctx))).some((i) => glanceIdOf(i) === id);
    if (taken) throw new OpenStackError(409, `An image with identifier ${id} already exists`);
    const record: QueuedImage = {
      id,
      tenantId: ctx.identity.principal.tenantId,
      name,
      diskFormat: diskFormat as string | null,
      containerFormat: containerFormat as string | null,
      visibility,
      minDisk: nonNegative(body.min_disk, 'min_disk'),
      minRam: nonNegative(body.min_ram, 'min_ram'),
      status: 'queued',
      createdAt: new Date(),
    };
    this.queued.set(id, record);
    return json(201, queuedDocument(record), {
      location: `${this.o.publicUrl.replace(/\/+$/, '')}/image/v2/images/${id}`,
    });
  }

  private async remove(ctx: AuthedCtx, id: string): Promise<Reply> {
    const { queued, image } = await this.find(ctx, id);
    if (queued) {
      if (queued.status === 'saving')
        throw new OpenStackError(409, `Image ${id} is being uploaded: delete it once the upload ends.`);
      this.queued.delete(id);
    } else await this.o.pool.images.call.deregisterImage({ id: image.id, etag: '' }, this.call(ctx));
    return json(204);
  }

  private async upload(ctx: AuthedCtx, id: string): Promise<Reply> {
    const { queued } = await this.find(ctx, id);
    if (!queued)
      throw new OpenStackError(409, `Image ${id} already has data: its status is active, not queued.`);
    if (queued.status === 'saving') throw new OpenStackError(409, `Image ${id} is already being uploaded.`);
    if (!queued.diskFormat || !queued.containerFormat)
      throw new OpenStackError(
        400,
        'Properties disk_format and container_format must be set prior to uploading data.',
      );
    queued.status = 'saving';
    try {
      await storeImageData({
        pool: this.o.pool,
        call: this.call(ctx),
        logger: this.o.logger,
        image: { ...queued, diskFormat: queued.diskFormat },
        req: ctx.req,
        spoolLimitBytes: this.o.spoolLimitBytes,
      });
      this.queued.delete(id);
      return json(204);
    } catch (e) {
      queued.status = 'queued';
      throw e;
    }
  }

  private async download(ctx: AuthedCtx, id: string): Promise<Reply | undefined> {
    const { queued, image } = await this.find(ctx, id);
    // Glance answers 204 for an image without data.
    if (queued) return json(204);
    if (image.kind === storageV1.ImageKind.IMAGE_KIND_KERNEL)
      throw new OpenStackError(
        409,
        `Image ${id} is a KERNEL image: its kernel and initrd are files on the hosts, not image data this API serves.`,
      );
    const formatName = image.labels?.[diskFormatLabel] ?? 'qcow2';
    const format = exportFormats[formatName];
    if (!format)
      throw new OpenStackError(409, `Image ${id} was uploaded as ${formatName}, which cannot be exported.`);
    const vdiId = image.vdiId || (await this.baseVdiOf(ctx, image));
    const { res } = ctx;
    const call = this.call(ctx);
    try {
      await exportVdi({
        vdis: this.o.pool.vdis,
        metadata: call.metadata,
        request: { id: vdiId, format, compress: false },
        onHeader: (h) =>
          res.writeHead(200, {
            'content-type': 'application/octet-stream',
            'content-length': Number(h.sizeBytes),
          }),
        sink: res,
      });
      res.end();
    } catch (e) {
      if (!res.headersSent) throw e;
      this.o.logger.warn({ err: e, imageId: id }, 'a Glance download broke off');
      res.destroy();
    }
    return undefined;
  }

  /** The image's read-only base VDI, as its tenant sees it (vdi_id is shown to pool-operator and above). */
  private async baseVdiOf(ctx: AuthedCtx, image: storageV1.Image): Promise<string> {
    const { vdis } = await this.o.pool.vdis.call.listVdis(
      { page: { pageSize: 1000, pageToken: '', filter: `image_id=${image.id}` } },
      this.call(ctx),
    );
    const base = vdis.find((v) => v.readOnly && !v.isSnapshot);
    if (!base)
      throw new OpenStackError(
        403,
        `The data of image ${glanceIdOf(image)} belongs to the pool: downloading a public image needs the pool-operator role.`,
      );
    return base.id;
  }
}

function nonNegative(v: unknown, key: string): number {
  if (v === undefined || v === null) return 0;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0)
    throw new OpenStackError(400, `Invalid ${key}: a non-negative integer.`);
  return v;
}
