import type { InstanceMap, InstanceRecord } from './instance-map';

interface Kept {
  version: string;
  rows: readonly InstanceRecord[];
}

/**
 * Tenants' instance rows kept between listings. Every DescribeInstances of the whole tenant needs them all,
 * and reading and parsing a thousand rows cost more than the rest of the front's work on them; they change
 * only when instances are launched, first listed, terminated or forgotten. A listing reads the tenant's
 * version (one row, moved by every change in the same transaction: Ec2InstanceVersions) and uses the kept rows
 * while it is the version they were read at. The version is read before the rows, so kept rows are never
 * older than their version says. At most `maxRows` rows are kept over all tenants.
 */
export class InstanceRows {
  private readonly kept = new Map<string, Kept>();
  private keptRows = 0;

  constructor(private readonly maxRows = 50_000) {}

  /** The tenant's rows as sync() takes them: copies, which the caller may change. */
  async of(map: InstanceMap, tenantId: string): Promise<InstanceRecord[]> {
    const version = await map.versionOf(tenantId);
    const kept = this.kept.get(tenantId);
    if (kept?.version === version) return kept.rows.map((r) => ({ ...r }));
    const rows = await map.rowsOf(tenantId);
    this.keep(tenantId, { version, rows: rows.map((r) => ({ ...r })) });
    return rows;
  }

  private keep(tenantId: string, entry: Kept): void {
    this.keptRows -= this.kept.get(tenantId)?.rows.length ?? 0;
    this.kept.delete(tenantId);
    if (entry.rows.length > this.maxRows) return;
    // The tenants read longest ago go first (a Map keeps insertion order; a tenant read again moves to the end).
    for (const [oldest, { rows }] of this.kept) {
      if (this.keptRows + entry.rows.length <= this.maxRows) break;
      this.kept.delete(oldest);
      this.keptRows -= rows.length;
    }
    this.kept.set(tenantId, entry);
    this.keptRows += entry.rows.length;
  }
}
