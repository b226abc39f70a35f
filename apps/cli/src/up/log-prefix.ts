/**
 * Turns the output lines of `up`'s children into one readable stream: every line prefixed with its service
 * name, padded to a common width; pino JSON lines rewritten as `name | LEVEL msg key=value`; anything else
 * passed through as is. Colours only when writing to a terminal.
 */

const ansi = (code: string) => (s: string) => `\u001b[${code}m${s}\u001b[0m`;

/** Distinct, readable colours assigned to services in start order. */
const palette = ['36', '33', '35', '32', '34', '96', '93', '95', '92', '94'].map(ansi);

export type Paint = (s: string) => string;

export function colourFor(index: number): Paint {
  return palette[index % palette.length];
}

const levels: Record<number, { label: string; paint?: Paint }> = {
  10: { label: 'TRACE', paint: ansi('2') },
  20: { label: 'DEBUG', paint: ansi('2') },
  30: { label: 'INFO' },
  40: { label: 'WARN', paint: ansi('33') },
  50: { label: 'ERROR', paint: ansi('31') },
  60: { label: 'FATAL', paint: ansi('1;31') },
};

/** Keys every pino line carries that say nothing new in a prefixed one-liner. */
const dropped = new Set(['level', 'time', 'pid', 'hostname', 'name', 'service', 'msg', 'v']);

export interface PrefixOptions {
  /** Width the name is padded to (the longest service name). */
  width: number;
  /** Colour of this service's name; undefined writes plain text. */
  paint?: Paint;
}

/** One output line of a child, prefixed and (for pino JSON) rewritten. */
export function prefixLine(name: string, line: string, options: PrefixOptions): string {
  const label = name.padEnd(options.width);
  const prefix = `${options.paint ? options.paint(label) : label} | `;
  return prefix + (pinoToText(line, Boolean(options.paint)) ?? line);
}

/** `LEVEL msg key=value …` for a pino JSON line, or undefined when the line is not one. */
export function pinoToText(line: string, colour = false): string | undefined {
  const trimmed = line.trim();
  if (!trimmed.startsWith('{') || !trimmed.endsWith('}')) return undefined;
  let record: Record<string, unknown>;
  try {
    const parsed: unknown = JSON.parse(trimmed);
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return undefined;
    record = parsed as Record<string, unknown>;
  } catch {
    return undefined;
  }
  if (typeof record.level !== 'number' && typeof record.msg !== 'string') return undefined;
  const parts: string[] = [];
  if (typeof record.level === 'number') {
    const level = levels[record.level] ?? { label: `L${record.level}` };
    const text = level.label.padEnd(5);
    parts.push(colour && level.paint ? level.paint(text) : text);
  }
  if (typeof record.msg === 'string' && record.msg) parts.push(record.msg);
  for (const [key, value] of Object.entries(record)) {
    if (dropped.has(key) || value === undefined) continue;
    parts.push(`${key}=${formatValue(key, value)}`);
  }
  return parts.join(' ');
}

function formatValue(key: string, value: unknown): string {
  if (typeof value === 'string') return /^[^\s"=]+$/.test(value) ? value : JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'boolean' || value === null) return String(value);
  // pino's error serializer: {type, message, stack}; the message is what belongs on one line.
  if (
    (key === 'err' || key === 'error') &&
    typeof value === 'object' &&
    typeof (value as { message?: unknown }).message === 'string'
  )
    return JSON.stringify((value as { message: string }).message);
  return JSON.stringify(value);
}

/** Writes children's lines with their prefixes; each name keeps its colour for the whole run. */
export class PrefixedWriter {
  private readonly width: number;
  private readonly paints = new Map<string, Paint>();

  constructor(
    names: string[],
    private readonly colour: boolean,
    private readonly stdout: NodeJS.WritableStream = process.stdout,
    private readonly stderr: NodeJS.WritableStream = process.stderr,
  ) {
    this.width = Math.max(...names.map((n) => n.length));
    names.forEach((n, i) => this.paints.set(n, colourFor(i)));
  }

  write(name: string, stream: 'stdout' | 'stderr', text: string): void {
    const line = prefixLine(name, text, {
      width: this.width,
      paint: this.colour ? this.paints.get(name) : undefined,
    });
    (stream === 'stderr' ? this.stderr : this.stdout).write(`${line}\n`);
  }
}
