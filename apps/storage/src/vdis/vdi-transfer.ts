import { Observable } from 'rxjs';
import { EntityManager } from 'typeorm';
import { storageV1 } from '@flotilla/contracts';
import {
  checkPhysicalSpace,
  DomainError,
  ErrorCode,
  invalidArgument,
  validateLabels,
  validateRequestId,
  validateSha256,
  validateVdiName,
} from '@flotilla/domain';
import {
  Caller,
  Logger,
  OperationRow,
  OperationService,
  operationToProto,
  requireRole,
  TransactionalStore,
} from '@flotilla/platform';
import { SrRow, VdiRow } from '../persistence/entities';
import { agentError, StorageAgents } from '../srs/agents';
import { asDomainError, OperationSteps, OperationSuperseded, StorageRunner } from '../srs/operation-runner';
import { srSpace, SrHosts } from '../srs/sr-space';
import { vdiEvent, vdiToProto } from './vdi.mapper';
import { diskAt } from './vdi-operations';
import { newVdiRow, rollbackParams, VdiService } from './vdi.service';
import { OpenedUrl, UrlSource } from './url-source';

const maxChunkBytes = 1024 * 1024;
const importFormats = new Set([
  'DISK_FORMAT_QCOW2',
  'DISK_FORMAT_RAW',
  'DISK_FORMAT_VMDK',
  'DISK_FORMAT_VHD',
]);

/**
 * Reads a client stream (as NestJS hands it over) one message at a time. Subscribe synchronously in the
 * handler and return an Observable, not a Promise: NestJS replays the messages (and the end) that came
 * before the handler only once the handler returned, and waits for a returned Promise first.
 */
export function messages<T>(source: Observable<T>): AsyncIterable<T> {
  const queue: T[] = [];
  let done = false;
  let failure: unknown;
  let wake: (() => void) | undefined;
  const sub = source.subscribe({
    next: (v) => {
      queue.push(v);
      wake?.();
    },
    error: (e) => {
      failure = e;
      done = true;
      wake?.();
    },
    complete: () => {
      done = true;
      wake?.();
    },
  });
  return {
    async *[Symbol.asyncIterator]() {
      try {
        for (;;) {
          if (queue.length) yield queue.shift() as T;
          else if (failure) throw failure;
          else if (done) return;
          else await new Promise<void>((r) => (wake = r));
        }
      } finally {
        sub.unsubscribe();
      }
    },
  };
}

/**
 * Uploads and downloads of VDI content, relayed to and from the agent of the SR's host. The agent checks
 * and converts (image inspector, qemu-img check and convert under limits); this side validates the
 * request, reserves space, keeps the operation's progress and cleans up what a broken upload left.
 */
export class VdiTransfer {
  constructor(
    private readonly store: TransactionalStore,
    private readonly operations: OperationService,
    private readonly steps: OperationSteps,
    private readonly vdis: VdiService,
    private readonly agents: StorageAgents,
    private readonly srHosts: SrHosts,
    private readonly runner: StorageRunner,
    private readonly logger: Logger,
    private readonly afterChange: (op: OperationRow) => void,
    /** URL imports (header.source_url); absent: refused with FAILED_PRECONDITION. */
    private readonly urls?: UrlSource,
  ) {}

  register(runner: StorageRunner): void {
    // Resumed after a restart: the upload itself is gone; the agent either finished the file or not.
    runner.register('vdi.import', (op) => this.resumeImport(op));
  }

  async import(
    caller: Caller,
    requests: AsyncIterable<storageV1.ImportVdiRequest>,
  ): Promise<storageV1.ImportVdiResponse> {
    requireRole(caller, 'vm-admin', 'importing a VDI');
    const it = requests[Symbol.asyncIterator]();
    const first = await it.next();
    if (first.done || !first.value.header)
      throw invalidArgument(
        'header',
        'the first message of ImportVdi must be the header, then the bytes as chunks',
      );
    const h = first.value.header;
    const v = validateHeader(h);
    if (h.sourceUrl) return this.importUrl(caller, h, v);
    const made = await this.record(caller, h, v);
    if (!made.fresh) return this.responseOf(made.vdi, made.op);
    let op = made.op;
    const { sr, vdi } = made;
    const sha256 = v.sha256;
    try {
      const host = await this.srHosts.hostFor(sr, sr.hostId);
      op = await this.steps.step(op, { state: 'RUNNING', step: `receiving on host ${host.name}` });
      const { stream, done } = this.agents.importDisk(host);
      done.catch(() => undefined);
      stream.write({
        header: { target: diskAt(sr, vdi.file), format: h.format, sizeBytes: h.sizeBytes, sha256 },
      });
      let received = 0;
      let last = 0;
      try {
        for (let next = await it.next(); !next.done; next = await it.next()) {
          const msg = next.value;
          if (msg.header) throw invalidArgument('header', 'was sent twice: send it once, first');
          const chunk = msg.chunk ?? Buffer.alloc(0);
          if (chunk.length > maxChunkBytes)
            throw invalidArgument('chunk', `is ${chunk.length} bytes; at most 1 MiB per message`);
          received += chunk.length;
          if (received > h.sizeBytes)
            throw invalidArgument(
              'header.size_bytes',
              `the stream carries more than the ${h.sizeBytes} bytes announced`,
            );
          if (!stream.write({ chunk })) await new Promise((r) => stream.once('drain', r));
          if (Date.now() - last > 500) {
            last = Date.now();
            op = await this.steps.step(op, { progress: (0.9 * received) / h.sizeBytes });
          }
        }
        if (received !== h.sizeBytes)
          throw invalidArgument(
            'header.size_bytes',
            `announced ${h.sizeBytes} bytes but the stream carried ${received}`,
          );
        stream.end();
      } catch (e) {
        stream.cancel();
        throw e;
      }
      op = await this.steps.step(op, { step: 'inspecting and converting', progress: 0.9 });
      // The answer goes now; the operation goes on with the agent's inspection and conversion.
      void done.then(
        (res) => this.finishImport(op, vdi.id, res.info),
        (e: unknown) => this.failImport(op, asDomainError(e)),
      );
      return this.responseOf(vdi, op);
    } catch (e) {
      const err = asDomainError(e);
      await this.failImport(op, err);
      throw err;
    }
  }

  /** The VDI (CREATING, space reserved) and its vdi.import operation, or the earlier ones of a repeat. */
  private async record(
    caller: Caller,
    h: storageV1.ImportVdiHeader,
    v: ValidHeader,
    params: Record<string, string> = {},
  ): Promise<
    | { vdi: VdiRow; op: OperationRow; fresh: false }
    | { vdi: VdiRow; op: OperationRow; fresh: true; sr: SrRow }
  > {
    return this.store.tx(async (m, emit) => {
      const earlier = v.requestId ? await this.earlier(m, caller, v.requestId) : undefined;
      if (earlier) return { ...earlier, fresh: false as const };
      const sr = await this.vdis.usableSr(m, caller, h.srId, 'header.sr_id');
      // The upload is staged, then converted: both are on the SR's file system for a while.
      const bytes = 2 * h.sizeBytes;
      checkPhysicalSpace(await srSpace(m, sr), bytes, `import of ${v.name}`);
      const vdi = newVdiRow({
        name: v.name,
        tenantId: caller.tenantId,
        srId: sr.id,
        labels: v.labels,
        description: h.description,
        sharable: h.sharable,
        reservedPhysicalBytes: bytes,
        requestTenantId: caller.tenantId,
        requestId: v.requestId ?? null,
      });
      const op = await this.operations.create(m, emit, {
        kind: 'vdi.import',
        target: { kind: 'vdi', id: vdi.id, name: v.name },
        tenantId: caller.tenantId,
        params: { sizeBytes: h.sizeBytes, ...params, ...rollbackParams([vdi.id]) },
      });
      vdi.currentOperationId = op.id;
      await m.insert(VdiRow, vdi);
      emit(vdiEvent('CREATED', vdi));
      return { vdi, op, fresh: true as const, sr };
    });
  }

  private async earlier(
    m: EntityManager,
    caller: Caller,
    requestId: string,
  ): Promise<{ vdi: VdiRow; op: OperationRow } | undefined> {
    const vdi = await m.findOneBy(VdiRow, { requestTenantId: caller.tenantId, requestId });
    if (!vdi) return undefined;
    return { vdi, op: await m.findOneByOrFail(OperationRow, { targetId: vdi.id, kind: 'vdi.import' }) };
  }

  /**
   * ImportVdi from header.source_url: the URL is checked and opened (policy, redirects, status, size) before
   * anything is recorded, so a refused URL leaves nothing; then the answer goes and the operation streams
   * the body into the agent's ImportDisk as an upload would, progress counting bytes.
   */
  private async importUrl(
    caller: Caller,
    h: storageV1.ImportVdiHeader,
    v: ValidHeader,
  ): Promise<storageV1.ImportVdiResponse> {
    const urls = this.urls;
    if (!urls)
      throw new DomainError(
        ErrorCode.FailedPrecondition,
        'header.source_url: this storage service imports no URLs; upload the bytes in the stream instead',
        { field: 'header.source_url' },
      );
    urls.precheck(h.sourceUrl);
    if (v.requestId) {
      const earlier = await this.earlier(this.store.manager, caller, v.requestId);
      if (earlier) return this.responseOf(earlier.vdi, earlier.op);
    }
    const opened = await urls.open(h.sourceUrl, h.sizeBytes);
    let made;
    try {
      made = await this.record(caller, h, v, {
        sourceUrl: h.sourceUrl,
        format: String(h.format),
        sha256: v.sha256,
      });
    } catch (e) {
      opened.close();
      throw e;
    }
    if (!made.fresh) {
      opened.close();
      return this.responseOf(made.vdi, made.op);
    }
    const { vdi, sr } = made;
    void this.pump(made.op, vdi, sr, opened, { format: h.format, sizeBytes: h.sizeBytes, sha256: v.sha256 });
    return this.responseOf(vdi, made.op);
  }

  /** Streams an opened URL into the agent; the operation finishes with the agent's answer or fails. */
  private async pump(
    op: OperationRow,
    vdi: VdiRow,
    sr: SrRow,
    opened: OpenedUrl,
    h: { format: storageV1.DiskFormat; sizeBytes: number; sha256: string },
  ): Promise<void> {
    try {
      const host = await this.srHosts.hostFor(sr, sr.hostId);
      op = await this.steps.step(op, {
        state: 'RUNNING',
        step: `fetching ${opened.where} to host ${host.name}`,
      });
      const { stream, done } = this.agents.importDisk(host);
      done.catch(() => undefined);
      stream.write({
        header: { target: diskAt(sr, vdi.file), format: h.format, sizeBytes: h.sizeBytes, sha256: h.sha256 },
      });
      let received = 0;
      let last = Date.now();
      try {
        for await (const chunk of opened.body) {
          received += chunk.length;
          if (!stream.write({ chunk })) await new Promise((r) => stream.once('drain', r));
          if (Date.now() - last > 500) {
            last = Date.now();
            op = await this.steps.step(op, { progress: (0.9 * received) / h.sizeBytes });
          }
        }
        stream.end();
      } catch (e) {
        stream.cancel();
        throw e;
      }
      op = await this.steps.step(op, { step: 'inspecting and converting', progress: 0.9 });
      const res = await done;
      await this.finishImport(op, vdi.id, res.info);
    } catch (e) {
      opened.close();
      if (e instanceof OperationSuperseded) return this.afterChange(op);
      await this.failImport(op, asDomainError(e));
    }
  }

  private responseOf(vdi: VdiRow, op: OperationRow): storageV1.ImportVdiResponse {
    return { vdi: vdiToProto(vdi), operation: operationToProto(op) };
  }

  private async finishImport(
    op: OperationRow,
    vdiId: string,
    info: storageV1.DiskInfo | undefined,
  ): Promise<void> {
    await this.steps
      .succeed(op, { vdi_id: vdiId }, async (m, emit) => {
        const row = await m.findOneByOrFail(VdiRow, { id: vdiId });
        await this.vdis.update(m, emit, row, {
          state: 'READY',
          virtualSizeBytes: info?.virtualSizeBytes ?? 0,
          physicalUtilisationBytes: info?.physicalBytes ?? 0,
          reservedPhysicalBytes: 0,
          currentOperationId: null,
        });
      })
      .catch((e) => this.logger.info({ err: e, operationId: op.id }, 'import ended after its operation did'));
    this.afterChange(op);
  }

  private async failImport(op: OperationRow, err: DomainError): Promise<void> {
    await this.steps.fail(op.id, err).catch(() => undefined);
    this.afterChange(op);
  }

  private async resumeImport(queued: OperationRow): Promise<void> {
    const op = await this.steps.fresh(queued.id);
    if (op.state !== 'RUNNING' && op.state !== 'PENDING') return;
    const vdi = await this.store.manager.findOneBy(VdiRow, { id: op.targetId });
    if (!vdi)
      return void (await this.steps.fail(
        op.id,
        new DomainError(ErrorCode.NotFound, 'the imported VDI is gone'),
      ));
    const sr = await this.store.manager.findOneByOrFail(SrRow, { id: vdi.srId });
    const host = await this.srHosts.hostFor(sr, sr.hostId);
    const info = await this.agents
      .call(host, (a) => a.getDiskInfo({ disk: diskAt(sr, vdi.file) }))
      .then((r) => r.info)
      .catch(() => undefined);
    if (info) return this.finishImport(op, vdi.id, info);
    const url = op.params.sourceUrl;
    if (typeof url === 'string' && this.urls) {
      // A URL import starts over: the agent discarded the partial staging file when the stream was cut.
      let opened: OpenedUrl;
      try {
        opened = await this.urls.open(url, Number(op.params.sizeBytes));
      } catch (e) {
        return this.failImport(op, asDomainError(e));
      }
      return this.pump(op, vdi, sr, opened, {
        format: op.params.format as unknown as storageV1.DiskFormat,
        sizeBytes: Number(op.params.sizeBytes),
        sha256: String(op.params.sha256 ?? ''),
      });
    }
    await this.failImport(
      op,
      new DomainError(
        ErrorCode.Cancelled,
        'the upload was cut when the storage service restarted: import it again',
      ),
    );
  }

  /** ExportVdi: the agent's stream relayed as it comes. */
  export(caller: Caller, req: storageV1.ExportVdiRequest): Observable<storageV1.ExportVdiResponse> {
    return new Observable((sub) => {
      const abort = new AbortController();
      void (async () => {
        const format = String(req.format);
        if (!['DISK_FORMAT_RAW', 'DISK_FORMAT_QCOW2', 'DISK_FORMAT_VMDK'].includes(format))
          throw invalidArgument('format', 'must be DISK_FORMAT_RAW, DISK_FORMAT_QCOW2 or DISK_FORMAT_VMDK');
        const vdi = await this.vdis.get(caller, req.id);
        await this.vdis.assertAllowed(this.store.manager, vdi, 'EXPORT');
        const sr = await this.store.manager.findOneByOrFail(SrRow, { id: vdi.srId });
        const host = await this.srHosts.hostFor(sr, sr.hostId);
        const stream = this.agents.exportDisk(
          host,
          {
            disk: diskAt(sr, vdi.file),
            format: req.format,
            compress: req.compress,
            stagingFile: `${vdi.id}-${Date.now()}.export`,
          },
          abort.signal,
        );
        try {
          for await (const msg of stream) sub.next(msg);
        } catch (e) {
          throw agentError(host, e);
        }
        sub.complete();
      })().catch((e: unknown) => sub.error(e));
      return () => abort.abort();
    });
  }
}

interface ValidHeader {
  name: string;
  sha256: string;
  requestId?: string;
  labels: Record<string, string>;
}

function validateHeader(h: storageV1.ImportVdiHeader): ValidHeader {
  if (!importFormats.has(String(h.format)))
    throw invalidArgument(
      'header.format',
      'is required: DISK_FORMAT_QCOW2, DISK_FORMAT_RAW, DISK_FORMAT_VMDK or DISK_FORMAT_VHD (never guessed)',
    );
  if (!Number.isSafeInteger(h.sizeBytes) || h.sizeBytes <= 0)
    throw invalidArgument(
      'header.size_bytes',
      'is required: the exact number of bytes the stream (or the URL) carries',
    );
  return {
    name: validateVdiName('header.name', h.name),
    sha256: validateSha256('header.sha256', h.sha256),
    requestId: validateRequestId(h.requestId),
    labels: validateLabels('header.labels', h.labels),
  };
}
