import { Ec2Error } from './errors';
import type { Filter } from './params';

/**
 * EC2 filters over described items: a filter matches when any of the item's values for its name matches any
 * of its values, with `*` (any run) and `?` (one character) wildcards, `\` escaping them. All filters must
 * match (AND).
 */

export function wildcardPattern(value: string): RegExp {
  let source = '';
  for (let i = 0; i < value.length; i++) {
    const c = value[i];
    if (c === '\\' && i + 1 < value.length) source += escapeRegExp(value[++i]);
    else if (c === '*') source += '[\\s\\S]*';
    else if (c === '?') source += '[\\s\\S]';
    else source += escapeRegExp(c);
  }
  return new RegExp(`^${source}$`);
}

function escapeRegExp(c: string): string {
  return c.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
}

/** An item's values for a filter name; undefined when the name is not a filter of this action. */
export type FilterReader<T> = (item: T, name: string) => readonly string[] | undefined;

/**
 * Checks every filter name against `reader` on a probe item (or the names list) before filtering, so an
 * unknown filter is an error even on an empty list, as on EC2.
 */
export function compileFilters<T>(
  filters: Filter[],
  known: (name: string) => boolean,
  reader: FilterReader<T>,
): (item: T) => boolean {
  for (const f of filters)
    if (!known(f.name))
      throw new Ec2Error('InvalidParameterValue', `The filter '${f.name.slice(0, 200)}' is invalid`);
  const compiled = filters.map((f) => ({ name: f.name, patterns: f.values.map(wildcardPattern) }));
  return (item) =>
    compiled.every(({ name, patterns }) => {
      const values = reader(item, name) ?? [];
      return patterns.some((p) => values.some((v) => p.test(v)));
    });
}

/** Filters a tag set: `tag:<key>`, `tag-key`, `tag-value`; undefined when the name is none of these. */
export function tagFilterValues(
  tags: ReadonlyArray<{ key: string; value: string }>,
  name: string,
): string[] | undefined {
  if (name.startsWith('tag:')) {
    const key = name.slice(4);
    return tags.filter((t) => t.key === key).map((t) => t.value);
  }
  if (name === 'tag-key') return tags.map((t) => t.key);
  if (name === 'tag-value') return tags.map((t) => t.value);
  return undefined;
}

export function isTagFilter(name: string): boolean {
  return name.startsWith('tag:') || name === 'tag-key' || name === 'tag-value';
}
