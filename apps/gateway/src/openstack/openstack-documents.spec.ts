import { storageV1 } from '@flotilla/contracts';
import { OpenStackError, renderError } from './errors';
import { imageDocument } from './glance-documents';
import { v2Catalog, v3Catalog } from './keystone-documents';
import { matchNetworkFilters, networkDocument } from './neutron-documents';

// Pure: catalogs, Glance and Neutron documents, and each service's error shape.

describe('the Keystone catalog', () => {
  const o = { publicUrl: 'https://cloud.example/', region: 'RegionOne' };

  it('lists identity, compute, image and network by type and name with three interfaces each', () => {
    const catalog = v3Catalog(o, 't1');
    expect(catalog.map((s) => [s.type, s.name])).toEqual([
      ['identity', 'keystone'],
      ['compute', 'nova'],
      ['image', 'glance'],
      ['network', 'neutron'],
    ]);
    const compute = catalog[1];
    expect(compute.endpoints.map((e) => e.interface)).toEqual(['public', 'internal', 'admin']);
    expect(compute.endpoints[0]).toMatchObject({
      url: 'https://cloud.example/compute/v2.1',
      region: 'RegionOne',
      region_id: 'RegionOne',
    });
  });

  it('adds a tenant-scoped cloudServersOpenStack compute entry to the v2.0 catalog', () => {
    const entry = v2Catalog(o, 't1').find((s) => s.name === 'cloudServersOpenStack');
    expect(entry).toMatchObject({
      type: 'compute',
      endpoints: [{ publicURL: 'https://cloud.example/compute/v2/t1', tenantId: 't1', region: 'RegionOne' }],
    });
  });
});

describe('Glance image documents', () => {
  const image = (over: Partial<storageV1.Image>) =>
    ({
      id: 'flotilla-id',
      name: 'img',
      tenantId: 't1',
      labels: {},
      kind: storageV1.ImageKind.IMAGE_KIND_DISK,
      visibility: storageV1.ImageVisibility.IMAGE_VISIBILITY_PRIVATE,
      state: storageV1.ImageState.IMAGE_STATE_AVAILABLE,
      sizeBytes: 100,
      virtualSizeBytes: 1 << 30,
      minDiskBytes: 1 << 30,
      minMemoryMib: 64,
      sha256: '',
      ...over,
    }) as storageV1.Image;

  it('uses the id and size a Glance upload recorded in labels', () => {
    const doc = imageDocument(
      image({
        labels: { 'openstack.image-id': 'glance-id', 'openstack.disk-format': 'raw', 'openstack.size': '42' },
      }),
    );
    expect(doc).toMatchObject({
      id: 'glance-id',
      status: 'active',
      visibility: 'private',
      disk_format: 'raw',
      size: 42,
      min_disk: 1,
      self: '/v2/images/glance-id',
      file: '/v2/images/glance-id/file',
    });
  });

  it('shows a KERNEL image as an Amazon kernel image and a registering one as saving', () => {
    expect(imageDocument(image({ kind: storageV1.ImageKind.IMAGE_KIND_KERNEL }))).toMatchObject({
      id: 'flotilla-id',
      disk_format: 'aki',
      container_format: 'aki',
    });
    expect(imageDocument(image({ state: storageV1.ImageState.IMAGE_STATE_REGISTERING })).status).toBe(
      'saving',
    );
  });
});

describe('Neutron network filters', () => {
  const doc = networkDocument('t1');

  it('matches by name exactly and booleans in any case', () => {
    expect(matchNetworkFilters(doc, new URLSearchParams('name=default&shared=True'))).toEqual({
      match: true,
    });
    expect(matchNetworkFilters(doc, new URLSearchParams('name=Default'))).toEqual({ match: false });
  });

  it('names an unknown filter field', () => {
    expect(matchNetworkFilters(doc, new URLSearchParams('colour=blue'))).toEqual({ unknownField: 'colour' });
  });
});

describe('OpenStack error shapes', () => {
  it('answers Nova errors under their fault name', () => {
    expect(
      JSON.parse(renderError('compute', new OpenStackError(404, 'Instance x could not be found.')).body),
    ).toEqual({
      itemNotFound: { code: 404, message: 'Instance x could not be found.' },
    });
    expect(JSON.parse(renderError('compute', new OpenStackError(406, 'Version…')).body)).toHaveProperty(
      'computeFault.code',
      406,
    );
  });

  it('answers 401 in Keystone’s shape for every service, as keystonemiddleware does', () => {
    for (const service of ['compute', 'image', 'network', 'identity'] as const)
      expect(JSON.parse(renderError(service, new OpenStackError(401, 'no')).body)).toEqual({
        error: { code: 401, title: 'Unauthorized', message: 'no' },
      });
  });

  it('answers Glance errors in plain text and Neutron errors as NeutronError', () => {
    const glance = renderError('image', new OpenStackError(404, 'No image found with ID x'));
    expect(glance.contentType).toMatch(/^text\/plain/);
    expect(glance.body).toContain('404 Not Found\n\nNo image found with ID x');
    expect(
      JSON.parse(renderError('network', new OpenStackError(404, 'gone', 'NetworkNotFound')).body),
    ).toEqual({
      NeutronError: { type: 'NetworkNotFound', message: 'gone', detail: '' },
    });
  });
});
