/**
 * Hosts by label key=value, so a request for a rare label (a GPU model, one rack) can look at the few hosts
 * that carry it instead of walking the whole order until one turns up.
 */
export class LabelIndex<T extends { readonly labels: Readonly<Record<string, string>> }> {
  private readonly hostsByKey = new Map<string, Map<string, Set<T>>>();

  add(host: T): void {
    for (const [key, value] of Object.entries(host.labels)) {
      let hostsByValue = this.hostsByKey.get(key);
      if (hostsByValue === undefined) this.hostsByKey.set(key, (hostsByValue = new Map()));
      let hosts = hostsByValue.get(value);
      if (hosts === undefined) hostsByValue.set(value, (hosts = new Set()));
      hosts.add(host);
    }
  }

  delete(host: T): void {
    for (const [key, value] of Object.entries(host.labels)) {
      const hostsByValue = this.hostsByKey.get(key);
      const hosts = hostsByValue?.get(value);
      if (hostsByValue === undefined || hosts === undefined) continue;
      hosts.delete(host);
      if (hosts.size === 0) hostsByValue.delete(value);
      if (hostsByValue.size === 0) this.hostsByKey.delete(key);
    }
  }

  /**
   * The hosts carrying the rarest of the required labels: a superset of the hosts carrying all of them.
   * Empty when some required label is on no host; undefined when nothing is required.
   */
  rarestMatch(required: Readonly<Record<string, string>>): ReadonlySet<T> | undefined {
    let rarest: ReadonlySet<T> | undefined;
    for (const [key, value] of Object.entries(required)) {
      const hosts = this.hostsByKey.get(key)?.get(value) ?? EMPTY;
      if (rarest === undefined || hosts.size < rarest.size) rarest = hosts;
    }
    return rarest as ReadonlySet<T> | undefined;
  }
}

const EMPTY: ReadonlySet<never> = new Set<never>();
