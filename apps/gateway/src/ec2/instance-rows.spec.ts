import { randomUUID } from 'node:crypto';
import { type Database, quotedTable, testDatabases } from '@flotilla/platform';
import { openGatewayTestDatabase } from '../test-database';
import { InstanceMap } from './instance-map';
import { InstanceRows } from './instance-rows';
import { Ec2InstanceRow } from './persistence';

// Real: the gateway's migrations (the version table and its triggers) on PGlite and PostgreSQL.
describe.each(testDatabases())(
  'InstanceRows: instance rows kept while their version stays, on %s',
  (_db, url) => {
    let db: Database;
    let drop: () => Promise<void>;
    let table: string;
    beforeAll(async () => {
      ({ db, drop } = await openGatewayTestDatabase(url, 'instance_rows'));
      table = quotedTable(db.dataSource.manager, Ec2InstanceRow);
    });
    afterAll(() => drop?.());

    const launch = (map: InstanceMap, tenantId: string, n: number) =>
      map.record({
        instanceId: `i-${randomUUID().replace(/-/g, '').slice(0, 17)}`,
        vmId: randomUUID(),
        tenantId,
        reservationId: 'r-0123456789abcdef0',
        launchIndex: n,
        imageId: null,
        instanceType: 'm1.small',
        keyName: null,
        userData: null,
        clientToken: null,
        launchTime: new Date(),
      });

    /** A map whose full reads are counted: a kept listing reads only the version. */
    const counted = () => {
      const map = new InstanceMap(db.dataSource);
      const reads = jest.spyOn(map, 'rowsOf');
      return { map, reads };
    };

    it('reads the rows once while nothing changes them, and gives copies the caller may change', async () => {
      const tenant = randomUUID();
      const { map, reads } = counted();
      expect(await map.versionOf(tenant)).toBe('0');
      await launch(map, tenant, 0);
      const rows = new InstanceRows();
      const first = await rows.of(map, tenant);
      first[0].terminatedAt = new Date();
      const second = await rows.of(map, tenant);
      expect(reads).toHaveBeenCalledTimes(1);
      expect(second).toHaveLength(1);
      expect(second[0].terminatedAt).toBeNull();
    });

    it('sees every change another gateway makes: a launch, a termination, a row forgotten', async () => {
      const tenant = randomUUID();
      const { map, reads } = counted();
      const other = new InstanceMap(db.dataSource);
      const rows = new InstanceRows();
      const a = await launch(map, tenant, 0);
      expect((await rows.of(map, tenant)).map((r) => r.instanceId)).toEqual([a.instanceId]);

      const b = await launch(other, tenant, 1);
      expect((await rows.of(map, tenant)).map((r) => r.instanceId).sort()).toEqual(
        [a.instanceId, b.instanceId].sort(),
      );
      await db.dataSource.query(`UPDATE ${table} SET terminated_at = now() WHERE instance_id = $1`, [
        a.instanceId,
      ]);
      expect(
        (await rows.of(map, tenant)).find((r) => r.instanceId === a.instanceId)?.terminatedAt,
      ).toBeInstanceOf(Date);
      await other.forget([b.vmId]);
      expect((await rows.of(map, tenant)).map((r) => r.instanceId)).toEqual([a.instanceId]);
      expect(reads).toHaveBeenCalledTimes(4);
      await rows.of(map, tenant);
      expect(reads).toHaveBeenCalledTimes(4);
    });

    it("moves a tenant's version once per statement, and not another tenant's", async () => {
      const tenant = randomUUID();
      const bystander = randomUUID();
      const map = new InstanceMap(db.dataSource);
      await launch(map, bystander, 0);
      const before = BigInt(await map.versionOf(tenant));
      const bystanderBefore = await map.versionOf(bystander);
      await db.dataSource.query(
        `INSERT INTO ${table} (instance_id, vm_id, tenant_id, reservation_id, launch_index, launch_time)
       SELECT 'i-' || substr(md5(g::text || $1::text), 1, 17), gen_random_uuid(), $1::uuid, 'r-1', g, now()
       FROM generate_series(1, 50) g`,
        [tenant],
      );
      expect(BigInt(await map.versionOf(tenant))).toBe(before + 1n);
      expect(await map.versionOf(bystander)).toBe(bystanderBefore);
    });

    it('keeps no more rows than it may: a tenant larger than that is read every time', async () => {
      const tenant = randomUUID();
      const { map, reads } = counted();
      for (let n = 0; n < 3; n++) await launch(map, tenant, n);
      const rows = new InstanceRows(2);
      expect(await rows.of(map, tenant)).toHaveLength(3);
      expect(await rows.of(map, tenant)).toHaveLength(3);
      expect(reads).toHaveBeenCalledTimes(2);
    });
  },
);
