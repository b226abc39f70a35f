import { OpenStackError } from './errors';
import { defaultNetwork, matchNetworkFilters, networkDocument } from './neutron-documents';
import { AuthedCtx, json, Reply } from './request';

/** Neutron v2.0: the one network (see neutron-documents.ts); subnets, ports and the rest are not served. */
export class Neutron {
  constructor(private readonly publicUrl: string) {}

  private get base() {
    return `${this.publicUrl.replace(/\/+$/, '')}/network`;
  }

  versions() {
    return {
      versions: [{ id: 'v2.0', status: 'CURRENT', links: [{ rel: 'self', href: `${this.base}/v2.0/` }] }],
    };
  }

  handle(ctx: AuthedCtx): Reply {
    const [collection, id, ...rest] = ctx.segments;
    if (ctx.method !== 'GET' && ctx.method !== 'HEAD') {
      if (collection === 'networks')
        throw new OpenStackError(501, 'Creating or changing networks is not supported by this cloud yet.');
      throw new OpenStackError(405, `The method ${ctx.method} is not allowed for this resource.`);
    }
    if (collection === undefined)
      return json(200, {
        resources: [
          {
            name: 'network',
            collection: 'networks',
            links: [{ rel: 'self', href: `${this.base}/v2.0/networks` }],
          },
        ],
      });
    if (collection === 'extensions' && id === undefined) return json(200, { extensions: [] });
    if (collection !== 'networks' || rest.length > 0)
      throw new OpenStackError(404, 'The resource could not be found.', 'HTTPNotFound');
    const doc = networkDocument(ctx.identity.principal.tenantId);
    if (id !== undefined) {
      if (id !== defaultNetwork.id)
        throw new OpenStackError(404, `Network ${id} could not be found.`, 'NetworkNotFound');
      return json(200, { network: doc });
    }
    const filtered = matchNetworkFilters(doc, ctx.query);
    if ('unknownField' in filtered)
      throw new OpenStackError(
        400,
        `[${filtered.unknownField}] is invalid attribute for filtering`,
        'HTTPBadRequest',
      );
    return json(200, { networks: filtered.match ? [doc] : [] });
  }
}
