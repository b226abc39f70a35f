import * as grpc from '@grpc/grpc-js';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { storageV1 } from '@flotilla/contracts';
import { serviceDefinition } from '@flotilla/platform';
import { CliError, ExitCode } from './errors';
import { defaultExportName, downloadImage, sha256OfFile, uploadImage } from './vdi-transfer';

// Real: grpc-js on loopback with VdiService's own contract (proto-loader, as the CLI's client uses it), the
// file system. Fake: the storage service — ImportVdi and ExportVdi answered by a handler per test.

const MiB = 1024 * 1024;
const service = 'flotilla.storage.v1.VdiService';
type ImportCall = grpc.ServerReadableStream<storageV1.ImportVdiRequest, storageV1.ImportVdiResponse>;
type ExportCall = grpc.ServerWritableStream<storageV1.ExportVdiRequest, storageV1.ExportVdiResponse>;

let server: grpc.Server;
let client: grpc.Client;
let dir: string;
const handle: {
  importVdi: (call: ImportCall, cb: grpc.sendUnaryData<storageV1.ImportVdiResponse>) => void;
  exportVdi: (call: ExportCall) => void;
} = { importVdi: () => undefined, exportVdi: () => undefined };

beforeAll(async () => {
  const definition = serviceDefinition(service);
  server = new grpc.Server();
  const unimplemented = () => undefined;
  const handlers: grpc.UntypedServiceImplementation = {};
  for (const name of Object.keys(definition)) handlers[name] = unimplemented;
  handlers.ImportVdi = (c: ImportCall, cb: grpc.sendUnaryData<storageV1.ImportVdiResponse>) =>
    handle.importVdi(c, cb);
  handlers.ExportVdi = (c: ExportCall) => handle.exportVdi(c);
  server.addService(definition, handlers);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  const Ctor = grpc.makeGenericClientConstructor(definition, service);
  client = new Ctor(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
});
afterAll(() => {
  client.close();
  server.forceShutdown();
});
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-transfer-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

function writeFile(name: string, bytes: number): { file: string; content: Buffer } {
  const content = Buffer.alloc(bytes);
  for (let i = 0; i < bytes; i += 4096) content.writeUInt32BE(i, i);
  const file = path.join(dir, name);
  fs.writeFileSync(file, content);
  return { file, content };
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

const header = (sizeBytes: number, sha256 = ''): storageV1.ImportVdiHeader => ({
  requestId: 'r1',
  srId: 'sr-1',
  name: 'disk',
  description: '',
  labels: {},
  format: storageV1.DiskFormat.DISK_FORMAT_RAW,
  sizeBytes,
  sha256,
  sourceUrl: '',
  sharable: false,
});

const reply = (id: string): storageV1.ImportVdiResponse =>
  ({
    vdi: { id, name: 'disk' },
    operation: { id: 'op-1', kind: 'vdi.import' },
  }) as unknown as storageV1.ImportVdiResponse;

describe('uploadImage (ImportVdi)', () => {
  it('sends the header first, then the file in order in messages of at most 1 MiB, with the bearer metadata', async () => {
    const { file, content } = writeFile('disk.raw', 3 * MiB + 123);
    const seen: { header?: storageV1.ImportVdiHeader; sizes: number[]; bytes: Buffer[]; auth?: unknown } = {
      sizes: [],
      bytes: [],
    };
    handle.importVdi = (c, cb) => {
      seen.auth = c.metadata.get('authorization')[0];
      c.on('data', (m: storageV1.ImportVdiRequest) => {
        if (m.header) seen.header = m.header;
        else if (m.chunk) {
          seen.sizes.push(m.chunk.length);
          seen.bytes.push(Buffer.from(m.chunk));
        }
      });
      c.on('end', () => cb(null, reply('vdi-1')));
    };
    const metadata = new grpc.Metadata();
    metadata.set('authorization', 'Bearer t');
    const progress: number[] = [];
    const sha256 = await sha256OfFile(file);
    const res = await uploadImage({
      client,
      metadata,
      header: header(content.length, sha256),
      file,
      onProgress: (b) => progress.push(b),
    });
    expect(res.vdi?.id).toBe('vdi-1');
    expect(seen.auth).toBe('Bearer t');
    expect(seen.header).toMatchObject({ name: 'disk', sizeBytes: content.length, sha256: sha(content) });
    expect(Math.max(...seen.sizes)).toBeLessThanOrEqual(MiB);
    expect(Buffer.concat(seen.bytes).equals(content)).toBe(true);
    expect(progress[progress.length - 1]).toBe(content.length);
  });

  it('stops at once with the server’s error when it refuses the upload midway', async () => {
    const { file } = writeFile('big.raw', 64 * MiB);
    let messages = 0;
    handle.importVdi = (c, cb) => {
      c.on('data', () => {
        messages += 1;
        if (messages === 2)
          cb({ code: grpc.status.RESOURCE_EXHAUSTED, details: 'SR local: free space 1 MiB is below 64 MiB' });
      });
    };
    const e = await uploadImage({
      client,
      metadata: new grpc.Metadata(),
      header: header(64 * MiB),
      file,
    }).catch((x: grpc.ServiceError) => x);
    expect((e as grpc.ServiceError).code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect((e as grpc.ServiceError).details).toBe('SR local: free space 1 MiB is below 64 MiB');
  });

  it('cancels the call when aborted (Ctrl-C), and says nothing was imported', async () => {
    const { file } = writeFile('big.raw', 16 * MiB);
    let cancelled = false;
    const controller = new AbortController();
    handle.importVdi = (c) => {
      c.once('data', () => controller.abort());
      c.on('cancelled', () => (cancelled = true));
    };
    const e = await uploadImage({
      client,
      metadata: new grpc.Metadata(),
      header: header(16 * MiB),
      file,
      signal: controller.signal,
    }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(CliError);
    expect((e as CliError).exitCode).toBe(ExitCode.Interrupted);
    expect((e as CliError).message).toBe('upload cancelled: nothing was imported');
    await waitUntil(() => cancelled);
  });

  it('refuses a file that is not the size announced, before the server counts it', async () => {
    const { file } = writeFile('disk.raw', 2 * MiB);
    let cancelled = false;
    handle.importVdi = (c) => {
      c.resume();
      c.on('cancelled', () => (cancelled = true));
    };
    const e = await uploadImage({
      client,
      metadata: new grpc.Metadata(),
      header: header(3 * MiB),
      file,
    }).catch((x: unknown) => x);
    expect((e as CliError).message).toMatch(
      /changed while it was sent \(2097152 bytes read, 3145728 expected\)/,
    );
    await waitUntil(() => cancelled);
  });
});

function exportWith(messages: Array<Partial<storageV1.ExportVdiResponse>>, o: { delayMs?: number } = {}) {
  handle.exportVdi = (c) => {
    void (async () => {
      for (const m of messages) {
        c.write(m);
        if (o.delayMs) await new Promise((r) => setTimeout(r, o.delayMs));
      }
      c.end();
    })();
  };
}

const exportHeader = (sizeBytes: number) => ({
  header: { format: storageV1.DiskFormat.DISK_FORMAT_QCOW2, sizeBytes, virtualSizeBytes: 10 * MiB },
});

describe('downloadImage (ExportVdi)', () => {
  const request = { id: 'vdi-1', format: storageV1.DiskFormat.DISK_FORMAT_QCOW2, compress: false };
  const leftovers = () => fs.readdirSync(dir).filter((f) => f.endsWith('.part'));

  it('reports staging, writes the bytes and renames the file into place once the SHA-256 matches', async () => {
    const content = Buffer.alloc(2 * MiB + 5, 7);
    exportWith([
      { stagingProgress: 0.5 },
      { stagingProgress: 1 },
      exportHeader(content.length),
      { chunk: content.subarray(0, MiB) },
      { chunk: content.subarray(MiB) },
      { sha256: sha(content) },
    ]);
    const staging: number[] = [];
    const out = path.join(dir, 'disk.qcow2');
    const done = await downloadImage({
      client,
      metadata: new grpc.Metadata(),
      request,
      out,
      overwrite: false,
      onStaging: (f) => staging.push(f),
    });
    expect(staging).toEqual([0.5, 1]);
    expect(done).toMatchObject({ path: out, bytes: content.length, sha256: sha(content) });
    expect(fs.readFileSync(out).equals(content)).toBe(true);
    expect((fs.statSync(out).mode & 0o777).toString(8)).toBe('600');
    expect(leftovers()).toEqual([]);
  });

  it('leaves no file when the SHA-256 the server sends does not match the bytes', async () => {
    const content = Buffer.alloc(1000, 1);
    exportWith([exportHeader(content.length), { chunk: content }, { sha256: sha(Buffer.from('other')) }]);
    const out = path.join(dir, 'disk.qcow2');
    const e = await downloadImage({
      client,
      metadata: new grpc.Metadata(),
      request,
      out,
      overwrite: false,
    }).catch((x: unknown) => x);
    expect((e as CliError).message).toMatch(/SHA-256 does not match its bytes/);
    expect(fs.existsSync(out)).toBe(false);
    expect(leftovers()).toEqual([]);
  });

  it('leaves no file, and the old one untouched, when the stream ends short of the size announced', async () => {
    const out = path.join(dir, 'disk.qcow2');
    fs.writeFileSync(out, 'old');
    const content = Buffer.alloc(1000, 1);
    exportWith([exportHeader(2000), { chunk: content }, { sha256: sha(content) }]);
    const e = await downloadImage({
      client,
      metadata: new grpc.Metadata(),
      request,
      out,
      overwrite: true,
    }).catch((x: unknown) => x);
    expect((e as CliError).message).toBe(
      'the export stream is broken: 1000 bytes received, 2000 announced; nothing was written',
    );
    expect(fs.readFileSync(out, 'utf8')).toBe('old');
    expect(leftovers()).toEqual([]);
  });

  it('leaves no file when the server fails midway, and reports its error', async () => {
    handle.exportVdi = (c) => {
      c.write(exportHeader(3 * MiB));
      c.write({ chunk: Buffer.alloc(MiB) });
      setTimeout(
        () => c.emit('error', { code: grpc.status.FAILED_PRECONDITION, details: 'vdi data is attached' }),
        20,
      );
    };
    const out = path.join(dir, 'disk.qcow2');
    const e = await downloadImage({
      client,
      metadata: new grpc.Metadata(),
      request,
      out,
      overwrite: false,
    }).catch((x: grpc.ServiceError) => x);
    expect((e as grpc.ServiceError).code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(fs.existsSync(out)).toBe(false);
    expect(leftovers()).toEqual([]);
  });

  it('refuses to replace an existing file without overwrite, before calling the server', async () => {
    const out = path.join(dir, 'disk.qcow2');
    fs.writeFileSync(out, 'old');
    let called = false;
    handle.exportVdi = (c) => {
      called = true;
      c.end();
    };
    const e = await downloadImage({
      client,
      metadata: new grpc.Metadata(),
      request,
      out,
      overwrite: false,
    }).catch((x: unknown) => x);
    expect((e as CliError).exitCode).toBe(ExitCode.Conflict);
    expect(called).toBe(false);
  });
});

describe('defaultExportName', () => {
  it('names the file after the disk, with the extension of the format', () => {
    expect(defaultExportName('web data', 'raw')).toBe('web_data.img');
    expect(defaultExportName('db', 'vmdk')).toBe('db.vmdk');
    expect(defaultExportName('../../etc/passwd', 'qcow2')).toBe('__.._etc_passwd.qcow2');
  });
});

async function waitUntil(check: () => boolean, ms = 5000): Promise<void> {
  const until = Date.now() + ms;
  while (!check()) {
    if (Date.now() > until) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}
