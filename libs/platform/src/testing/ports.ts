import * as fs from 'node:fs';
import * as net from 'node:net';

/**
 * Loopback ports for services that tests start. A port picked with listen(0) and closed again comes from the
 * kernel's ephemeral range, so until the service binds it, any other process's listen(0) or outgoing
 * connection may take it: with parallel jest workers that happened (EADDRINUSE in a suite's beforeAll).
 * Ports here come from below the ephemeral range, which the kernel never hands out by itself, and each jest
 * worker has a slice of its own, so between the pick and the bind nobody else picks the same port.
 * `npm test` runs two jest processes side by side (tools/test.mjs), whose workers share the numbers 1..n:
 * FLOTILLA_TEST_LANE (0, 1, …) moves the second one's workers to slices of their own.
 */

const SLICE = 500;
const SLICES = 20;
const BASE = 10_000;
let next = 0;

/** This jest worker's number across every jest process of the run: lanes are 4 workers apart. */
function workerIndex(): number {
  const worker = Math.max(1, Number(process.env.JEST_WORKER_ID) || 1);
  const lane = Math.max(0, Number(process.env.FLOTILLA_TEST_LANE) || 0);
  return lane * 4 + worker - 1;
}

/** The kernel's ephemeral range starts above our slices (the default 32768 does); else listen(0) it is. */
function slicesAreSafe(): boolean {
  try {
    const low = Number(
      fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0],
    );
    return low >= 32_000; // above upBasePort's slots too
  } catch {
    return false;
  }
}
const useSlices = slicesAreSafe();

function listenable(port: number): Promise<number | undefined> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(undefined));
    server.listen(port, '127.0.0.1', () => {
      const bound = (server.address() as net.AddressInfo).port;
      server.close(() => resolve(bound));
    });
  });
}

/** A loopback port nothing listens on, reserved for this jest worker (see above). */
export async function freePort(): Promise<number> {
  if (!useSlices) {
    const port = await listenable(0);
    if (port === undefined) throw new Error('freePort: cannot listen on 127.0.0.1');
    return port;
  }
  const first = BASE + (workerIndex() % SLICES) * SLICE;
  for (let tries = 0; tries < SLICE; tries++) {
    const port = first + (next++ % SLICE);
    if ((await listenable(port)) !== undefined) return port;
  }
  throw new Error(`freePort: every port in ${first}..${first + SLICE - 1} is in use`);
}

const UP_SPAN = 1500;
const UP_SLOTS = 8;

/**
 * The base port for a `flotilla up` cloud a test starts (`--base-port`): a slot between 20000 and 31999,
 * above freePort's slices and below the ephemeral range, 1500 apart. `offsets` are where that cloud listens
 * relative to its base (up's own port plan). Each jest worker starts at a slot of its own and moves on past
 * a slot where one of them is held (a cloud an earlier suite left behind).
 */
export async function upBasePort(offsets: readonly number[]): Promise<number> {
  if (offsets.some((o) => o < 0 || o >= UP_SPAN))
    throw new Error(
      `upBasePort: an up cloud must fit in ${UP_SPAN} ports, got offsets ${offsets.join(', ')}`,
    );
  for (let i = 0; i < UP_SLOTS; i++) {
    const base = 20_000 + ((workerIndex() + i) % UP_SLOTS) * UP_SPAN;
    const free = await Promise.all(offsets.map((offset) => listenable(base + offset)));
    if (free.every((port) => port !== undefined)) return base;
  }
  throw new Error('upBasePort: every slot between 20000 and 31999 has a port in use');
}
