import { randomBytes } from 'node:crypto';

export interface PageWalksOptions {
  /** How long a walk's listing serves its next pages (from the first page). */
  ttlMs?: number;
  /** Items kept over all walks; the oldest walks go first past it. */
  maxItems?: number;
  now?: () => number;
}

interface Walk<T> {
  scope: string;
  items: readonly T[];
  expires: number;
}

/**
 * Point-in-time listings for paginated walks. The first page of a listing that has more pages keeps the
 * sorted, filtered list it was cut from; the NextToken names the walk, and the pages after it are cut from
 * that same list instead of listing the tenant again. A paginator's walk then sees one consistent listing:
 * no instance twice, none skipped, at the cost of one listing rather than one per page. A walk that expired,
 * was evicted or was kept by another gateway is not an error: the page is cut from a fresh listing after
 * the token's last key, as before.
 */
export class PageWalks<T> {
  private readonly walks = new Map<string, Walk<T>>();
  private kept = 0;
  private readonly ttlMs: number;
  private readonly maxItems: number;
  private readonly now: () => number;

  constructor(o: PageWalksOptions = {}) {
    this.ttlMs = o.ttlMs ?? 60_000;
    this.maxItems = o.maxItems ?? 50_000;
    this.now = o.now ?? Date.now;
  }

  /** Keeps a listing for its next pages; the id goes into the NextToken. scope: who asked, and how. */
  keep(scope: string, items: readonly T[]): string {
    this.expire();
    const id = randomBytes(12).toString('base64url');
    this.walks.set(id, { scope, items, expires: this.now() + this.ttlMs });
    this.kept += items.length;
    // Oldest first: a Map iterates in insertion order.
    for (const [oldest, walk] of this.walks) {
      if (this.kept <= this.maxItems || oldest === id) break;
      this.drop(oldest, walk);
    }
    return id;
  }

  /** The walk's listing, when it is still kept for this scope (another tenant's or query's id finds nothing). */
  find(id: string, scope: string): readonly T[] | undefined {
    const walk = this.walks.get(id);
    if (!walk || walk.scope !== scope) return undefined;
    if (walk.expires <= this.now()) {
      this.drop(id, walk);
      return undefined;
    }
    return walk.items;
  }

  /** Walks and items kept now (for tests and metrics). */
  size(): { walks: number; items: number } {
    return { walks: this.walks.size, items: this.kept };
  }

  private expire(): void {
    const now = this.now();
    // Every walk lives as long, so they expire in the order they were kept.
    for (const [id, walk] of this.walks) {
      if (walk.expires > now) break;
      this.drop(id, walk);
    }
  }

  private drop(id: string, walk: Walk<T>): void {
    this.walks.delete(id);
    this.kept -= walk.items.length;
  }
}
