import { randomBytes, randomUUID } from 'node:crypto';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { commonV1, gatewayV1, storageV1 } from '@flotilla/contracts';
import {
  createLogger,
  kernelImageRegistration,
  LocalCloud,
  operationDone,
  startLocalCloud,
  TestTenant,
  testDatabases,
  uniqueSchema,
  waitFor,
} from '@flotilla/platform';
import { Catalogue } from '../compat/catalogue';
import { PoolApi } from '../compat/pool-api';
import type { CredentialStore, OpenStackIdentity } from '../credentials/credential-store';
import { defaultNetwork } from './neutron-documents';
import { createOpenStackFront } from './openstack-front';

// Real: the OpenStack front on an HTTP server (port 0) driven with fetch, PoolApi's gRPC to a local cloud
// (compute, storage, gateway, a sim host agent; real qemu-img for image data), the database.
// Fake: the hypervisor (sim driver) and the CredentialStore (a map of users in this test; the real one
// lives in apps/gateway/src/credentials).

class TestCredentials implements CredentialStore {
  readonly users = new Map<string, { password: string; identity: OpenStackIdentity }>();
  ec2Secret(): Promise<undefined> {
    return Promise.resolve(undefined);
  }
  add(userName: string, tenant: TestTenant, password = randomBytes(12).toString('hex')) {
    const identity: OpenStackIdentity = {
      principal: { tokenId: randomUUID(), tenantId: tenant.id, role: 'vm-admin', crossTenant: false },
      credentialId: randomUUID(),
      userName,
      tenantName: tenant.name,
    };
    this.users.set(userName, { password, identity });
    return { password, identity };
  }
  checkPassword(userName: string, password: string) {
    const u = this.users.get(userName);
    return Promise.resolve(u && u.password === password ? u.identity : undefined);
  }
  identityOf(credentialId: string) {
    return Promise.resolve(
      [...this.users.values()].find((u) => u.identity.credentialId === credentialId)?.identity,
    );
  }
}

interface Answer {
  status: number;
  headers: Headers;
  text: string;
  // The JSON documents under test, read field by field as clients do.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  body: any;
}

describe.each(testDatabases().slice(0, 1))('the OpenStack front against a local cloud on %s', (_db, url) => {
  let cloud: LocalCloud;
  let pool: PoolApi;
  let catalogue: Catalogue;
  let server: http.Server;
  let publicUrl: string;
  let alice: TestTenant;
  let bob: TestTenant;
  const credentials = new TestCredentials();
  let alicePassword: string;
  let bobPassword: string;

  const call = async (
    method: string,
    p: string,
    o: { token?: string; body?: unknown; raw?: string | Buffer; headers?: Record<string, string> } = {},
  ): Promise<Answer> => {
    const headers: Record<string, string> = { ...o.headers };
    if (o.token) headers['x-auth-token'] = o.token;
    let body: string | Buffer | undefined = o.raw;
    if (o.body !== undefined) {
      body = JSON.stringify(o.body);
      headers['content-type'] = 'application/json';
    }
    const res = await fetch(`${publicUrl}${p}`, { method, headers, body });
    const text = await res.text();
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      parsed = undefined;
    }
    return { status: res.status, headers: res.headers, text, body: parsed };
  };

  const passwordAuth = (user: string, password: string, project: Record<string, unknown>) => ({
    auth: {
      identity: {
        methods: ['password'],
        password: { user: { name: user, password, domain: { name: 'Default' } } },
      },
      scope: { project },
    },
  });
  const tokenFor = async (user: string, password: string, tenant: TestTenant) => {
    const r = await call('POST', '/identity/v3/auth/tokens', {
      body: passwordAuth(user, password, { name: tenant.name, domain: { name: 'Default' } }),
    });
    expect(r.status).toBe(201);
    return r.headers.get('x-subject-token')!;
  };

  beforeAll(async () => {
    cloud = await startLocalCloud({ databaseUrl: url, schemaPrefix: uniqueSchema('openstack') });
    alice = await cloud.tenant('alice', gatewayV1.Role.ROLE_VM_ADMIN);
    bob = await cloud.tenant('bob', gatewayV1.Role.ROLE_VM_ADMIN);
    alicePassword = credentials.add('alice-user', alice).password;
    bobPassword = credentials.add('bob-user', bob).password;
    pool = new PoolApi({
      computeAddress: cloud.compute.address,
      storageAddress: cloud.storageAddress,
      serviceToken: cloud.serviceToken,
      deadlineMs: 30_000,
    });
    // The default SR Glance uploads go to, and a KERNEL image (made as the pool: service identity).
    const { sr, operation } = await pool.srs.call.createSr({
      requestId: '',
      name: 'local',
      description: '',
      labels: { 'flotilla.default': 'true' },
      type: storageV1.SrType.SR_TYPE_SHARED,
      hostId: '',
      path: path.join(path.dirname(cloud.imageDir), 'sr', 'local'),
      tenantId: '',
      overprovisionRatio: 0,
      adoptExisting: false,
    });
    expect(sr).toBeDefined();
    expect((await operationDone(pool.storageOperations, operation!.id, 60_000)).state).toBe(
      commonV1.OperationState.OPERATION_STATE_SUCCEEDED,
    );
    await pool.images.call.registerImage(
      kernelImageRegistration('k-openstack', {
        minMemoryMib: 0,
        defaultCmdline: '',
        files: { kernel: { path: 'k/vmlinuz', sha256: '' }, initrd: { path: 'k/initrd', sha256: '' } },
      }),
    );
    server = http.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    publicUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const logger = createLogger('openstack-test', process.env.FLOTILLA_TEST_LOG_LEVEL || 'silent');
    catalogue = new Catalogue(pool, logger);
    const front = createOpenStackFront({
      pool,
      catalogue,
      credentials,
      tokenKey: randomBytes(32),
      publicUrl,
      region: 'RegionOne',
      zone: 'dc1',
      tokenTtlSeconds: 3600,
      logger,
    });
    server.on('request', front.listener);
  }, 120_000);

  afterAll(async () => {
    await new Promise((resolve) => server?.close(resolve));
    catalogue?.close();
    pool?.close();
    await cloud?.stop();
  });

  describe('version documents', () => {
    it('answer without a token, with links built from the public URL', async () => {
      const root = await call('GET', '/');
      expect(root.status).toBe(300);
      expect(root.body.versions.values[0].links[0].href).toBe(`${publicUrl}/v3/`);
      const identity = await call('GET', '/identity', { headers: { host: 'evil.example:1' } });
      expect(identity.status).toBe(300);
      expect(identity.body.versions.values.map((v: { id: string }) => v.id)).toEqual(['v3.14', 'v2.0']);
      expect(identity.body.versions.values[0].links[0].href).toBe(`${publicUrl}/identity/v3/`);
      expect((await call('GET', '/identity/v3')).body.version.id).toBe('v3.14');
      const compute = await call('GET', '/compute/v2.1');
      expect(compute.body.version).toMatchObject({ id: 'v2.1', version: '2.96', min_version: '2.1' });
      expect((await call('GET', '/compute')).body.versions.map((v: { id: string }) => v.id)).toEqual([
        'v2.0',
        'v2.1',
      ]);
      expect((await call('GET', '/image')).status).toBe(300);
      expect((await call('GET', '/network')).body.versions[0].id).toBe('v2.0');
    });
  });

  describe('Keystone', () => {
    it('issues a v3 token with X-Subject-Token, expiry and a catalog of the four services', async () => {
      const r = await call('POST', '/identity/v3/auth/tokens', {
        body: passwordAuth('alice-user', alicePassword, { name: 'alice', domain: { name: 'Default' } }),
      });
      expect(r.status).toBe(201);
      expect(r.headers.get('x-subject-token')).toMatch(/^[\w-]+\.[\w-]+$/);
      const token = r.body.token;
      expect(token).toMatchObject({
        methods: ['password'],
        user: { name: 'alice-user' },
        project: { id: alice.id, name: 'alice' },
      });
      expect(Date.parse(token.expires_at) - Date.parse(token.issued_at)).toBe(3600_000);
      const byType = Object.fromEntries(
        token.catalog.map((s: { type: string; name: string; endpoints: Array<Record<string, string>> }) => [
          s.type,
          s,
        ]),
      );
      expect(byType.compute.name).toBe('nova');
      expect(byType.image.name).toBe('glance');
      expect(byType.network.name).toBe('neutron');
      expect(byType.compute.endpoints.map((e: { interface: string }) => e.interface).sort()).toEqual([
        'admin',
        'internal',
        'public',
      ]);
      expect(byType.compute.endpoints[0]).toMatchObject({
        url: `${publicUrl}/compute/v2.1`,
        region: 'RegionOne',
        region_id: 'RegionOne',
      });
      expect(byType.image.endpoints[0].url).toBe(`${publicUrl}/image`);
    });

    it('issues tokens at the root path too and validates them with GET and HEAD', async () => {
      const r = await call('POST', '/v3/auth/tokens', {
        body: passwordAuth('alice-user', alicePassword, { id: alice.id }),
      });
      expect(r.status).toBe(201);
      const token = r.headers.get('x-subject-token')!;
      const check = await call('GET', '/identity/v3/auth/tokens', {
        token,
        headers: { 'x-subject-token': token },
      });
      expect(check.status).toBe(200);
      expect(check.body.token.project.id).toBe(alice.id);
      const head = await call('HEAD', '/v3/auth/tokens', { token, headers: { 'x-subject-token': token } });
      expect(head.status).toBe(200);
      const forged = await call('GET', '/v3/auth/tokens', {
        token,
        headers: { 'x-subject-token': `${token.slice(0, -2)}xx` },
      });
      expect(forged.status).toBe(404);
    });

    it('refuses a wrong password, an unknown user and another project with 401 in Keystone shape', async () => {
      for (const body of [
        passwordAuth('alice-user', 'wrong', { name: 'alice' }),
        passwordAuth('nobody', alicePassword, { name: 'alice' }),
        passwordAuth('alice-user', alicePassword, { name: 'bob' }),
      ]) {
        const r = await call('POST', '/identity/v3/auth/tokens', { body });
        expect(r.status).toBe(401);
        expect(r.body.error).toMatchObject({ code: 401, title: 'Unauthorized' });
      }
    });

    it('issues v2.0 tokens for passwordCredentials and RAX-KSKEY API keys, with a tenant-scoped cloudServersOpenStack entry', async () => {
      const password = await call('POST', '/v2.0/tokens', {
        body: {
          auth: {
            passwordCredentials: { username: 'alice-user', password: alicePassword },
            tenantName: 'alice',
          },
        },
      });
      expect(password.status).toBe(200);
      expect(password.body.access.token.tenant).toMatchObject({ id: alice.id, name: 'alice' });
      const rax = await call('POST', '/identity/v2.0/tokens', {
        body: { auth: { 'RAX-KSKEY:apiKeyCredentials': { username: 'alice-user', apiKey: alicePassword } } },
      });
      expect(rax.status).toBe(200);
      const servers = rax.body.access.serviceCatalog.find(
        (s: { name: string }) => s.name === 'cloudServersOpenStack',
      );
      expect(servers).toMatchObject({ type: 'compute' });
      expect(servers.endpoints[0].publicURL).toBe(`${publicUrl}/compute/v2/${alice.id}`);
      const list = await call('GET', `/compute/v2/${alice.id}/servers`, { token: rax.body.access.token.id });
      expect(list.status).toBe(200);
      const otherTenant = await call('POST', '/v2.0/tokens', {
        body: {
          auth: {
            passwordCredentials: { username: 'alice-user', password: alicePassword },
            tenantId: bob.id,
          },
        },
      });
      expect(otherTenant.status).toBe(401);
    });

    it('issues a token for a token (v3 token method) and refuses a legacy URL naming another tenant', async () => {
      const first = await tokenFor('alice-user', alicePassword, alice);
      const r = await call('POST', '/identity/v3/auth/tokens', {
        body: {
          auth: {
            identity: { methods: ['token'], token: { id: first } },
            scope: { project: { id: alice.id } },
          },
        },
      });
      expect(r.status).toBe(201);
      const second = r.headers.get('x-subject-token')!;
      expect(second).not.toBe(first);
      const other = await call('GET', `/compute/v2/${bob.id}/servers`, { token: second });
      expect(other.status).toBe(400);
      expect(other.body.badRequest.message).toMatch(/doesn't match Context's project_id/);
    });

    it('refuses API calls without a token, with a tampered one or with one of a revoked credential', async () => {
      expect((await call('GET', '/compute/v2.1/servers')).status).toBe(401);
      const token = await tokenFor('alice-user', alicePassword, alice);
      const tampered = await call('GET', '/compute/v2.1/servers', { token: `x${token.slice(1)}` });
      expect(tampered.status).toBe(401);
      expect(tampered.body.error.code).toBe(401);
      const temp = credentials.add('temp-user', alice);
      const tempToken = await tokenFor('temp-user', temp.password, alice);
      expect((await call('GET', '/network/v2.0/networks', { token: tempToken })).status).toBe(200);
      credentials.users.delete('temp-user');
      expect((await call('GET', '/network/v2.0/networks', { token: tempToken })).status).toBe(401);
    });
  });

  describe('Nova flavors and microversions', () => {
    let token: string;
    beforeAll(async () => {
      token = await tokenFor('alice-user', alicePassword, alice);
    });

    it('lists flavors, shows one by id, its empty extra specs, and answers 404 for a name', async () => {
      const list = await call('GET', '/compute/v2.1/flavors/detail?is_public=None', { token });
      expect(list.status).toBe(200);
      const tiny = list.body.flavors.find((f: { name: string }) => f.name === 'm1.tiny');
      expect(tiny).toMatchObject({
        vcpus: 1,
        ram: 256,
        disk: 1,
        swap: '',
        'os-flavor-access:is_public': true,
      });
      expect(tiny.extra_specs).toBeUndefined();
      const show = await call('GET', `/compute/v2.1/flavors/${tiny.id}`, { token });
      expect(show.body.flavor.links[0].href).toBe(`${publicUrl}/compute/v2.1/flavors/${tiny.id}`);
      const specs = await call('GET', `/compute/v2.1/flavors/${tiny.id}/os-extra_specs`, { token });
      expect(specs.body).toEqual({ extra_specs: {} });
      const byName = await call('GET', '/compute/v2.1/flavors/m1.tiny', { token });
      expect(byName.status).toBe(404);
      expect(byName.body.itemNotFound.code).toBe(404);
      expect((await call('GET', '/compute/v2.1/flavors?is_public=False', { token })).body.flavors).toEqual(
        [],
      );
    });

    it('negotiates microversions: latest, 2.92, and 406 or 400 outside the range', async () => {
      const latest = await call('GET', '/compute/v2.1/flavors/detail', {
        token,
        headers: { 'x-openstack-nova-api-version': 'latest' },
      });
      expect(latest.headers.get('x-openstack-nova-api-version')).toBe('2.96');
      expect(latest.headers.get('openstack-api-version')).toBe('compute 2.96');
      expect(latest.headers.get('vary')).toContain('OpenStack-API-Version');
      const tiny = latest.body.flavors.find((f: { name: string }) => f.name === 'm1.tiny');
      expect(tiny).toMatchObject({ swap: 0, extra_specs: {}, description: null });
      const v292 = await call('GET', '/compute/v2.1/servers', {
        token,
        headers: { 'x-openstack-nova-api-version': '2.92', 'openstack-api-version': 'compute 2.92' },
      });
      expect(v292.status).toBe(200);
      expect(v292.headers.get('x-openstack-nova-api-version')).toBe('2.92');
      const tooHigh = await call('GET', '/compute/v2.1/servers', {
        token,
        headers: { 'openstack-api-version': 'compute 2.97' },
      });
      expect(tooHigh.status).toBe(406);
      expect(tooHigh.body).toEqual({
        computeFault: {
          code: 406,
          message: 'Version 2.97 is not supported by the API. Minimum is 2.1 and maximum is 2.96.',
        },
      });
      const malformed = await call('GET', '/compute/v2.1/servers', {
        token,
        headers: { 'x-openstack-nova-api-version': 'two' },
      });
      expect(malformed.status).toBe(400);
      expect(malformed.body.badRequest.message).toMatch(/Invalid format for API version/);
    });
  });

  describe('Neutron', () => {
    it('lists the one network, filters by name and id, and answers 404 for a name as id', async () => {
      const token = await tokenFor('alice-user', alicePassword, alice);
      const list = await call('GET', '/network/v2.0/networks', { token });
      expect(list.body.networks).toEqual([
        expect.objectContaining({
          id: defaultNetwork.id,
          name: 'default',
          shared: true,
          status: 'ACTIVE',
          'router:external': false,
        }),
      ]);
      expect(
        (await call('GET', '/network/v2.0/networks?name=default', { token })).body.networks,
      ).toHaveLength(1);
      expect((await call('GET', '/network/v2.0/networks?name=other', { token })).body.networks).toEqual([]);
      expect(
        (await call('GET', `/network/v2.0/networks?id=${defaultNetwork.id}`, { token })).body.networks,
      ).toHaveLength(1);
      const byName = await call('GET', '/network/v2.0/networks/default', { token });
      expect(byName.status).toBe(404);
      expect(byName.body.NeutronError.type).toBe('NetworkNotFound');
    });
  });

  describe('Glance and servers', () => {
    let token: string;
    let imageId: string;
    const data = randomBytes(2 * 1024 * 1024);
    beforeAll(async () => {
      token = await tokenFor('alice-user', alicePassword, alice);
    });

    it('creates a queued image, uploads its data and downloads the same bytes', async () => {
      const created = await call('POST', '/image/v2/images', {
        token,
        body: { name: 'upload-1', disk_format: 'raw', container_format: 'bare' },
      });
      expect(created.status).toBe(201);
      expect(created.body.status).toBe('queued');
      imageId = created.body.id;
      const put = await call('PUT', `/image/v2/images/${imageId}/file`, {
        token,
        raw: data,
        headers: { 'content-type': 'application/octet-stream' },
      });
      expect(put.status).toBe(204);
      const show = await call('GET', `/image/v2/images/${imageId}`, { token });
      expect(show.body).toMatchObject({
        id: imageId,
        name: 'upload-1',
        status: 'active',
        disk_format: 'raw',
      });
      const res = await fetch(`${publicUrl}/image/v2/images/${imageId}/file`, {
        headers: { 'x-auth-token': token },
      });
      expect(res.status).toBe(200);
      expect(Buffer.from(await res.arrayBuffer()).equals(data)).toBe(true);
    }, 120_000);

    it('takes a chunked upload without Content-Length, refuses a second upload and deletes the image', async () => {
      const created = await call('POST', '/image/v2/images', {
        token,
        body: { name: 'chunked-1', disk_format: 'raw', container_format: 'bare' },
      });
      const id = created.body.id as string;
      const chunks = [data.subarray(0, 1024 * 1024), data.subarray(1024 * 1024)];
      const res = await fetch(`${publicUrl}/image/v2/images/${id}/file`, {
        method: 'PUT',
        headers: { 'x-auth-token': token, 'content-type': 'application/octet-stream' },
        body: new ReadableStream({
          pull(controller) {
            const next = chunks.shift();
            if (next) controller.enqueue(next);
            else controller.close();
          },
        }),
        duplex: 'half',
      } as RequestInit);
      expect(res.status).toBe(204);
      expect((await call('GET', `/image/v2/images/${id}`, { token })).body).toMatchObject({
        status: 'active',
        size: data.length,
      });
      const again = await call('PUT', `/image/v2/images/${id}/file`, { token, raw: data });
      expect(again.status).toBe(409);
      expect((await call('DELETE', `/image/v2/images/${id}`, { token })).status).toBe(204);
      expect((await call('GET', `/image/v2/images/${id}`, { token })).status).toBe(404);
    }, 120_000);

    it('refuses to download a KERNEL image with a clear error', async () => {
      const kernel = (await call('GET', '/image/v2/images?name=k-openstack', { token })).body.images[0];
      const r = await call('GET', `/image/v2/images/${kernel.id}/file`, { token });
      expect(r.status).toBe(409);
      expect(r.text).toMatch(/KERNEL image/);
    });

    it('lists images with a name filter and pagination, and answers 404 in plain text for a name as id', async () => {
      const all = await call('GET', '/image/v2/images', { token });
      expect(all.body.images.map((i: { name: string }) => i.name).sort()).toEqual([
        'k-openstack',
        'upload-1',
      ]);
      const named = await call('GET', '/image/v2/images?name=upload-1', { token });
      expect(named.body.images.map((i: { id: string }) => i.id)).toEqual([imageId]);
      const first = await call('GET', '/image/v2/images?limit=1', { token });
      expect(first.body.images).toHaveLength(1);
      expect(first.body.next).toMatch(/^\/v2\/images\?/);
      const second = await call('GET', `/image${first.body.next}`, { token });
      expect(second.body.images).toHaveLength(1);
      expect(second.body.images[0].id).not.toBe(first.body.images[0].id);
      const byName = await call('GET', '/image/v2/images/upload-1', { token });
      expect(byName.status).toBe(404);
      expect(byName.headers.get('content-type')).toMatch(/^text\/plain/);
    });

    it('takes a server through create, ACTIVE, stop, start, reboot and delete', async () => {
      const flavors = await call('GET', '/compute/v2.1/flavors', { token });
      const tiny = flavors.body.flavors.find((f: { name: string }) => f.name === 'm1.tiny');
      const created = await call('POST', '/compute/v2.1/servers', {
        token,
        body: {
          server: {
            name: 'web-1',
            imageRef: imageId,
            flavorRef: tiny.id,
            networks: [{ uuid: defaultNetwork.id }],
          },
        },
      });
      expect(created.status).toBe(202);
      expect(created.body.server).toMatchObject({
        'OS-DCF:diskConfig': 'MANUAL',
        security_groups: [{ name: 'default' }],
      });
      // Nothing sets a password in the guest, so none is claimed.
      expect(created.body.server.adminPass).toBeUndefined();
      const id = created.body.server.id as string;
      const status = async () => (await call('GET', `/compute/v2.1/servers/${id}`, { token })).body.server;
      const until = (wanted: string) =>
        waitFor(
          `server ${wanted}`,
          async () => {
            const s = await status();
            return s.status === wanted && s;
          },
          { timeoutMs: 60_000 },
        );
      const active = await until('ACTIVE');
      expect(active).toMatchObject({
        name: 'web-1',
        tenant_id: alice.id,
        image: { id: imageId },
        flavor: { id: tiny.id },
        'OS-EXT-AZ:availability_zone': 'dc1',
        'OS-EXT-STS:power_state': 1,
        'OS-EXT-STS:vm_state': 'active',
        'OS-EXT-STS:task_state': null,
      });
      expect(active.addresses.default).toEqual([expect.objectContaining({ version: 4, addr: '10.0.2.15' })]);

      const detail = await call('GET', '/compute/v2.1/servers/detail?name=^web', { token });
      expect(detail.body.servers.map((s: { id: string }) => s.id)).toEqual([id]);
      expect((await call('GET', '/compute/v2.1/servers?name=nomatch', { token })).body.servers).toEqual([]);
      expect((await call('GET', '/compute/v2.1/servers/web-1', { token })).status).toBe(404);
      const embedded = await call('GET', `/compute/v2.1/servers/${id}`, {
        token,
        headers: { 'x-openstack-nova-api-version': '2.96' },
      });
      expect(embedded.body.server.flavor).toMatchObject({ vcpus: 1, ram: 256, original_name: 'm1.tiny' });
      expect(embedded.body.server).toMatchObject({
        locked: false,
        tags: [],
        locked_reason: null,
        description: null,
      });

      const bobToken = await tokenFor('bob-user', bobPassword, bob);
      expect((await call('GET', `/compute/v2.1/servers/${id}`, { token: bobToken })).status).toBe(404);

      expect(
        (await call('POST', `/compute/v2.1/servers/${id}/action`, { token, body: { 'os-stop': null } }))
          .status,
      ).toBe(202);
      await until('SHUTOFF');
      const stopped = await call('GET', '/compute/v2.1/servers/detail?status=SHUTOFF', { token });
      expect(stopped.body.servers.map((s: { id: string }) => s.id)).toEqual([id]);
      expect((await call('GET', '/compute/v2.1/servers?status=ACTIVE', { token })).body.servers).toEqual([]);
      const again = await call('POST', `/compute/v2.1/servers/${id}/action`, {
        token,
        body: { 'os-stop': null },
      });
      expect(again.status).toBe(409);
      expect(again.body.conflictingRequest.message).toMatch(/Cannot 'stop' instance/);
      expect(
        (await call('POST', `/compute/v2.1/servers/${id}/action`, { token, body: { 'os-start': null } }))
          .status,
      ).toBe(202);
      await until('ACTIVE');
      const reboot = await call('POST', `/compute/v2.1/servers/${id}/action`, {
        token,
        body: { reboot: { type: 'HARD' } },
      });
      expect(reboot.status).toBe(202);
      await until('ACTIVE');

      expect((await call('DELETE', `/compute/v2.1/servers/${id}`, { token })).status).toBe(204);
      await waitFor(
        'server gone',
        async () => (await call('GET', `/compute/v2.1/servers/${id}`, { token })).status === 404,
        {
          timeoutMs: 60_000,
        },
      );
    }, 180_000);

    it('pages servers with limit and marker and a servers_links next', async () => {
      const flavors = await call('GET', '/compute/v2.1/flavors', { token });
      const tiny = flavors.body.flavors.find((f: { name: string }) => f.name === 'm1.tiny');
      const created = await call('POST', '/compute/v2.1/servers', {
        token,
        body: {
          server: { name: 'batch', imageRef: imageId, flavorRef: tiny.id, min_count: 3, max_count: 3 },
        },
      });
      expect(created.status).toBe(202);
      const page1 = await call('GET', '/compute/v2.1/servers?limit=2', { token });
      expect(page1.body.servers).toHaveLength(2);
      const next = new URL(page1.body.servers_links[0].href);
      expect(next.origin).toBe(publicUrl);
      const page2 = await call('GET', `${next.pathname}${next.search}`, { token });
      const names = [...page1.body.servers, ...page2.body.servers]
        .map((s: { name: string }) => s.name)
        .sort();
      expect(names).toEqual(['batch-1', 'batch-2', 'batch-3']);
    }, 60_000);
  });

  describe('bad input', () => {
    let token: string;
    beforeAll(async () => {
      token = await tokenFor('alice-user', alicePassword, alice);
    });

    it('answers malformed JSON with 400 badRequest naming the problem', async () => {
      const r = await call('POST', '/compute/v2.1/servers', {
        token,
        raw: '{"server": ',
        headers: { 'content-type': 'application/json' },
      });
      expect(r.status).toBe(400);
      expect(r.body.badRequest.message).toMatch(/Malformed request body/);
    });

    it('answers an oversized body with 413', async () => {
      const r = await call('POST', '/compute/v2.1/servers', {
        token,
        raw: `{"server": {"name": "${'x'.repeat(2 * 1024 * 1024)}"}}`,
        headers: { 'content-type': 'application/json' },
      });
      expect(r.status).toBe(413);
    });

    it('requires networks from 2.37 and refuses an unknown network', async () => {
      const missing = await call('POST', '/compute/v2.1/servers', {
        token,
        headers: { 'x-openstack-nova-api-version': '2.37' },
        body: { server: { name: 'n1', imageRef: randomUUID(), flavorRef: 'x' } },
      });
      expect(missing.status).toBe(400);
      expect(missing.body.badRequest.message).toMatch(/networks/);
      const unknown = await call('POST', '/compute/v2.1/servers', {
        token,
        body: {
          server: { name: 'n1', imageRef: randomUUID(), flavorRef: 'x', networks: [{ uuid: randomUUID() }] },
        },
      });
      expect(unknown.status).toBe(400);
      expect(unknown.body.badRequest.message).toMatch(/Network .* could not be found/);
    });

    it('answers unknown paths with 404, wrong methods with 405 and the image proxy at 2.36 with 404', async () => {
      expect((await call('GET', '/compute/v2.1/nothing', { token })).status).toBe(404);
      expect((await call('GET', '/elsewhere')).status).toBe(404);
      expect((await call('PUT', '/compute/v2.1/flavors', { token, body: {} })).status).toBe(405);
      expect((await call('GET', '/compute/v2.1/images/detail', { token })).status).toBe(200);
      const gone = await call('GET', '/compute/v2.1/images/detail', {
        token,
        headers: { 'x-openstack-nova-api-version': '2.36' },
      });
      expect(gone.status).toBe(404);
    });
  });
});
