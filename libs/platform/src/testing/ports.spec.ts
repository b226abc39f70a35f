import * as fs from 'node:fs';
import * as net from 'node:net';
import { freePort, upBasePort } from './ports';

const ephemeralLow = Number(
  fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').split(/\s+/)[0],
);

function hold(port: number): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}
const release = (server: net.Server) => new Promise<void>((resolve) => server.close(() => resolve()));

describe('test ports', () => {
  it('hands out distinct ports below the kernel ephemeral range, each one bindable', async () => {
    const ports = [await freePort(), await freePort(), await freePort()];
    expect(new Set(ports).size).toBe(3);
    for (const port of ports) {
      if (ephemeralLow >= 32_000) expect(port).toBeLessThan(ephemeralLow);
      await release(await hold(port));
    }
  });

  it('passes over a port something already listens on', async () => {
    const taken = await freePort();
    const server = await hold(taken + 1);
    try {
      const next = await freePort();
      expect(next).not.toBe(taken + 1);
      if (ephemeralLow >= 32_000) expect(next).toBe(taken + 2); // the next one in this worker's slice
    } finally {
      await release(server);
    }
  });

  it('moves an up cloud to the next slot while a port of its own slot is held', async () => {
    const offsets = [0, 1, 1374];
    const base = await upBasePort(offsets);
    expect(base).toBeGreaterThanOrEqual(20_000);
    const server = await hold(base + 1374);
    try {
      const next = await upBasePort(offsets);
      expect(next).not.toBe(base);
      expect(Math.abs(next - base) % 1500).toBe(0);
    } finally {
      await release(server);
    }
    expect(await upBasePort(offsets)).toBe(base);
  });

  it('gives the second lane of `npm test` (FLOTILLA_TEST_LANE=1) its own slice and its own up slot', async () => {
    const saved = process.env.FLOTILLA_TEST_LANE;
    const slice = (port: number) => Math.floor((port - 10_000) / 500);
    try {
      delete process.env.FLOTILLA_TEST_LANE;
      const first = [await freePort(), await upBasePort([0])];
      process.env.FLOTILLA_TEST_LANE = '1';
      const second = [await freePort(), await upBasePort([0])];
      if (ephemeralLow >= 32_000) expect(slice(second[0]) - slice(first[0])).toBe(4);
      expect(second[1]).not.toBe(first[1]);
    } finally {
      if (saved === undefined) delete process.env.FLOTILLA_TEST_LANE;
      else process.env.FLOTILLA_TEST_LANE = saved;
    }
  });
});
