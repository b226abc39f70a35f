import type { Command } from 'commander';
import { collectFilter, intInRange } from '../args';
import type { Output } from '../output';

export interface ListOptions {
  filter?: string;
  pageSize?: number;
  pageToken?: string;
  all?: boolean;
}

/** The paging flags every `list` command takes. */
export function withListOptions(command: Command, filterHelp: string): Command {
  return command
    .option(
      '--filter <field=value>',
      `only items matching all terms (repeatable or comma-separated); ${filterHelp}`,
      collectFilter,
    )
    .option('--page-size <n>', 'items per page, 1..1000 (server default 100)', intInRange(1, 1000))
    .option('--page-token <token>', 'continue a previous listing from its next page token')
    .option('--all', 'fetch every page');
}

export interface Page<T> {
  items: T[];
  nextPageToken: string;
}

/** One page, or with --all every page; the result keeps the next page token of the last page fetched. */
export async function listWith<T>(
  options: ListOptions,
  fetch: (page: { pageSize: number; pageToken: string; filter: string }) => Promise<Page<T>>,
): Promise<Page<T>> {
  const items: T[] = [];
  let pageToken = options.pageToken ?? '';
  for (;;) {
    const page = await fetch({ pageSize: options.pageSize ?? 0, pageToken, filter: options.filter ?? '' });
    items.push(...page.items);
    pageToken = page.nextPageToken;
    if (!options.all || !pageToken) return { items, nextPageToken: pageToken };
  }
}

/** Tells people there is more (scripts read next_page_token from --json). */
export function noteMore(out: Output, page: Page<unknown>): void {
  if (page.nextPageToken && !out.json) out.note(`more: add --page-token ${page.nextPageToken} or --all`);
}
