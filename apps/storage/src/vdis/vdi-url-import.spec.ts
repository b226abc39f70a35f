import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { Metadata } from '@grpc/grpc-js';
import { commonV1, storageV1 } from '@flotilla/contracts';
import {
  GrpcClient,
  LocalCloud,
  md,
  rejection,
  startLocalCloud,
  testDatabase,
  uniqueSchema,
  waitFor,
} from '@flotilla/platform';

// Real: storage (with FLOTILLA_IMPORT_URL_ALLOW naming 127.0.0.1:<port>/img/ and the host name localhost),
// compute, one host agent with real qemu-img on real files, an HTTP server on loopback started here serving
// raw and qcow2 images, redirects, a 404, a wrong Content-Length and a body longer than announced, and the
// database (PGlite, and PostgreSQL when TEST_DATABASE_URL is set). Fake: the hypervisor (sim driver).

const MIB = 1024 * 1024;
const { SrType, DiskFormat, VdiState } = storageV1;

type ImportStream = (
  m: Metadata,
  cb: (e: Error | null, r: storageV1.ImportVdiResponse) => void,
) => import('@grpc/grpc-js').ClientWritableStream<storageV1.ImportVdiRequest>;

describe.each(testDatabase('PGlite'))('ImportVdi from a URL on the allow-list on %s', (_db, url) => {
  let cloud: LocalCloud;
  let server: http.Server;
  let base: string;
  let dir: string;
  let raw: Buffer;
  let qcow2File: string;
  let vdis: GrpcClient<storageV1.VdiServiceClient>;
  let ops: GrpcClient<commonV1.OperationServiceClient>;
  let srPath: string;
  let srId: string;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'url-import-'));
    raw = Buffer.alloc(6 * MIB);
    for (let i = 0; i < raw.length; i += 4096) raw.writeUInt32LE(i ^ 0x5a5a5a5a, i);
    fs.writeFileSync(path.join(dir, 'disk.raw'), raw);
    qcow2File = path.join(dir, 'disk.qcow2');
    execFileSync('qemu-img', [
      'convert',
      '-q',
      '-f',
      'raw',
      '-O',
      'qcow2',
      path.join(dir, 'disk.raw'),
      qcow2File,
    ]);
    const qcow2 = fs.readFileSync(qcow2File);
    server = http.createServer((req, res) => {
      const p = req.url ?? '';
      const send = (body: Buffer, length = body.length) => {
        res.writeHead(200, { 'content-length': String(length) });
        res.end(body);
      };
      if (p === '/img/disk.raw') return send(raw);
      if (p === '/img/disk.qcow2') return send(qcow2);
      if (p === '/img/hop') return res.writeHead(302, { location: '/img/disk.raw' }).end();
      if (p === '/img/away')
        return res.writeHead(302, { location: `http://127.0.0.2:${port()}/img/disk.raw` }).end();
      if (p === '/img/chunked-long') {
        // No Content-Length: the size is only known when too many bytes have come.
        res.writeHead(200);
        res.write(raw);
        return res.end(raw.subarray(0, MIB));
      }
      res.writeHead(404).end('no such image');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${port()}`;
    cloud = await startLocalCloud({
      databaseUrl: url,
      schemaPrefix: uniqueSchema('urlimport'),
      agents: 1,
      storageEnv: {
        FLOTILLA_IMPORT_URL_ALLOW: `${base}/img/,localhost`,
        FLOTILLA_IMPORT_URL_TIMEOUT_MS: '5000',
      },
    });
    const staticMetadata = { [md.serviceToken]: cloud.serviceToken };
    const make = <C>(service: string) =>
      new GrpcClient<C>({
        address: cloud.storageAddress,
        service,
        staticMetadata,
        defaultDeadlineMs: 60_000,
      });
    vdis = make<storageV1.VdiServiceClient>('flotilla.storage.v1.VdiService');
    ops = make<commonV1.OperationServiceClient>('flotilla.common.v1.OperationService');
    const srs = make<storageV1.SrServiceClient>('flotilla.storage.v1.SrService');
    const [host] = await cloud.hostsReady(1);
    srPath = path.join(path.dirname(cloud.imageDir), 'sr', 'urls');
    const { sr, operation } = await srs.call.createSr({
      requestId: '',
      name: 'urls',
      description: '',
      labels: {},
      type: SrType.SR_TYPE_FILE,
      hostId: host.id,
      path: srPath,
      tenantId: '',
      overprovisionRatio: 0,
      adoptExisting: false,
    });
    await end(operation?.id ?? '');
    srId = sr?.id ?? '';
    srs.close();
  }, 120_000);

  afterAll(async () => {
    vdis?.close();
    ops?.close();
    await cloud?.stop();
    await new Promise((r) => server?.close(r));
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const port = () => (server.address() as AddressInfo).port;

  async function end(id: string): Promise<commonV1.Operation> {
    for (;;) {
      const { operation } = await ops.call.waitOperation({ id, timeoutMs: 30_000 });
      if (!operation) throw new Error(`operation ${id} vanished`);
      if (!['OPERATION_STATE_PENDING', 'OPERATION_STATE_RUNNING'].includes(String(operation.state)))
        return operation;
    }
  }

  function importUrl(
    sourceUrl: string,
    over: Partial<storageV1.ImportVdiHeader> = {},
  ): Promise<storageV1.ImportVdiResponse> {
    return new Promise((resolve, reject) => {
      const call = (vdis.raw as unknown as Record<string, ImportStream>).ImportVdi;
      const m = new Metadata();
      m.set(md.serviceToken, cloud.serviceToken);
      const s = call.call(vdis.raw, m, (e, r) => (e ? reject(e) : resolve(r)));
      s.write({
        header: {
          requestId: '',
          srId,
          name: 'from-url',
          description: '',
          labels: {},
          format: DiskFormat.DISK_FORMAT_RAW,
          sizeBytes: raw.length,
          sha256: '',
          sourceUrl,
          sharable: false,
          ...over,
        },
      });
      s.end();
    });
  }

  /** Disk files of the SR (no marker), and whether any temporary is left. */
  const srFiles = () => fs.readdirSync(srPath).filter((f) => f !== '.flotilla-sr.json');
  const vdiCount = async () =>
    (await vdis.call.listVdis({ page: { pageSize: 1000, pageToken: '', filter: '' } })).vdis.length;

  async function imported(sourceUrl: string, format: storageV1.DiskFormat, size: number) {
    const res = await importUrl(sourceUrl, { format, sizeBytes: size });
    const op = await end(res.operation?.id ?? '');
    expect(op.error?.message ?? '').toBe('');
    expect(op.state).toBe('OPERATION_STATE_SUCCEEDED');
    const { vdi } = await vdis.call.getVdi({ id: res.vdi?.id ?? '' });
    expect(vdi).toMatchObject({ state: VdiState.VDI_STATE_READY, virtualSizeBytes: raw.length });
    return path.join(srPath, `${vdi?.id}.qcow2`);
  }

  it('imports a raw image from an allowed URL: the VDI holds the same bytes', async () => {
    const file = await imported(`${base}/img/disk.raw`, DiskFormat.DISK_FORMAT_RAW, raw.length);
    execFileSync('qemu-img', ['compare', '-q', '-f', 'qcow2', '-F', 'raw', file, path.join(dir, 'disk.raw')]);
  });

  it('imports a qcow2 image from an allowed URL', async () => {
    const size = fs.statSync(qcow2File).size;
    const file = await imported(`${base}/img/disk.qcow2`, DiskFormat.DISK_FORMAT_QCOW2, size);
    execFileSync('qemu-img', ['compare', '-q', '-f', 'qcow2', '-F', 'qcow2', file, qcow2File]);
  });

  it('follows a redirect to a URL the allow-list also allows', async () => {
    await imported(`${base}/img/hop`, DiskFormat.DISK_FORMAT_RAW, raw.length);
  });

  describe('refusals leave no VDI record and no file', () => {
    let before: { count: number; files: string[] };
    beforeEach(async () => {
      before = { count: await vdiCount(), files: srFiles() };
    });
    afterEach(async () => {
      await waitFor('nothing half-made', async () => (await vdiCount()) === before.count && true, {
        timeoutMs: 30_000,
      });
      await waitFor('no file left', async () => srFiles().join() === before.files.join(), {
        timeoutMs: 30_000,
      });
    });

    it('refuses a URL not on the allow-list with INVALID_ARGUMENT naming the list', async () => {
      expect(await rejection(importUrl(`${base}/private/disk.raw`))).toMatchObject({
        code: 'INVALID_ARGUMENT',
        field: 'header.source_url',
        message: expect.stringMatching(/not on the import allow-list.*FLOTILLA_IMPORT_URL_ALLOW/),
      });
    });

    it('refuses a host name that resolves to loopback unless the list names the address itself', async () => {
      expect(await rejection(importUrl(`http://localhost:${port()}/img/disk.raw`))).toMatchObject({
        code: 'INVALID_ARGUMENT',
        field: 'header.source_url',
        message: expect.stringMatching(/localhost resolves to (127\.0\.0\.1|::1), an address internal/),
      });
    });

    it('refuses a redirect to a URL the allow-list does not allow', async () => {
      expect(await rejection(importUrl(`${base}/img/away`))).toMatchObject({
        code: 'INVALID_ARGUMENT',
        field: 'header.source_url',
        message: expect.stringMatching(
          /redirects to http:\/\/127\.0\.0\.2:\d+\/img\/disk\.raw, which .*allow-list/,
        ),
      });
    });

    it('refuses http(s) only, and URLs carrying credentials', async () => {
      expect(await rejection(importUrl('file:///etc/passwd'))).toMatchObject({
        code: 'INVALID_ARGUMENT',
        message: expect.stringContaining('must be http:// or https://'),
      });
      expect(await rejection(importUrl(`http://u:p@127.0.0.1:${port()}/img/disk.raw`))).toMatchObject({
        code: 'INVALID_ARGUMENT',
        message: expect.stringContaining('must not carry credentials'),
      });
    });

    it('refuses a size that differs from the Content-Length with INVALID_ARGUMENT on size_bytes', async () => {
      expect(await rejection(importUrl(`${base}/img/disk.raw`, { sizeBytes: raw.length - 1 }))).toMatchObject(
        {
          code: 'INVALID_ARGUMENT',
          field: 'header.size_bytes',
          message: expect.stringContaining(`Content-Length ${raw.length}`),
        },
      );
    });

    it('fails the import and rolls it back when a body without Content-Length runs past size_bytes', async () => {
      const res = await importUrl(`${base}/img/chunked-long`);
      const op = await end(res.operation?.id ?? '');
      expect(op.state).toBe('OPERATION_STATE_FAILED');
      expect(op.error?.message).toMatch(/size_bytes: is \d+ but the URL sends more bytes/);
    });

    it('refuses a URL that answers 404, saying so', async () => {
      expect(await rejection(importUrl(`${base}/img/missing.raw`))).toMatchObject({
        code: 'INVALID_ARGUMENT',
        field: 'header.source_url',
        message: expect.stringMatching(/answered HTTP 404/),
      });
    });
  });
});
