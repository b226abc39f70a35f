/**
 * The one network there is. Flotilla's network service is not built yet: every VM NIC uses its host's
 * QEMU user-mode NAT (proto/flotilla/compute/v1/vm.proto, Nic). This front shows that as one shared,
 * ACTIVE network named "default" with a fixed id, and nothing else: no subnets, ports or routers are
 * pretended.
 */
export const defaultNetwork = {
  id: 'f1071a00-5e7d-4c0e-8a11-0000000000d1',
  name: 'default',
};

export function networkDocument(tenantId: string) {
  return {
    id: defaultNetwork.id,
    name: defaultNetwork.name,
    description: "each host's user-mode NAT (10.0.2.0/24 as each guest sees it); reaches the host only",
    status: 'ACTIVE',
    admin_state_up: true,
    shared: true,
    'router:external': false,
    subnets: [],
    tenant_id: tenantId,
    project_id: tenantId,
    mtu: 1500,
    port_security_enabled: false,
    availability_zones: [],
    availability_zone_hints: [],
    ipv4_address_scope: null,
    ipv6_address_scope: null,
    is_default: true,
    tags: [],
    revision_number: 1,
    created_at: '2025-01-01T00:00:00Z',
    updated_at: '2025-01-01T00:00:00Z',
  };
}

const listParameters = new Set(['fields', 'limit', 'marker', 'sort_key', 'sort_dir', 'page_reverse']);

/**
 * Neutron's list filters: each query parameter names a field that must equal one of its values (booleans
 * in any case). An unknown field is an error, as with Neutron's filter validation: the result names it.
 */
export function matchNetworkFilters(
  doc: Record<string, unknown>,
  query: URLSearchParams,
): { match: boolean } | { unknownField: string } {
  let match = true;
  for (const key of new Set(query.keys())) {
    if (listParameters.has(key)) continue;
    if (!(key in doc)) return { unknownField: key };
    const field = doc[key];
    const equal = (v: string) =>
      typeof field === 'boolean' ? String(field) === v.toLowerCase() : String(field) === v;
    if (!query.getAll(key).some(equal)) match = false;
  }
  return { match };
}
