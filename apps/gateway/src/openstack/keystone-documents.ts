import type { OpenStackIdentity } from '../credentials/credential-store';
import type { TokenPayload } from './keystone-token';

/** Where each service lives under the public base URL (one port, paths as in devstack). */
export interface CatalogOptions {
  publicUrl: string;
  region: string;
}

export const domain = { id: 'default', name: 'Default' };
const interfaces = ['public', 'internal', 'admin'] as const;

/** Base URLs of the services, from the configured public URL only (never the request's Host). */
export function serviceUrls(publicUrl: string, tenantId: string) {
  const base = publicUrl.replace(/\/+$/, '');
  return {
    identity: `${base}/identity`,
    compute: `${base}/compute/v2.1`,
    /** The tenant-scoped legacy compute URL Rackspace-style clients use (catalog name cloudServersOpenStack). */
    computeLegacy: `${base}/compute/v2/${tenantId}`,
    image: `${base}/image`,
    network: `${base}/network`,
  };
}

/** The services of the catalog: type, name (clients select by either) and URL. */
function services(o: CatalogOptions, tenantId: string) {
  const urls = serviceUrls(o.publicUrl, tenantId);
  return [
    { type: 'identity', name: 'keystone', url: urls.identity },
    { type: 'compute', name: 'nova', url: urls.compute },
    { type: 'image', name: 'glance', url: urls.image },
    { type: 'network', name: 'neutron', url: urls.network },
  ];
}

export function v3Catalog(o: CatalogOptions, tenantId: string) {
  return services(o, tenantId).map((s) => ({
    id: s.type,
    type: s.type,
    name: s.name,
    endpoints: interfaces.map((i) => ({
      id: `${s.type}-${i}`,
      interface: i,
      region: o.region,
      region_id: o.region,
      url: s.url,
    })),
  }));
}

export function v2Catalog(o: CatalogOptions, tenantId: string) {
  const entry = (s: { type: string; name: string; url: string }) => ({
    type: s.type,
    name: s.name,
    endpoints: [
      {
        id: `${s.name}-${o.region}`,
        region: o.region,
        tenantId,
        publicURL: s.url,
        internalURL: s.url,
        adminURL: s.url,
      },
    ],
    endpoints_links: [],
  });
  return [
    ...services(o, tenantId).map(entry),
    entry({
      type: 'compute',
      name: 'cloudServersOpenStack',
      url: serviceUrls(o.publicUrl, tenantId).computeLegacy,
    }),
  ];
}

/** Keystone's timestamps: ISO 8601 UTC with microseconds. */
export const keystoneTime = (seconds: number): string =>
  new Date(seconds * 1000).toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');

const roles = (identity: OpenStackIdentity) => [
  { id: identity.principal.role, name: identity.principal.role },
];

export function v3TokenBody(
  o: CatalogOptions,
  identity: OpenStackIdentity,
  payload: TokenPayload,
  methods: string[],
) {
  return {
    token: {
      methods,
      user: {
        id: identity.credentialId,
        name: identity.userName,
        domain,
        password_expires_at: null,
      },
      audit_ids: [payload.nonce],
      expires_at: keystoneTime(payload.expiresAt),
      issued_at: keystoneTime(payload.issuedAt),
      project: { id: identity.principal.tenantId, name: identity.tenantName, domain },
      is_domain: false,
      roles: roles(identity),
      catalog: v3Catalog(o, identity.principal.tenantId),
    },
  };
}

export function v2AccessBody(
  o: CatalogOptions,
  identity: OpenStackIdentity,
  token: string,
  payload: TokenPayload,
) {
  const tenant = {
    id: identity.principal.tenantId,
    name: identity.tenantName,
    enabled: true,
    description: null,
  };
  return {
    access: {
      token: {
        id: token,
        issued_at: keystoneTime(payload.issuedAt),
        expires: new Date(payload.expiresAt * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z'),
        tenant,
        audit_ids: [payload.nonce],
      },
      serviceCatalog: v2Catalog(o, identity.principal.tenantId),
      user: {
        id: identity.credentialId,
        name: identity.userName,
        username: identity.userName,
        roles: roles(identity).map((r) => ({ name: r.name })),
        roles_links: [],
        'RAX-AUTH:defaultRegion': o.region,
      },
      metadata: { is_admin: 0, roles: [] },
    },
  };
}

/** Version documents: `base` is where Keystone is mounted (publicUrl or publicUrl/identity). */
export function v3VersionDoc(base: string) {
  return {
    id: 'v3.14',
    status: 'stable',
    updated: '2020-04-07T00:00:00Z',
    links: [{ rel: 'self', href: `${base}/v3/` }],
    'media-types': [{ base: 'application/json', type: 'application/vnd.openstack.identity-v3+json' }],
  };
}

export function v2VersionDoc(base: string) {
  return {
    id: 'v2.0',
    status: 'deprecated',
    updated: '2016-08-04T00:00:00Z',
    links: [{ rel: 'self', href: `${base}/v2.0/` }],
    'media-types': [{ base: 'application/json', type: 'application/vnd.openstack.identity-v2.0+json' }],
  };
}

export function identityVersions(base: string) {
  return { versions: { values: [v3VersionDoc(base), v2VersionDoc(base)] } };
}
