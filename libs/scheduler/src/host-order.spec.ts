import { HostOrder, MAX_BLOCK_SIZE } from './host-order';
import { seededRandom } from './testing/random-cluster';
import { compareHostIds } from './weighers/placement-weigher';

interface Entry {
  id: string;
  freeMemoryMib: number;
  freeVcpus: number;
}

/** Any request-independent strict order will do: most free memory, then most free vCPUs, then id. */
function mostFreeFirst(a: Entry, b: Entry): number {
  return b.freeMemoryMib - a.freeMemoryMib || b.freeVcpus - a.freeVcpus || compareHostIds(a, b);
}

function sortedIds(entries: Iterable<Entry>): string[] {
  return [...entries].sort(mostFreeFirst).map((entry) => entry.id);
}

describe('HostOrder', () => {
  it('keeps hosts sorted best first through random inserts, key changes and deletes', () => {
    const random = seededRandom(7);
    const order = new HostOrder<Entry>(mostFreeFirst);
    const live = new Map<string, Entry>();
    for (let step = 0; step < 5000; step += 1) {
      const roll = random();
      if (roll < 0.5 || live.size === 0) {
        const entry = {
          id: `h${step}`,
          freeMemoryMib: Math.floor(random() * 64) * 512,
          freeVcpus: Math.floor(random() * 8),
        };
        order.insert(entry);
        live.set(entry.id, entry);
      } else {
        const entry = [...live.values()][Math.floor(random() * live.size)];
        expect(order.delete(entry)).toBe(true);
        if (roll < 0.8) {
          entry.freeMemoryMib -= 512;
          order.insert(entry);
        } else {
          live.delete(entry.id);
        }
      }
    }
    expect(order.size).toBe(live.size);
    expect([...order].map((entry) => entry.id)).toEqual(sortedIds(live.values()));
    for (const size of order.blockSizes()) expect(size).toBeLessThanOrEqual(MAX_BLOCK_SIZE);
  });

  it('reports deleting a host that is not in the order', () => {
    const order = new HostOrder<Entry>(mostFreeFirst);
    order.insert({ id: 'a', freeMemoryMib: 1, freeVcpus: 1 });
    expect(order.delete({ id: 'b', freeMemoryMib: 1, freeVcpus: 1 })).toBe(false);
  });

  it('finds the first host in order with enough free memory and vCPUs that is accepted', () => {
    const order = new HostOrder<Entry>(mostFreeFirst);
    for (let index = 0; index < 500; index += 1) {
      order.insert({
        id: `h${String(index).padStart(3, '0')}`,
        freeMemoryMib: index * 10,
        freeVcpus: index % 7,
      });
    }
    const expected = [...order].find(
      (host) => host.freeMemoryMib >= 100 && host.freeVcpus >= 6 && host.id.endsWith('3'),
    );
    expect(order.findFirst(100, 6, (host) => host.id.endsWith('3'))).toBe(expected);
    expect(expected).toBeDefined();
  });

  it('gives up at the first host it looks at that stopAt holds for', () => {
    const order = new HostOrder<Entry>(mostFreeFirst);
    for (let index = 0; index < 300; index += 1)
      order.insert({ id: `h${String(index).padStart(3, '0')}`, freeMemoryMib: 1000 - index, freeVcpus: 4 });
    expect(order.first()?.id).toBe('h000');
    const looked: string[] = [];
    const stopAt = (host: Entry) => {
      looked.push(host.id);
      return host.freeMemoryMib < 800;
    };
    expect(order.findFirst(1, 1, (host) => host.id === 'h250', stopAt)).toBeUndefined();
    expect(looked).toHaveLength(202); // h000 … h201, the first with less than 800 free
    expect(order.findFirst(1, 1, (host) => host.id === 'h150', stopAt)?.id).toBe('h150');
  });

  it('has no first host when empty', () => {
    expect(new HostOrder<Entry>(mostFreeFirst).first()).toBeUndefined();
  });

  it('finds nothing when no block holds enough free memory', () => {
    const order = new HostOrder<Entry>(mostFreeFirst);
    for (let index = 0; index < 200; index += 1)
      order.insert({ id: `h${index}`, freeMemoryMib: 100, freeVcpus: 4 });
    expect(order.findFirst(101, 1, () => true)).toBeUndefined();
  });
});
