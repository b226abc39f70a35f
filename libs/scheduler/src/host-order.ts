import type { CandidateView } from './model';

/** What the order needs of a host besides what its compare looks at: free capacity, to skip blocks. */
type OrderedHost = Pick<CandidateView, 'freeMemoryMib' | 'freeVcpus'>;

/** Blocks split above this size; small enough that a splice or a rescan of one block costs well under 1 µs. */
export const MAX_BLOCK_SIZE = 64;
/** A block this small merges into a neighbour when they fit together, so the block count stays near n/32. */
const MERGE_BELOW_SIZE = MAX_BLOCK_SIZE / 4;

interface Block<T> {
  /** Sorted by the order's compare; never empty. */
  items: T[];
  /** The largest free memory of any host in the block: the walk skips the block when a request needs more. */
  maxFreeMemoryMib: number;
  /** The largest free vCPUs of any host in the block: the walk skips the block when a request needs more. */
  maxFreeVcpus: number;
}

/**
 * Hosts kept sorted best-first by a request-independent order (a weigher's order within one capacity
 * class), in blocks of at most MAX_BLOCK_SIZE (a one-level B-tree, like Python's sortedcontainers). Each
 * block knows the most free memory and vCPUs of its hosts, so a search for "the best host with at least
 * m MiB and v vCPUs free" skips whole blocks that cannot hold the request.
 *
 * Invariant: nothing the order compares (allocation, free capacity, id) may change while a host is in the
 * order; callers delete it, change it, and insert it again.
 */
export class HostOrder<T extends OrderedHost> {
  private readonly blocks: Block<T>[] = [];
  private count = 0;

  constructor(private readonly compare: (a: T, b: T) => number) {}

  get size(): number {
    return this.count;
  }

  insert(host: T): void {
    this.count += 1;
    if (this.blocks.length === 0) {
      this.blocks.push({ items: [host], maxFreeMemoryMib: host.freeMemoryMib, maxFreeVcpus: host.freeVcpus });
      return;
    }
    const blockIndex = Math.min(this.blockIndexFor(host), this.blocks.length - 1);
    const block = this.blocks[blockIndex];
    block.items.splice(this.positionIn(block.items, host), 0, host);
    block.maxFreeMemoryMib = Math.max(block.maxFreeMemoryMib, host.freeMemoryMib);
    block.maxFreeVcpus = Math.max(block.maxFreeVcpus, host.freeVcpus);
    if (block.items.length > MAX_BLOCK_SIZE) this.split(blockIndex);
  }

  /** Removes the host; false when it is not in the order (under its current key). */
  delete(host: T): boolean {
    const blockIndex = this.blockIndexFor(host);
    if (blockIndex === this.blocks.length) return false;
    const block = this.blocks[blockIndex];
    const position = this.positionIn(block.items, host);
    if (position === block.items.length || block.items[position] !== host) return false;
    block.items.splice(position, 1);
    this.count -= 1;
    if (block.items.length === 0) {
      this.blocks.splice(blockIndex, 1);
      return true;
    }
    if (host.freeMemoryMib >= block.maxFreeMemoryMib || host.freeVcpus >= block.maxFreeVcpus) {
      refreshMaxima(block);
    }
    if (block.items.length < MERGE_BELOW_SIZE) this.mergeWithNeighbour(blockIndex);
    return true;
  }

  /**
   * The first host in order with at least the given free memory and vCPUs that `accept` also takes.
   * Skipping blocks and hosts on free capacity is exact: it only skips hosts the memory and vCPU filters
   * would reject, so the answer is the best host in the order that passes `accept`.
   *
   * `stopAt`, when given, must hold for every host after one it holds for (e.g. "ranks below the best host
   * found elsewhere"): the walk gives up, finding nothing, at the first host it looks at that it holds for.
   */
  findFirst(
    minFreeMemoryMib: number,
    minFreeVcpus: number,
    accept: (host: T) => boolean,
    stopAt?: (host: T) => boolean,
  ): T | undefined {
    for (const block of this.blocks) {
      if (block.maxFreeMemoryMib < minFreeMemoryMib || block.maxFreeVcpus < minFreeVcpus) continue;
      for (const host of block.items) {
        if (stopAt !== undefined && stopAt(host)) return undefined;
        if (host.freeMemoryMib >= minFreeMemoryMib && host.freeVcpus >= minFreeVcpus && accept(host))
          return host;
      }
    }
    return undefined;
  }

  /** The best host, or undefined when the order is empty. */
  first(): T | undefined {
    return this.blocks.length === 0 ? undefined : this.blocks[0].items[0];
  }

  /** Every host, best first. */
  *[Symbol.iterator](): IterableIterator<T> {
    for (const block of this.blocks) yield* block.items;
  }

  /** For tests: block sizes, to check splitting and merging keep blocks within bounds. */
  blockSizes(): number[] {
    return this.blocks.map((block) => block.items.length);
  }

  /** The first block whose last host is not before `host` (blocks.length when there is none). */
  private blockIndexFor(host: T): number {
    let low = 0;
    let high = this.blocks.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      const items = this.blocks[middle].items;
      if (this.compare(items[items.length - 1], host) < 0) low = middle + 1;
      else high = middle;
    }
    return low;
  }

  /** The first position in `items` whose host is not before `host`. */
  private positionIn(items: readonly T[], host: T): number {
    let low = 0;
    let high = items.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (this.compare(items[middle], host) < 0) low = middle + 1;
      else high = middle;
    }
    return low;
  }

  private split(blockIndex: number): void {
    const block = this.blocks[blockIndex];
    const upper: Block<T> = {
      items: block.items.splice(block.items.length >>> 1),
      maxFreeMemoryMib: 0,
      maxFreeVcpus: 0,
    };
    refreshMaxima(block);
    refreshMaxima(upper);
    this.blocks.splice(blockIndex + 1, 0, upper);
  }

  private mergeWithNeighbour(blockIndex: number): void {
    const block = this.blocks[blockIndex];
    const previous = this.blocks[blockIndex - 1];
    if (previous !== undefined && previous.items.length + block.items.length <= MAX_BLOCK_SIZE) {
      previous.items.push(...block.items);
      previous.maxFreeMemoryMib = Math.max(previous.maxFreeMemoryMib, block.maxFreeMemoryMib);
      previous.maxFreeVcpus = Math.max(previous.maxFreeVcpus, block.maxFreeVcpus);
      this.blocks.splice(blockIndex, 1);
      return;
    }
    const next = this.blocks[blockIndex + 1];
    if (next !== undefined && next.items.length + block.items.length <= MAX_BLOCK_SIZE) {
      next.items.unshift(...block.items);
      next.maxFreeMemoryMib = Math.max(next.maxFreeMemoryMib, block.maxFreeMemoryMib);
      next.maxFreeVcpus = Math.max(next.maxFreeVcpus, block.maxFreeVcpus);
      this.blocks.splice(blockIndex, 1);
    }
  }
}

function refreshMaxima<T extends OrderedHost>(block: Block<T>): void {
  let maxFreeMemoryMib = -Infinity;
  let maxFreeVcpus = -Infinity;
  for (const host of block.items) {
    if (host.freeMemoryMib > maxFreeMemoryMib) maxFreeMemoryMib = host.freeMemoryMib;
    if (host.freeVcpus > maxFreeVcpus) maxFreeVcpus = host.freeVcpus;
  }
  block.maxFreeMemoryMib = maxFreeMemoryMib;
  block.maxFreeVcpus = maxFreeVcpus;
}
