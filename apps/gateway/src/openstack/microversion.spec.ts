import { microversionHeaders, negotiateMicroversion } from './microversion';

// Pure: Nova microversion negotiation from the two request headers.

describe('Nova microversion negotiation', () => {
  it('takes 2.1 when no header is sent', () => {
    expect(negotiateMicroversion({})).toEqual({ ok: true, version: { major: 2, minor: 1 } });
  });

  it('takes the maximum for latest, in any case', () => {
    expect(negotiateMicroversion({ legacy: 'Latest' })).toEqual({
      ok: true,
      version: { major: 2, minor: 96 },
    });
  });

  it('accepts 2.92, which `openstack --os-compute-api-version 2.latest` sends without discovery', () => {
    expect(negotiateMicroversion({ legacy: '2.92', generic: 'compute 2.92' })).toEqual({
      ok: true,
      version: { major: 2, minor: 92 },
    });
  });

  it('prefers OpenStack-API-Version and finds the compute entry among other services', () => {
    expect(negotiateMicroversion({ legacy: '2.5', generic: 'image 2.3, compute 2.60' })).toEqual({
      ok: true,
      version: { major: 2, minor: 60 },
    });
  });

  it('falls back to X-OpenStack-Nova-API-Version when OpenStack-API-Version names no compute version', () => {
    expect(negotiateMicroversion({ legacy: '2.10', generic: 'image 2.3' })).toEqual({
      ok: true,
      version: { major: 2, minor: 10 },
    });
  });

  it.each(['2.97', '3.0', '2.0', '1.1'])('answers 406 with Nova’s message for %s', (v) => {
    expect(negotiateMicroversion({ legacy: v })).toEqual({
      ok: false,
      status: 406,
      message: `Version ${v} is not supported by the API. Minimum is 2.1 and maximum is 2.96.`,
    });
  });

  it.each(['two', '2', '2.x', '2.1.1'])('answers 400 for the malformed version %j', (v) => {
    expect(negotiateMicroversion({ legacy: v })).toMatchObject({ ok: false, status: 400 });
  });

  it('echoes the version in both headers and varies on both', () => {
    expect(microversionHeaders({ major: 2, minor: 37 })).toEqual({
      'x-openstack-nova-api-version': '2.37',
      'openstack-api-version': 'compute 2.37',
      vary: 'OpenStack-API-Version, X-OpenStack-Nova-API-Version',
    });
  });
});
