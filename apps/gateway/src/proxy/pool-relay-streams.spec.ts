import * as grpc from '@grpc/grpc-js';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { drained, md } from '@flotilla/platform';
import { Principal, TokenAuth } from '../auth/token-auth';
import { relayedServices } from '../gateway.app';
import { PoolRelay } from './pool-relay';

// Real: the relay, a grpc-js server as the gateway and another as the pool's storage service, gRPC on
// loopback. Fake: authentication (every call is one fixed principal) and the storage service (a handler per
// test). The relay never decodes, so the messages are arbitrary bytes; the calls are VdiService's
// ImportVdi (client stream) and ExportVdi (server stream), the streams that carry disk images.

const service = 'flotilla.storage.v1.VdiService';
const importPath = `/${service}/ImportVdi`;
const exportPath = `/${service}/ExportVdi`;
const passthrough = (b: Buffer): Buffer => b;
const principal: Principal = { tokenId: 't1', tenantId: 'tenant-a', role: 'vm-admin', crossTenant: false };
const auth = { authenticate: () => Promise.resolve(principal) } as unknown as TokenAuth;
const MiB = 1024 * 1024;

type ImportHandler = (
  call: grpc.ServerReadableStream<Buffer, Buffer>,
  cb: grpc.sendUnaryData<Buffer>,
) => void;
type ExportHandler = (call: grpc.ServerWritableStream<Buffer, Buffer>) => void;

const method = (path: string, requestStream: boolean, responseStream: boolean) => ({
  path,
  requestStream,
  responseStream,
  requestSerialize: passthrough,
  requestDeserialize: passthrough,
  responseSerialize: passthrough,
  responseDeserialize: passthrough,
});

async function bind(server: grpc.Server): Promise<number> {
  return new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
}

/** The storage service: ImportVdi and ExportVdi answered by whatever handlers the test sets. */
async function startUpstream() {
  const handle: { importVdi: ImportHandler; exportVdi: ExportHandler } = {
    importVdi: (_c, cb) => cb(null, Buffer.from('ok')),
    exportVdi: (c) => c.end(),
  };
  const server = new grpc.Server();
  server.addService(
    { ImportVdi: method(importPath, true, false), ExportVdi: method(exportPath, false, true) },
    {
      ImportVdi: (c: grpc.ServerReadableStream<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) =>
        handle.importVdi(c, cb),
      ExportVdi: (c: grpc.ServerWritableStream<Buffer, Buffer>) => handle.exportVdi(c),
    },
  );
  return { server, port: await bind(server), handle };
}

async function startGateway(upstreamPort: number) {
  const relay = new PoolRelay(
    {
      addresses: { storage: `127.0.0.1:${upstreamPort}` },
      serviceToken: 'svc-token',
      deadlineMs: 2000,
      pool: 'test-pool',
    },
    auth,
  );
  const server = new grpc.Server();
  relay.register([service], server);
  const client = new grpc.Client(`127.0.0.1:${await bind(server)}`, grpc.credentials.createInsecure());
  return { relay, server, client };
}

/** An ImportVdi call through the gateway; `reply` settles with the answer or the status. */
function upload(client: grpc.Client, o: { deadlineMs?: number } = {}) {
  let stream!: grpc.ClientWritableStream<Buffer>;
  const reply = new Promise<Buffer>((resolve, reject) => {
    stream = client.makeClientStreamRequest(
      importPath,
      passthrough,
      passthrough,
      new grpc.Metadata(),
      o.deadlineMs ? { deadline: Date.now() + o.deadlineMs } : {},
      (err, r) => (err ? reject(err) : resolve(r!)),
    );
  });
  return { stream, reply };
}

/** An ExportVdi call through the gateway. */
const exportVdi = (client: grpc.Client): grpc.ClientReadableStream<Buffer> =>
  client.makeServerStreamRequest(
    exportPath,
    passthrough,
    passthrough,
    Buffer.from('req'),
    new grpc.Metadata(),
    {},
  );

/** Writes `total` bytes in `chunk`-sized messages, honouring backpressure; `sent` counts what was taken. */
function pump(stream: grpc.ClientWritableStream<Buffer>, total: number, chunk: number) {
  const progress = { sent: 0, done: false };
  const hash = createHash('sha256');
  const finished = (async () => {
    for (let i = 0; progress.sent < total; i++) {
      const m = Buffer.alloc(Math.min(chunk, total - progress.sent), i % 251);
      hash.update(m);
      progress.sent += m.length;
      if (!stream.write(m)) await drained(stream);
      if (stream.destroyed) break;
    }
    stream.end();
    progress.done = true;
    return hash.digest('hex');
  })();
  return { progress, finished };
}

const failure = (p: Promise<unknown>) =>
  p.then(
    () => {
      throw new Error('expected the call to fail');
    },
    (e: grpc.ServiceError) => e,
  );

async function waitUntil(check: () => boolean, ms = 5000): Promise<void> {
  const until = Date.now() + ms;
  while (!check()) {
    if (Date.now() > until) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('PoolRelay, client streams (ImportVdi)', () => {
  let upstream: Awaited<ReturnType<typeof startUpstream>>;
  let gateway: Awaited<ReturnType<typeof startGateway>>;

  beforeEach(async () => {
    upstream = await startUpstream();
    gateway = await startGateway(upstream.port);
  });
  afterEach(() => {
    gateway.client.close();
    gateway.relay.close();
    gateway.server.forceShutdown();
    upstream.server.forceShutdown();
  });

  it('relays every message in order and the reply, with the principal, service token and request id', async () => {
    let seen: grpc.Metadata | undefined;
    upstream.handle.importVdi = (c, cb) => {
      seen = c.metadata;
      const parts: Buffer[] = [];
      c.on('data', (m: Buffer) => parts.push(Buffer.concat([Buffer.from([parts.length]), m])));
      c.on('end', () => cb(null, Buffer.concat(parts)));
    };
    const { stream, reply } = upload(gateway.client);
    stream.write(Buffer.from('header'));
    stream.write(Buffer.from([0, 255]));
    stream.write(Buffer.alloc(0));
    stream.end(Buffer.from('last'));
    expect(await reply).toEqual(
      Buffer.concat([
        Buffer.from([0]),
        Buffer.from('header'),
        Buffer.from([1, 0, 255]),
        Buffer.from([2]),
        Buffer.from([3]),
        Buffer.from('last'),
      ]),
    );
    expect(seen!.get(md.tenantId)).toEqual(['tenant-a']);
    expect(seen!.get(md.role)).toEqual(['vm-admin']);
    expect(seen!.get(md.serviceToken)).toEqual(['svc-token']);
    expect(String(seen!.get(md.requestId)[0])).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('holds a fast uploader back while the service does not read, then delivers every byte', async () => {
    let upstreamCall: grpc.ServerReadableStream<Buffer, Buffer> | undefined;
    const received = { bytes: 0, hash: createHash('sha256') };
    upstream.handle.importVdi = (c, cb) => {
      // No 'data' listener yet: the service reads nothing until the test lets it.
      upstreamCall = c;
      c.on('end', () => cb(null, Buffer.from(received.hash.digest('hex'))));
    };
    const total = 64 * MiB;
    const { stream, reply } = upload(gateway.client);
    const { progress, finished } = pump(stream, total, 64 * 1024);
    await waitUntil(() => upstreamCall !== undefined);
    await sleep(1000);
    // What the gateway, the service and the two connections buffer between them: a few MiB, not the upload.
    expect(progress.done).toBe(false);
    expect(progress.sent).toBeLessThan(16 * MiB);
    upstreamCall!.on('data', (m: Buffer) => {
      received.bytes += m.length;
      received.hash.update(m);
    });
    const sent = await finished;
    expect(String(await reply)).toBe(sent);
    expect(received.bytes).toBe(total);
  });

  it("passes the caller's deadline upstream, and sets none of its own for a caller without one", async () => {
    const deadlines: number[] = [];
    upstream.handle.importVdi = (c, cb) => {
      const d = c.getDeadline();
      deadlines.push(d instanceof Date ? d.getTime() : d);
      c.resume();
      c.on('end', () => cb(null, Buffer.from('ok')));
    };
    const before = Date.now();
    const a = upload(gateway.client, { deadlineMs: 5000 });
    a.stream.end(Buffer.from('x'));
    await a.reply;
    const b = upload(gateway.client);
    // Longer than the relay's unary deadline (2 s): an upload takes as long as its size needs.
    await sleep(2500);
    b.stream.end(Buffer.from('x'));
    await b.reply;
    expect(deadlines[0]).toBeGreaterThan(before + 4000);
    expect(deadlines[0]).toBeLessThanOrEqual(before + 5100);
    expect(deadlines[1]).toBe(Infinity);
  });

  it('answers DEADLINE_EXCEEDED and cancels the service’s call when the caller’s deadline passes', async () => {
    let upstreamCancelled = false;
    upstream.handle.importVdi = (c) => {
      c.resume();
      c.on('cancelled', () => (upstreamCancelled = true));
    };
    const { stream, reply } = upload(gateway.client, { deadlineMs: 500 });
    stream.write(Buffer.from('header'));
    expect((await failure(reply)).code).toBe(grpc.status.DEADLINE_EXCEEDED);
    await waitUntil(() => upstreamCancelled);
  });

  it('cancels the service’s call when the caller cancels mid-upload', async () => {
    let upstreamCancelled = false;
    let bytes = 0;
    upstream.handle.importVdi = (c) => {
      c.on('data', (m: Buffer) => (bytes += m.length));
      c.on('cancelled', () => (upstreamCancelled = true));
    };
    const { stream, reply } = upload(gateway.client);
    stream.write(Buffer.alloc(MiB));
    await waitUntil(() => bytes === MiB);
    stream.cancel();
    expect((await failure(reply)).code).toBe(grpc.status.CANCELLED);
    await waitUntil(() => upstreamCancelled);
  });

  it('ends the upload with the service’s error as soon as it refuses, while the caller still sends', async () => {
    upstream.handle.importVdi = (c, cb) => {
      c.once('data', () => {
        const trailers = new grpc.Metadata();
        trailers.set('x-flotilla-field', 'header.sha256');
        cb({ code: grpc.status.INVALID_ARGUMENT, details: 'header.sha256: not hex', metadata: trailers });
      });
    };
    const { stream, reply } = upload(gateway.client);
    const { progress } = pump(stream, 256 * MiB, MiB);
    const e = await failure(reply);
    expect(e.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(e.details).toBe('header.sha256: not hex');
    expect(e.metadata.get('x-flotilla-field')).toEqual(['header.sha256']);
    expect(progress.sent).toBeLessThan(256 * MiB);
  });

  it('answers UNAVAILABLE naming the storage service when it is down', async () => {
    const port = upstream.port;
    upstream.server.forceShutdown();
    const { stream, reply } = upload(gateway.client);
    stream.end(Buffer.from('x'));
    const e = await failure(reply);
    expect(e.code).toBe(grpc.status.UNAVAILABLE);
    expect(e.details).toBe(
      `pool test-pool: storage service at 127.0.0.1:${port} is unavailable; retry later`,
    );
  });
});

describe('PoolRelay, server streams (ExportVdi)', () => {
  let upstream: Awaited<ReturnType<typeof startUpstream>>;
  let gateway: Awaited<ReturnType<typeof startGateway>>;

  beforeEach(async () => {
    upstream = await startUpstream();
    gateway = await startGateway(upstream.port);
  });
  afterEach(() => {
    gateway.client.close();
    gateway.relay.close();
    gateway.server.forceShutdown();
    upstream.server.forceShutdown();
  });

  it('holds the service back while the caller does not read, then delivers every byte in order', async () => {
    const total = 64 * MiB;
    const chunk = 64 * 1024;
    const produced = { bytes: 0, hash: createHash('sha256') };
    upstream.handle.exportVdi = (c) => {
      void (async () => {
        for (let i = 0; produced.bytes < total; i++) {
          const m = Buffer.alloc(chunk, i % 251);
          produced.hash.update(m);
          produced.bytes += m.length;
          if (!c.write(m)) await drained(c);
          if (c.cancelled) return;
        }
        c.end();
      })();
    };
    const stream = exportVdi(gateway.client);
    stream.on('error', () => undefined);
    // The caller takes a few messages, then stops reading for a while.
    const received = createHash('sha256');
    let bytes = 0;
    const take = (m: Buffer) => {
      received.update(m);
      bytes += m.length;
    };
    stream.on('data', (m: Buffer) => {
      take(m);
      if (bytes === 4 * chunk) stream.pause();
    });
    await waitUntil(() => bytes === 4 * chunk);
    await sleep(1000);
    expect(produced.bytes).toBeLessThan(16 * MiB);
    stream.removeAllListeners('data');
    for await (const m of stream as AsyncIterable<Buffer>) take(m);
    expect(bytes).toBe(total);
    expect(received.digest('hex')).toBe(produced.hash.digest('hex'));
  });

  it('cancels the service’s stream when the caller cancels', async () => {
    let upstreamCancelled = false;
    upstream.handle.exportVdi = (c) => {
      c.write(Buffer.from('header'));
      c.on('cancelled', () => (upstreamCancelled = true));
    };
    const stream = exportVdi(gateway.client);
    stream.on('error', () => undefined);
    await once(stream, 'data');
    stream.cancel();
    await waitUntil(() => upstreamCancelled);
  });
  it('reaches a service that restarted a moment ago, though its channel was waiting to reconnect', async () => {
    const read = () => {
      const stream = exportVdi(gateway.client);
      return new Promise<string>((resolve, reject) => {
        const parts: Buffer[] = [];
        stream.on('data', (m: Buffer) => parts.push(m));
        stream.on('error', reject);
        stream.on('end', () => resolve(Buffer.concat(parts).toString()));
      });
    };
    upstream.handle.exportVdi = (c) => {
      c.write(Buffer.from('before'));
      c.end();
    };
    expect(await read()).toBe('before');
    // The service goes away: a stream is refused, and the relay's channel falls into its reconnect backoff.
    const port = upstream.port;
    upstream.server.forceShutdown();
    const down = await failure(read());
    expect(down.code).toBe(grpc.status.UNAVAILABLE);
    expect(down.details).toBe(
      `pool test-pool: storage service at 127.0.0.1:${port} is unavailable; retry later`,
    );
    // Back on the same address: the next stream reaches it instead of failing fast while the channel waits.
    const server = new grpc.Server();
    server.addService(
      { ExportVdi: method(exportPath, false, true) },
      {
        ExportVdi: (c: grpc.ServerWritableStream<Buffer, Buffer>) => {
          c.write(Buffer.from('after'));
          c.end();
        },
      },
    );
    await new Promise<void>((resolve, reject) =>
      server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (e) =>
        e ? reject(e) : resolve(),
      ),
    );
    upstream.server = server;
    expect(await read()).toBe('after');
  });
});

describe('the services the gateway relays', () => {
  it('include the storage and migration services consumers use, and none of the pool’s internal ones', () => {
    expect(relayedServices).toEqual(
      expect.arrayContaining([
        'flotilla.storage.v1.SrService',
        'flotilla.storage.v1.VdiService',
        'flotilla.storage.v1.VbdService',
        'flotilla.storage.v1.ImageService',
        'flotilla.storage.v1.StorageEventService',
        'flotilla.migration.v1.MigrationService',
        'flotilla.migration.v1.EvacuationService',
        'flotilla.migration.v1.MigrationEventService',
      ]),
    );
    for (const internal of [
      'flotilla.storage.v1.VmDiskService',
      'flotilla.storage.v1.StorageAgentService',
      'flotilla.compute.v1.HostRegistryService',
      'flotilla.compute.v1.AgentService',
      'flotilla.compute.v1.VmMigrationService',
      'flotilla.migration.v1.MigrationAgentService',
    ])
      expect(relayedServices).not.toContain(internal);
  });
});
