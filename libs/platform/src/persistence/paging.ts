import { ObjectLiteral, SelectQueryBuilder } from 'typeorm';
import { encodePageToken, type PageSpec } from '@flotilla/domain';

/**
 * Reads one page of an ordered query: one row more than asked tells whether there is a next page, whose
 * token binds the offset to the filter text.
 */
export async function fetchPage<T extends ObjectLiteral>(
  qb: SelectQueryBuilder<T>,
  spec: PageSpec,
  filterText = '',
): Promise<{ rows: T[]; nextPageToken: string }> {
  const rows = await qb
    .offset(spec.offset)
    .limit(spec.pageSize + 1)
    .getMany();
  return {
    rows: rows.slice(0, spec.pageSize),
    nextPageToken:
      rows.length > spec.pageSize ? encodePageToken(spec.offset + spec.pageSize, filterText) : '',
  };
}
