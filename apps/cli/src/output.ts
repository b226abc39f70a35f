import Table from 'cli-table3';

/** Borderless, kubectl-like tables: easy to read and to grep. */
const plainChars = {
  top: '',
  'top-mid': '',
  'top-left': '',
  'top-right': '',
  bottom: '',
  'bottom-mid': '',
  'bottom-left': '',
  'bottom-right': '',
  left: '',
  'left-mid': '',
  mid: '',
  'mid-mid': '',
  right: '',
  'right-mid': '',
  middle: '  ',
};

export type Cell = string | number | boolean | undefined | null;

/**
 * Where a command's results go: tables for people, raw response objects as JSON for scripts (--json).
 * Results go to stdout; notes (hints, progress) to stderr so they never mix into what a script parses.
 */
export class Output {
  constructor(
    readonly json: boolean,
    private readonly stdout: NodeJS.WritableStream & { isTTY?: boolean } = process.stdout,
    private readonly stderr: NodeJS.WritableStream & { isTTY?: boolean } = process.stderr,
  ) {}

  /** Progress bars and hints only make sense to a person watching a terminal. */
  get interactive(): boolean {
    return !this.json && Boolean(this.stderr.isTTY);
  }

  /** Prints a raw response object (pretty) for scripts. */
  printJson(value: unknown): void {
    this.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
  }

  /** Prints one object per line (streams, e.g. watch --json). */
  printJsonLine(value: unknown): void {
    this.stdout.write(`${JSON.stringify(value)}\n`);
  }

  line(text: string): void {
    this.stdout.write(`${text}\n`);
  }

  /** A hint for people, on stderr. */
  note(text: string): void {
    this.stderr.write(`${text}\n`);
  }

  /** A table with a header row; an empty list prints the given sentence instead (on stderr). */
  table(head: string[], rows: Cell[][], empty = 'nothing found'): void {
    if (!rows.length) {
      this.note(empty);
      return;
    }
    const t = new Table({
      head,
      chars: plainChars,
      style: {
        head: this.stdout.isTTY ? ['bold'] : [],
        border: [],
        'padding-left': 0,
        'padding-right': 0,
        compact: true,
      },
    });
    for (const row of rows) t.push(row.map(cell));
    this.line(t.toString().replace(/ +$/gm, ''));
  }

  /** Field/value pairs of one resource; empty values are left out. */
  details(pairs: Array<[string, Cell]>): void {
    const t = new Table({
      chars: plainChars,
      style: { head: [], border: [], 'padding-left': 0, 'padding-right': 0, compact: true },
    });
    for (const [k, v] of pairs) if (cell(v) !== '') t.push([`${k}:`, cell(v)]);
    this.line(t.toString().replace(/ +$/gm, ''));
  }
}

function cell(v: Cell): string {
  if (v === undefined || v === null) return '';
  return String(v);
}
