/**
 * A bounded map that forgets what was not used lately, for memos read on every listing: two generations of at
 * most capacity / 2 entries each. A hit in the old generation moves the entry to the young one; when the young
 * one is full it becomes the old one and the old one is dropped. No per-hit bookkeeping, as an LRU list needs.
 */
export class Generations<K, V> {
  private young = new Map<K, V>();
  private old = new Map<K, V>();

  constructor(private readonly capacity: number) {}

  get(key: K): V | undefined {
    const hit = this.young.get(key);
    if (hit !== undefined) return hit;
    const aged = this.old.get(key);
    if (aged !== undefined) {
      this.old.delete(key);
      this.set(key, aged);
    }
    return aged;
  }

  set(key: K, value: V): void {
    if (!this.young.has(key) && this.young.size >= this.capacity / 2) {
      this.old = this.young;
      this.young = new Map();
    }
    this.young.set(key, value);
  }

  get size(): number {
    return this.young.size + this.old.size;
  }
}
