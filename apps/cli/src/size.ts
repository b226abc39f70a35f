/**
 * Byte sizes as people type and read them. Suffixes are powers of 1024, as qemu-img's: "10G" is 10 GiB.
 * Pure: the CLI's option parsers and tables use these, and their tests need nothing else.
 */

const units: Record<string, number> = {
  '': 1,
  B: 1,
  K: 1024,
  M: 1024 ** 2,
  G: 1024 ** 3,
  T: 1024 ** 4,
  P: 1024 ** 5,
};

const sizePattern = /^(\d+(?:\.\d+)?)\s*(?:([KMGTP])(?:I?B)?|(B))?$/i;

/**
 * "10G", "512M", "1.5T", "64KiB", "2GB" (binary too) or a plain number of bytes → bytes. Fractions are
 * allowed with a suffix and rounded up to a whole byte; the result must be a positive safe integer.
 */
export function parseSize(raw: string): { bytes: number } | { error: string } {
  const text = raw.trim();
  const m = sizePattern.exec(text);
  if (!m)
    return {
      error: `expected a size such as 10G, 512M, 1T or a number of bytes (suffixes K, M, G, T, P are powers of 1024), got "${raw}"`,
    };
  const unit = (m[2] ?? m[3] ?? '').toUpperCase();
  if (unit === '' || unit === 'B') {
    if (m[1].includes('.')) return { error: `a number of bytes is whole, got "${raw}"` };
  }
  const bytes = Math.ceil(Number(m[1]) * units[unit]);
  if (!Number.isSafeInteger(bytes)) return { error: `"${raw}" is too large` };
  if (bytes <= 0) return { error: `a size is above zero, got "${raw}"` };
  return { bytes };
}

const binary = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** 0 → "0 B", 1536 → "1.5 KiB", 10 GiB → "10 GiB", 1.25 GiB → "1.3 GiB" (one decimal, trailing .0 dropped). */
export function formatBytes(bytes: number | undefined): string {
  if (bytes === undefined || bytes === null || !Number.isFinite(bytes)) return '';
  const sign = bytes < 0 ? '-' : '';
  let n = Math.abs(bytes);
  let i = 0;
  while (n >= 1024 && i < binary.length - 1) {
    n /= 1024;
    i += 1;
  }
  const rounded = i === 0 ? String(n) : String(+n.toFixed(1));
  // 1023.96 MiB rounds to "1024 MiB": say "1 GiB" instead.
  if (rounded === '1024' && i < binary.length - 1) return `${sign}1 ${binary[i + 1]}`;
  return `${sign}${rounded} ${binary[i]}`;
}

/** Always in GiB, for capacity columns that people compare down a table: 10737418240 → "10.0 GiB". */
export function gibibytes(bytes: number | undefined): string {
  if (bytes === undefined || bytes === null || !Number.isFinite(bytes)) return '';
  const gib = bytes / 1024 ** 3;
  // Two decimals below 1 GiB, so a few MiB in use do not read as nothing.
  return `${gib >= 100 ? gib.toFixed(0) : gib >= 1 || gib === 0 ? gib.toFixed(1) : gib.toFixed(2)} GiB`;
}

/** "used of total (ratio%)", e.g. "3.2 GiB of 100 GiB (3%)"; without a total, the used part alone. */
export function share(used: number | undefined, total: number | undefined): string {
  if (!total) return formatBytes(used ?? 0);
  const pct = Math.round(((used ?? 0) / total) * 100);
  return `${formatBytes(used ?? 0)} of ${formatBytes(total)} (${pct}%)`;
}
