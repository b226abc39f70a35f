import * as grpc from '@grpc/grpc-js';
import * as http2 from 'node:http2';
import { waitFor } from '@flotilla/platform';
import { RESET_BURST, UpstreamSession } from './upstream-session';

describe('UpstreamSession keepalive', () => {
  let server: http2.Http2Server;
  let address: string;
  beforeAll(async () => {
    server = http2.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    address = `127.0.0.1:${(server.address() as { port: number }).port}`;
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it('does not ping a session destroyed before its close event (ping would throw from a timer)', async () => {
    const upstream = upstreamTo(address, 10);
    const s = upstream.current();
    await new Promise<void>((resolve) => s.once('connect', () => resolve()));
    const closed = new Promise<void>((resolve) => s.once('close', () => resolve()));
    // 'close' follows destroy() only once the socket has closed; here it is held back 100 ms, as a slow socket
    // close would, while the 10 ms keepalive keeps firing. CI saw "The session has been destroyed" from ping().
    const emit = s.emit.bind(s);
    s.emit = ((event: string, ...args: unknown[]) => {
      if (event !== 'close') return emit(event, ...args);
      setTimeout(() => emit(event, ...args), 100);
      return true;
    }) as typeof s.emit;
    s.destroy();
    await closed;
    expect(s.destroyed).toBe(true);
    // The next call opens a new session.
    expect(upstream.current()).not.toBe(s);
    upstream.close();
  });
});

describe('UpstreamSession under a burst of cancelled calls', () => {
  // A grpc-js server, as every pool service is: Hold keeps each call until the test answers it.
  const raw = (b: Buffer): Buffer => b;
  const method = (name: string): grpc.MethodDefinition<Buffer, Buffer> => ({
    path: `/flotilla.test.v1.Relay/${name}`,
    requestStream: false,
    responseStream: false,
    requestSerialize: raw,
    requestDeserialize: raw,
    responseSerialize: raw,
    responseDeserialize: raw,
  });
  const held: grpc.sendUnaryData<Buffer>[] = [];
  let cancelledAtServer = 0;
  let server: grpc.Server;
  let address: string;
  beforeAll(async () => {
    server = new grpc.Server();
    server.addService(
      { Hold: method('Hold'), Echo: method('Echo') },
      {
        Hold: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
          call.on('cancelled', () => cancelledAtServer++);
          held.push(callback);
        },
        Echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) =>
          callback(null, call.request),
      },
    );
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) =>
        e ? reject(e) : resolve(p),
      ),
    );
    address = `127.0.0.1:${port}`;
  });
  afterAll(() => new Promise<void>((resolve) => server.tryShutdown(() => resolve())));

  const call = (
    upstream: UpstreamSession,
    name: string,
    message: Buffer,
  ): { cancel: () => void; result: Promise<grpc.StatusObject | Buffer> } => {
    let cancel = (): void => undefined;
    const result = new Promise<grpc.StatusObject | Buffer>((resolve) => {
      cancel = upstream.unary(`/flotilla.test.v1.Relay/${name}`, message, {}, Date.now() + 60_000, (s, r) =>
        resolve(s ?? (r as Buffer)),
      );
    });
    return { cancel, result };
  };

  it('keeps the session, and every other call on it, through more cancels than the server allows resets', async () => {
    const upstream = upstreamTo(address, 60_000);
    const session = upstream.current();
    let goaway: number | undefined;
    session.on('goaway', (code: number) => (goaway = code));
    // One call that stays in flight through the storm, then 1,500 that callers give up on: Node's HTTP/2
    // server (nghttp2's defence against rapid resets) ends a session after about 1,000 resets in a burst.
    const survivor = call(upstream, 'Hold', Buffer.from('survivor'));
    await waitFor('the survivor held', () => held.length === 1, { intervalMs: 5 });
    const abandoned = Array.from({ length: 1500 }, () => call(upstream, 'Hold', Buffer.from('x')));
    await waitFor('every call held', () => held.length === 1501, { intervalMs: 5 });
    for (const c of abandoned) c.cancel();
    for (const c of abandoned) expect(await c.result).toMatchObject({ code: grpc.status.CANCELLED });

    // Cancels within the budget still reach the server, so it can stop work nobody waits for.
    await waitFor('the budgeted cancels at the server', () => cancelledAtServer >= RESET_BURST, {
      intervalMs: 5,
    });
    const echoed = await call(upstream, 'Echo', Buffer.from('after the storm')).result;
    expect(echoed).toEqual(Buffer.from('after the storm'));
    held[0](null, Buffer.from('still here'));
    expect(await survivor.result).toEqual(Buffer.from('still here'));
    expect(goaway).toBeUndefined();
    expect(upstream.current()).toBe(session);

    for (const callback of held.splice(0)) callback(null, Buffer.alloc(0));
    upstream.close();
  });
});

const upstreamTo = (address: string, keepaliveMs: number): UpstreamSession =>
  new UpstreamSession({ address, maxReceiveBytes: 1024, keepaliveMs, keepaliveTimeoutMs: 1000 });
