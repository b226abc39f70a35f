import * as http2 from 'node:http2';
import { UpstreamSession } from './upstream-session';

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
    const upstream = new UpstreamSession({
      address,
      maxReceiveBytes: 1024,
      keepaliveMs: 10,
      keepaliveTimeoutMs: 1000,
    });
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
