import { Ec2Error } from './errors';

/**
 * EC2 Query API parameters: the query string merged with a form body, and readers for EC2's flattened lists
 * ("InstanceId.1", "Filter.0.Value.2"). Indices are whatever numbers the client chose (0-based and gaps
 * included): lists are ordered by their numeric suffix, never counted from 1.
 */

export type Params = ReadonlyMap<string, string>;

/** Decodes the query and, for a form POST, the body; a body parameter wins over a query one of the same name. */
export function parseParams(
  rawQuery: string,
  body: Buffer,
  contentType: string | undefined,
): Map<string, string> {
  const params = new Map<string, string>();
  for (const [k, v] of new URLSearchParams(rawQuery)) params.set(k, v);
  const type = (contentType ?? '').split(';')[0].trim().toLowerCase();
  if (body.length && (type === 'application/x-www-form-urlencoded' || type === ''))
    for (const [k, v] of new URLSearchParams(body.toString('utf8'))) params.set(k, v);
  return params;
}

export function missing(name: string): Ec2Error {
  return new Ec2Error('MissingParameter', `The request must contain the parameter ${name}`);
}

export function invalidValue(name: string, value: string, why: string): Ec2Error {
  return new Ec2Error(
    'InvalidParameterValue',
    `Value (${value.slice(0, 200)}) for parameter ${name} is invalid. ${why}`,
  );
}

export function required(params: Params, name: string): string {
  const value = params.get(name);
  if (value === undefined || value === '') throw missing(name);
  return value;
}

export function optional(params: Params, name: string): string | undefined {
  const value = params.get(name);
  return value === undefined || value === '' ? undefined : value;
}

export function booleanParam(params: Params, name: string, fallback = false): boolean {
  const value = params.get(name);
  if (value === undefined || value === '') return fallback;
  if (/^true$/i.test(value)) return true;
  if (/^false$/i.test(value)) return false;
  throw invalidValue(name, value, 'Expected true or false.');
}

export function intParam(
  params: Params,
  name: string,
  bounds: { min: number; max: number },
): number | undefined {
  const value = params.get(name);
  if (value === undefined || value === '') return undefined;
  if (!/^-?\d{1,10}$/.test(value)) throw invalidValue(name, value, 'Expected an integer.');
  const n = Number(value);
  if (n < bounds.min || n > bounds.max)
    throw invalidValue(name, value, `It must be between ${bounds.min} and ${bounds.max}.`);
  return n;
}

/**
 * Members of the list `prefix` ("InstanceId" reads InstanceId.N), ordered by N, with each member's
 * remaining key path: `InstanceId.3` → ['', value]; `Filter.1.Value.2` → ['Value.2', value] under 1.
 */
function members(params: Params, prefix: string): Array<{ index: number; rest: Map<string, string> }> {
  const byIndex = new Map<number, Map<string, string>>();
  const head = `${prefix}.`;
  for (const [key, value] of params) {
    if (!key.startsWith(head)) continue;
    const m = /^(\d{1,9})(?:\.(.+))?$/.exec(key.slice(head.length));
    if (!m) continue;
    const index = Number(m[1]);
    let rest = byIndex.get(index);
    if (!rest) byIndex.set(index, (rest = new Map()));
    rest.set(m[2] ?? '', value);
  }
  return [...byIndex.entries()].sort(([a], [b]) => a - b).map(([index, rest]) => ({ index, rest }));
}

/** A list of plain values: `InstanceId.N`. */
export function listParam(params: Params, prefix: string): string[] {
  return members(params, prefix)
    .map((m) => m.rest.get(''))
    .filter((v): v is string => v !== undefined);
}

/** A list of structures: `Tag.N.Key`, `Tag.N.Value` → [{ Key, Value }], with each member's wire name. */
export function structListParam(
  params: Params,
  prefix: string,
): Array<{ name: string; fields: Map<string, string> }> {
  return members(params, prefix).map((m) => ({ name: `${prefix}.${m.index}`, fields: m.rest }));
}

/** Values of a nested list inside one structure member: fields `Value.N` → values ordered by N. */
export function nestedList(fields: ReadonlyMap<string, string>, prefix: string): string[] {
  return listParam(fields, prefix);
}

export interface Filter {
  name: string;
  values: string[];
}

/** `Filter.N.Name` + `Filter.N.Value.M`: AND across filters, OR across one filter's values. */
export function filtersParam(params: Params): Filter[] {
  return structListParam(params, 'Filter').map(({ name, fields }) => {
    const filterName = fields.get('Name');
    if (!filterName) throw missing(`${name}.Name`);
    return { name: filterName, values: nestedList(fields, 'Value') };
  });
}

export interface Tag {
  key: string;
  value: string;
}

/** `Tag.N.Key` / `Tag.N.Value` (Value optional: undefined when absent). */
export function tagsParam(
  params: Params,
  prefix = 'Tag',
  { valueRequired }: { valueRequired: boolean } = { valueRequired: false },
): Array<{ key: string; value: string | undefined }> {
  return structListParam(params, prefix).map(({ name, fields }) => {
    const key = fields.get('Key');
    if (key === undefined) throw missing(`${name}.Key`);
    const value = fields.get('Value');
    if (valueRequired && value === undefined) throw missing(`${name}.Value`);
    return { key, value };
  });
}

/** MaxResults/NextToken of a paginated Describe; MaxResults must not come with an id list. */
export function pageParams(
  params: Params,
  bounds: { min: number; max: number },
  idListName?: string,
): { maxResults: number | undefined; nextToken: string | undefined } {
  const maxResults = intParam(params, 'MaxResults', bounds);
  if (maxResults !== undefined && idListName && listParam(params, idListName).length)
    throw new Ec2Error(
      'InvalidParameterCombination',
      `The parameter ${idListName} cannot be used with the parameter MaxResults`,
    );
  return { maxResults, nextToken: optional(params, 'NextToken') };
}
