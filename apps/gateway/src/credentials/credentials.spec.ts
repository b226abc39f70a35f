import { randomUUID } from 'node:crypto';
import { gatewayV1 } from '@flotilla/contracts';
import { ErrorCode } from '@flotilla/domain';
import { type Database, testDatabases, waitFor } from '@flotilla/platform';
import type { Role } from '@flotilla/platform';
import { Principal, TokenAuth } from '../auth/token-auth';
import { TenantRow } from '../persistence';
import { openGatewayTestDatabase } from '../test-database';
import { AdminService } from '../tenants/admin.service';
import { CredentialAdmin } from './credential-admin.service';
import { CredentialRow } from './credential.entity';
import { credentialToProto } from './credential.grpc';
import { DbCredentialStore } from './db-credential-store';
import { SecretBox } from './secret-key';

// Real: the gateway's tables and migrations on PGlite and PostgreSQL, AES-GCM sealing, scrypt. Nothing is
// faked; principals are built directly (token authentication is TokenAuth's, tested in auth/access.spec.ts).

const { CredentialKind, Role: ProtoRole } = gatewayV1;

describe.each(testDatabases())('credentials of the compatibility fronts on %s', (_db, url) => {
  let db: Database;
  let drop: () => Promise<void>;
  let box: SecretBox;
  let store: DbCredentialStore;
  let credentials: CredentialAdmin;
  let tenants: AdminService;
  let acme: TenantRow;
  let other: TenantRow;
  const admin: Principal = {
    tokenId: randomUUID(),
    tenantId: randomUUID(),
    role: 'pool-admin',
    crossTenant: true,
  };
  const as = (role: Role): Principal => ({ ...admin, role, crossTenant: role === 'pool-operator' });

  const request = (
    o: Partial<gatewayV1.CreateCredentialRequest> = {},
  ): gatewayV1.CreateCredentialRequest => ({
    requestId: '',
    name: '',
    tenantId: 'acme',
    role: ProtoRole.ROLE_VM_ADMIN,
    kind: CredentialKind.CREDENTIAL_KIND_EC2,
    ttlSeconds: 0,
    ...o,
  });
  const ec2 = (o: Partial<gatewayV1.CreateCredentialRequest> = {}) => credentials.create(admin, request(o));
  const openstack = (o: Partial<gatewayV1.CreateCredentialRequest> = {}) =>
    credentials.create(admin, request({ kind: CredentialKind.CREDENTIAL_KIND_OPENSTACK, ...o }));
  /** A store with an empty cache, as another gateway (or this one after the cache expired) sees it. */
  const freshStore = () => new DbCredentialStore(db.dataSource, box);

  beforeAll(async () => {
    ({ db, drop } = await openGatewayTestDatabase(url, 'credentials'));
    box = new SecretBox(Buffer.alloc(32, 3), 'ec2-secret');
    store = new DbCredentialStore(db.dataSource, box);
    credentials = new CredentialAdmin(db.dataSource, box, store);
    tenants = new AdminService(db.dataSource, new TokenAuth(db.dataSource), async () => 0);
    const tenant = (name: string) =>
      tenants.createTenant(admin, { requestId: '', name, description: '', labels: {} });
    acme = await tenant('acme');
    other = await tenant('other');
  });
  afterAll(() => drop?.());

  describe('creating', () => {
    it('creates an EC2 access key shaped like AWS’s, named after its access key id, and returns its secret', async () => {
      const { credential, secret } = await ec2();
      expect(credential).toMatchObject({ kind: 'ec2', tenantId: acme.id, role: 'vm-admin', revoked: false });
      expect(credential.accessKeyId).toMatch(/^AKIA[A-Z2-7]{16}$/);
      expect(credential.name).toBe(credential.accessKeyId);
      expect(credential.expiresAt).toBeNull();
      expect(secret).toMatch(/^[A-Za-z0-9+/]{40}$/);
      expect((await store.ec2Secret(credential.accessKeyId!))?.secret).toBe(secret);
    });

    it('creates an OpenStack user with a generated name after its tenant and a random password', async () => {
      const { credential, secret } = await openstack();
      expect(credential).toMatchObject({ kind: 'openstack', accessKeyId: null });
      expect(credential.name).toMatch(/^acme-[a-z2-7]{8}$/);
      expect(secret).toMatch(/^[A-Za-z0-9_-]{32}$/);
      expect(await store.checkPassword(credential.name, secret)).toMatchObject({
        userName: credential.name,
        tenantName: 'acme',
        credentialId: credential.id,
      });
    });

    it('keeps only the EC2 secret sealed and the OpenStack password as a scrypt hash in the database', async () => {
      const key = await ec2({ name: 'sealed-check' });
      const user = await openstack({ name: 'hashed-check' });
      const rows = (await db.dataSource.query(
        `SELECT * FROM "${db.schema}".credentials WHERE id IN ($1, $2)`,
        [key.credential.id, user.credential.id],
      )) as Array<Record<string, unknown>>;
      const stored = JSON.stringify(rows);
      expect(stored).not.toContain(key.secret);
      expect(stored).not.toContain(user.secret);
      const byId = Object.fromEntries(rows.map((r) => [r.id, r]));
      expect(byId[key.credential.id].sealed_secret).toMatch(/^v1\./);
      expect(byId[user.credential.id].password_hash).toMatch(/^scrypt\$16384\$8\$1\$/);
    });

    it('sets the expiry from ttl_seconds', async () => {
      const before = Date.now();
      const { credential } = await ec2({ ttlSeconds: 3600 });
      expect(credential.expiresAt!.getTime()).toBeGreaterThanOrEqual(before + 3600_000);
      expect(credential.expiresAt!.getTime()).toBeLessThanOrEqual(Date.now() + 3600_000);
    });

    it('takes the tenant by id as well as by name', async () => {
      const { credential } = await ec2({ tenantId: other.id, role: ProtoRole.ROLE_READ_ONLY });
      expect(credential).toMatchObject({ tenantId: other.id, role: 'read-only' });
    });

    it('answers ALREADY_EXISTS for a repeated request_id and creates no second credential', async () => {
      const requestId = `req-${randomUUID()}`;
      await ec2({ requestId });
      await expect(ec2({ requestId })).rejects.toMatchObject({
        code: ErrorCode.AlreadyExists,
        fields: { field: 'request_id' },
        message: expect.stringContaining('cannot be shown again'),
      });
      expect(await db.dataSource.manager.countBy(CredentialRow, { requestId })).toBe(1);
    });

    it('answers ALREADY_EXISTS for a name taken in its kind, and allows it in the other kind', async () => {
      await openstack({ name: 'alice@example.org' });
      await expect(openstack({ name: 'alice@example.org', tenantId: 'other' })).rejects.toMatchObject({
        code: ErrorCode.AlreadyExists,
        fields: { field: 'name' },
        message: expect.stringContaining('OpenStack credential named alice@example.org already exists'),
      });
      expect((await ec2({ name: 'alice@example.org' })).credential.kind).toBe('ec2');
    });

    it('frees the name of a revoked credential, so a user can be given a new password', async () => {
      const first = await openstack({ name: 'rotated' });
      await credentials.revoke(admin, first.credential.id);
      const second = await openstack({ name: 'rotated' });
      expect(await store.checkPassword('rotated', first.secret)).toBeUndefined();
      expect((await store.checkPassword('rotated', second.secret))?.credentialId).toBe(second.credential.id);
    });

    it('answers NOT_FOUND naming tenant_id for an unknown tenant', async () => {
      await expect(ec2({ tenantId: 'nobody' })).rejects.toMatchObject({
        code: ErrorCode.NotFound,
        fields: { field: 'tenant_id' },
      });
    });

    it.each([
      ['kind', { kind: CredentialKind.CREDENTIAL_KIND_UNSPECIFIED }],
      ['name', { name: 'has space' }],
      ['name', { name: 'x'.repeat(64) }],
      ['role', { role: ProtoRole.ROLE_UNSPECIFIED }],
      ['ttl_seconds', { ttlSeconds: 31_622_401 }],
      ['tenant_id', { tenantId: '' }],
    ])('answers INVALID_ARGUMENT naming %s', async (field, o) => {
      await expect(ec2(o)).rejects.toMatchObject({ code: ErrorCode.InvalidArgument, fields: { field } });
    });

    it.each<Role>(['pool-operator', 'vm-admin', 'read-only'])(
      'refuses %s with PERMISSION_DENIED for create, list and revoke',
      async (role) => {
        const { credential } = await ec2();
        const denied = { code: ErrorCode.PermissionDenied };
        await expect(credentials.create(as(role), request())).rejects.toMatchObject(denied);
        await expect(credentials.list(as(role), undefined)).rejects.toMatchObject(denied);
        await expect(credentials.revoke(as(role), credential.id)).rejects.toMatchObject(denied);
        expect(await store.ec2Secret(credential.accessKeyId!)).toBeDefined();
      },
    );
  });

  describe('listing', () => {
    it('never shows a secret', async () => {
      const made = [await ec2(), await openstack()];
      const { credentials: listed } = await credentials.list(admin, {
        pageSize: 1000,
        pageToken: '',
        filter: '',
      });
      const shown = JSON.stringify(listed.map(credentialToProto));
      for (const { credential, secret } of made) {
        expect(shown).toContain(credential.id);
        expect(shown).not.toContain(secret);
      }
      expect(shown).not.toMatch(/"v1\.|scrypt\$/);
    });

    it('filters by tenant and kind, and pages', async () => {
      await ec2({ tenantId: 'other' });
      await openstack({ tenantId: 'other' });
      const page = (filter: string, pageToken = '') =>
        credentials.list(admin, { pageSize: 1, pageToken, filter });
      const filter = `tenant_id=${other.id},kind=openstack`;
      const first = await page(filter);
      expect(first.credentials.map((c) => [c.tenantId, c.kind])).toEqual([[other.id, 'openstack']]);
      const all = [...first.credentials];
      for (let token = first.nextPageToken; token;) {
        const next = await page(filter, token);
        all.push(...next.credentials);
        token = next.nextPageToken;
      }
      expect(all.every((c) => c.tenantId === other.id && c.kind === 'openstack')).toBe(true);
      expect(new Set(all.map((c) => c.id)).size).toBe(all.length);
      const byEnum = await credentials.list(admin, {
        pageSize: 1000,
        pageToken: '',
        filter: `tenant_id=${other.id},kind=CREDENTIAL_KIND_OPENSTACK`,
      });
      expect(byEnum.credentials.map((c) => c.id)).toEqual(all.map((c) => c.id));
    });

    it('answers INVALID_ARGUMENT for an unknown kind or filter field', async () => {
      for (const filter of ['kind=s3', 'role=vm-admin'])
        await expect(credentials.list(admin, { pageSize: 10, pageToken: '', filter })).rejects.toMatchObject({
          code: ErrorCode.InvalidArgument,
          fields: { field: 'page.filter' },
        });
    });
  });

  describe('revoking', () => {
    it('revokes by credential id: the store forgets it at once, even though it had just served it', async () => {
      const { credential } = await ec2();
      expect(await store.ec2Secret(credential.accessKeyId!)).toBeDefined();
      const revoked = await credentials.revoke(admin, credential.id);
      expect(revoked).toMatchObject({ id: credential.id, revoked: true });
      expect(await store.ec2Secret(credential.accessKeyId!)).toBeUndefined();
    });

    it('revokes by EC2 access key id', async () => {
      const { credential } = await ec2();
      expect((await credentials.revoke(admin, credential.accessKeyId!)).id).toBe(credential.id);
      expect(await freshStore().ec2Secret(credential.accessKeyId!)).toBeUndefined();
      const listed = await credentials.list(admin, { pageSize: 1000, pageToken: '', filter: '' });
      expect(listed.credentials.find((c) => c.id === credential.id)?.revoked).toBe(true);
    });

    it('revokes an OpenStack user: its password and its Keystone identity stop working at once', async () => {
      const { credential, secret } = await openstack();
      expect(await store.checkPassword(credential.name, secret)).toBeDefined();
      expect(await store.identityOf(credential.id)).toBeDefined();
      await credentials.revoke(admin, credential.id);
      expect(await store.checkPassword(credential.name, secret)).toBeUndefined();
      expect(await store.identityOf(credential.id)).toBeUndefined();
    });

    it('deletes the credentials of a deleted tenant with it', async () => {
      await tenants.createTenant(admin, { requestId: '', name: 'leaving', description: '', labels: {} });
      const { credential } = await ec2({ tenantId: 'leaving' });
      await tenants.deleteTenant(admin, 'leaving');
      expect(await db.dataSource.manager.existsBy(CredentialRow, { id: credential.id })).toBe(false);
      expect(await freshStore().ec2Secret(credential.accessKeyId!)).toBeUndefined();
    });

    it('answers NOT_FOUND for an unknown id and INVALID_ARGUMENT for something that is no id', async () => {
      await expect(credentials.revoke(admin, randomUUID())).rejects.toMatchObject({
        code: ErrorCode.NotFound,
      });
      await expect(credentials.revoke(admin, 'AKIAAAAAAAAAAAAAAAAA')).rejects.toMatchObject({
        code: ErrorCode.NotFound,
      });
      await expect(credentials.revoke(admin, 'alice')).rejects.toMatchObject({
        code: ErrorCode.InvalidArgument,
        fields: { field: 'id' },
      });
    });
  });

  describe('the store the fronts use', () => {
    const expire = (id: string) =>
      db.dataSource.manager.update(CredentialRow, { id }, { expiresAt: new Date(Date.now() - 1000) });

    it('gives the EC2 secret and principal of a live access key, acting as its tenant and role', async () => {
      const { credential, secret } = await ec2({ role: ProtoRole.ROLE_VM_OPERATOR });
      expect(await freshStore().ec2Secret(credential.accessKeyId!)).toEqual({
        secret,
        principal: { tokenId: credential.id, tenantId: acme.id, role: 'vm-operator', crossTenant: false },
      });
      const pool = await ec2({ role: ProtoRole.ROLE_POOL_ADMIN });
      expect((await freshStore().ec2Secret(pool.credential.accessKeyId!))?.principal.crossTenant).toBe(true);
    });

    it('knows no expired, unknown or malformed access key', async () => {
      const { credential } = await ec2();
      await expire(credential.id);
      const fresh = freshStore();
      expect(await fresh.ec2Secret(credential.accessKeyId!)).toBeUndefined();
      expect(await fresh.ec2Secret('AKIAAAAAAAAAAAAAAAAA')).toBeUndefined();
      expect(await fresh.ec2Secret('not-a-key')).toBeUndefined();
    });

    it('accepts the right password only, and none of an expired user', async () => {
      const { credential, secret } = await openstack({ role: ProtoRole.ROLE_VM_ADMIN });
      const fresh = freshStore();
      expect(await fresh.checkPassword(credential.name, `${secret}x`)).toBeUndefined();
      expect(await fresh.checkPassword(credential.name, '')).toBeUndefined();
      expect(await fresh.checkPassword('nobody', secret)).toBeUndefined();
      const identity = await fresh.checkPassword(credential.name, secret);
      expect(identity).toEqual({
        principal: { tokenId: credential.id, tenantId: acme.id, role: 'vm-admin', crossTenant: false },
        credentialId: credential.id,
        userName: credential.name,
        tenantName: 'acme',
      });
      // Once verified, a wrong password is still refused (the shortcut holds only the matching one).
      expect(await fresh.checkPassword(credential.name, secret)).toEqual(identity);
      expect(await fresh.checkPassword(credential.name, `${secret}x`)).toBeUndefined();
      await expire(credential.id);
      expect(await freshStore().checkPassword(credential.name, secret)).toBeUndefined();
      expect(await freshStore().identityOf(credential.id)).toBeUndefined();
    });

    it('gives the identity of a live OpenStack credential only', async () => {
      const user = await openstack();
      const key = await ec2();
      const fresh = freshStore();
      expect((await fresh.identityOf(user.credential.id))?.userName).toBe(user.credential.name);
      expect(await fresh.identityOf(key.credential.id)).toBeUndefined();
      expect(await fresh.identityOf(randomUUID())).toBeUndefined();
    });

    it('answers repeated look-ups from its cache, without reading the database', async () => {
      const { credential } = await ec2();
      const fresh = freshStore();
      await fresh.ec2Secret(credential.accessKeyId!);
      const reads = jest.spyOn(db.dataSource.manager, 'findOneBy');
      try {
        await fresh.ec2Secret(credential.accessKeyId!);
        expect(reads).not.toHaveBeenCalled();
      } finally {
        reads.mockRestore();
      }
    });

    it('records when a credential was last used', async () => {
      const { credential } = await ec2();
      await freshStore().ec2Secret(credential.accessKeyId!);
      const used = await waitFor(
        'last_used_at written',
        async () =>
          (await db.dataSource.manager.findOneByOrFail(CredentialRow, { id: credential.id })).lastUsedAt,
      );
      expect(credentialToProto({ ...credential, lastUsedAt: used }).lastUsedAt).toEqual(used);
    });
  });
});
