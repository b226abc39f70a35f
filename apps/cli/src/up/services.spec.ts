import { databaseSpec, portsFor, portsToCheck, servicePlan, sharedEnv, type UpPlanOptions } from './services';

const options: UpPlanOptions = {
  distDir: '/repo/dist',
  dataDir: '/data',
  basePort: 7400,
  agents: 2,
  driver: 'auto',
  node: '/usr/bin/node',
};

describe('up service plan', () => {
  it('uses the documented default ports', () => {
    expect(portsFor(options)).toEqual({
      gateway: 7400,
      compute: 7401,
      storage: 7402,
      network: 7403,
      migration: 7404,
      migrationAdmin: 7484,
      adminHttp: 7480,
      ec2: 8773,
      openstack: 8774,
      db: 7490,
      agents: [7410, 7411],
      agentAdmin: [7500, 7501],
    });
  });

  it('shifts every port with --base-port', () => {
    const ports = portsFor({ ...options, basePort: 8400, agents: 3 });
    expect([ports.gateway, ports.compute, ports.adminHttp, ports.db, ...ports.agents, ports.ec2]).toEqual([
      8400, 8401, 8480, 8490, 8410, 8411, 8412, 9773,
    ]);
  });

  it('takes the database port from FLOTILLA_DB_PORT when given', () => {
    expect(portsFor({ ...options, dbPort: 5555 }).db).toBe(5555);
  });

  it('checks the database port only when the database is embedded', () => {
    const ports = portsFor(options);
    expect(portsToCheck(ports, true).map((p) => p.port)).toContain(7490);
    expect(portsToCheck(ports, false).map((p) => p.port)).not.toContain(7490);
  });

  it("wires every service to the others and keeps the CLI's own token out of their environment", () => {
    const env = sharedEnv(
      options,
      portsFor(options),
      { serviceToken: 's'.repeat(32), databaseUrl: 'postgres://x' },
      { PATH: '/bin', FLOTILLA_TOKEN: 'flt_secret', FLOTILLA_LOG_LEVEL: 'debug' },
    );
    expect(env).toMatchObject({
      PATH: '/bin',
      FLOTILLA_LOG_LEVEL: 'debug',
      DATABASE_URL: 'postgres://x',
      FLOTILLA_DATA_DIR: '/data',
      FLOTILLA_COMPUTE_ADDRESS: '127.0.0.1:7401',
      FLOTILLA_COMPUTE_URL: '127.0.0.1:7401',
      FLOTILLA_GATEWAY_ADDRESS: '127.0.0.1:7400',
      FLOTILLA_ADMIN_HTTP_ADDRESS: '127.0.0.1:7480',
      FLOTILLA_EC2_ADDRESS: '127.0.0.1:8773',
      FLOTILLA_OPENSTACK_ADDRESS: '127.0.0.1:8774',
      FLOTILLA_BOOTSTRAP_TOKEN_FILE: '/data/admin-token',
    });
    expect(env.FLOTILLA_TOKEN).toBeUndefined();
  });

  it('names agents host-1.. with their own address, state directory and the chosen driver', () => {
    const plan = servicePlan({ ...options, driver: 'sim' }, portsFor(options), {});
    expect(
      plan.agents.map((a) => [
        a.name,
        a.env.FLOTILLA_AGENT_ADDRESS,
        a.env.FLOTILLA_AGENT_STATE_DIR,
        a.env.FLOTILLA_DRIVER,
      ]),
    ).toEqual([
      ['host-1', '127.0.0.1:7410', '/data/agents/host-1', 'sim'],
      ['host-2', '127.0.0.1:7411', '/data/agents/host-2', 'sim'],
    ]);
    expect(plan.agents[0].args).toEqual(['/repo/dist/apps/host-agent/src/main.js']);
  });

  it("runs compute and the gateway with a larger V8 young generation; an operator's NODE_OPTIONS still win", () => {
    const plan = servicePlan(options, portsFor(options), {});
    const nodeOptions = Object.fromEntries(
      [...plan.pool, plan.gateway, ...plan.agents].map((s) => [s.name, s.env.NODE_OPTIONS]),
    );
    expect(nodeOptions).toEqual({
      compute: '--max-semi-space-size=64',
      gateway: '--max-semi-space-size=64',
      storage: undefined,
      network: undefined,
      migration: undefined,
      'host-1': undefined,
      'host-2': undefined,
    });
    const own = servicePlan(options, portsFor(options), { NODE_OPTIONS: '--max-semi-space-size=16' });
    // Node takes the last of a repeated V8 option: the operator's.
    expect(own.gateway.env.NODE_OPTIONS).toBe('--max-semi-space-size=64 --max-semi-space-size=16');
    expect(own.pool.find((s) => s.name === 'storage')?.env.NODE_OPTIONS).toBe('--max-semi-space-size=16');
  });

  it('stops agents and gateway first and the database last', () => {
    const ports = portsFor(options);
    const plan = servicePlan(options, ports, {});
    const db = databaseSpec(options, ports, {});
    expect(plan.gateway.stopPhase).toBe(plan.agents[0].stopPhase);
    expect(plan.pool[0].stopPhase).toBeGreaterThan(plan.gateway.stopPhase);
    expect(db.stopPhase).toBeGreaterThan(plan.pool[0].stopPhase);
    expect(db.args).toEqual(['/repo/dist/apps/cli/src/up/embedded-db.main.js']);
    expect(db.env).toMatchObject({ FLOTILLA_DATA_DIR: '/data', FLOTILLA_DB_PORT: '7490' });
  });
});
