/**
 * Real VMs through the public API: gateway → compute → host agent (qemu driver) → QEMU, booting the demo
 * guest built from Debian packages. Every step is observed from the guest's side — its serial console (read
 * through the API), its HTTP server through the forwarded port — not only from power states.
 * Under TCG (this machine kind) a boot takes seconds: the waits adapt, the assertions do not.
 */
import * as http from 'node:http';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { commonV1, computeV1 } from '@flotilla/contracts';
import {
  DEMO_POWEROFF_MARKER,
  DEMO_READY_MARKER,
  DEMO_TICK_LINE,
  DemoImageManifest,
  demoImageForTests,
  describeWithRealQemu,
} from '@flotilla/hypervisor';
import {
  freePort,
  LocalCloud,
  operationDone,
  rejection,
  startLocalCloud,
  TestTenant,
  testDatabases,
  uniqueSchema,
  vmRequest,
  waitFor,
  kernelImageRegistration,
} from '@flotilla/platform';

describeWithRealQemu('real VMs end to end', () => {
  const { OperationState: S } = commonV1;
  const { PowerState: P } = computeV1;
  const bootWait = { timeoutMs: 90_000, intervalMs: 250 };
  jest.setTimeout(240_000);

  function httpGet(address: string, urlPath = '/'): Promise<string> {
    const [host, port] = address.split(':');
    return new Promise((resolve, reject) => {
      const req = http.get({ host, port: Number(port), path: urlPath, timeout: 5000 }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve(body));
      });
      req.on('timeout', () => req.destroy(new Error(`GET ${address}${urlPath} timed out`)));
      req.on('error', reject);
    });
  }

  const ticks = (log: string): number[] => [...log.matchAll(DEMO_TICK_LINE)].map((m) => Number(m[1]));

  describe('real VMs through the gateway (qemu driver)', () => {
    const [, databaseUrl] = testDatabases()[0];
    let cloud: LocalCloud;
    let tenant: TestTenant;
    let demo: DemoImageManifest & { catalogueDir: string };
    let agentEnv: Record<string, string>;
    let metricsAddress: string;

    beforeAll(async () => {
      try {
        execFileSync('qemu-system-x86_64', ['--version']);
      } catch {
        throw new Error(
          'qemu-system-x86_64 is not installed: apt-get install qemu-system-x86 qemu-utils (.ci/run does)',
        );
      }
      demo = await demoImageForTests();
      metricsAddress = `127.0.0.1:${await freePort()}`;
      agentEnv = {
        FLOTILLA_DRIVER: 'qemu',
        FLOTILLA_IMAGE_DIR: demo.catalogueDir,
        FLOTILLA_AGENT_ADMIN_ADDRESS: metricsAddress,
      };
      // The harness's state directory is deep (a temp dir per cloud): too deep for unix socket paths, so
      // this also runs the driver's short socket directory.
      cloud = await startLocalCloud({
        databaseUrl,
        schemaPrefix: uniqueSchema('realvm'),
        agents: [{ name: 'qemu-1', env: agentEnv }],
        // Its own process, so that "compute restarts" is a SIGKILL and a new process.
        computeAsProcess: true,
      });
      await cloud.admin.images.call.registerImage(kernelImageRegistration('demo', demo));
      tenant = await cloud.tenant('realvm');
      await cloud.hostsReady(1);
    });

    afterAll(async () => {
      // Destroy what the tests left so no QEMU outlives the suite, then stop the services.
      if (cloud) {
        const { vms } = await cloud.admin.vms.call.listVms({
          page: { pageSize: 100, pageToken: '', filter: '' },
        });
        await Promise.all(
          vms.map(async (vm) => {
            const { operation } = await cloud.admin.vms.call.destroyVm({ id: vm.id, requestId: '' });
            await operationDone(cloud.admin.operations, operation!.id, 60_000).catch(() => undefined);
          }),
        );
        await cloud.stop();
      }
    });

    const getVm = async (id: string) => (await tenant.clients.vms.call.getVm({ id })).vm!;
    const consoleLog = async (id: string) =>
      Buffer.from((await tenant.clients.vms.call.getVmConsoleLog({ id, maxBytes: 0 })).data).toString();
    const done = async (op: { operation?: commonV1.Operation }, timeoutMs = 120_000) => {
      const finished = await operationDone(tenant.clients.operations, op.operation!.id, timeoutMs);
      expect({ state: finished.state, error: finished.error?.message }).toEqual({
        state: S.OPERATION_STATE_SUCCEEDED,
        error: undefined,
      });
      return finished;
    };
    const bootDemo = async (name: string) => {
      const created = await tenant.clients.vms.call.createVm(
        vmRequest({
          name,
          flavorId: '',
          vcpus: 1,
          memoryMib: 256,
          // No demo.name=: the guest learns its name from the flotilla.name= compute adds.
          boot: { image: 'demo', kernel: '', initrd: '', cmdline: '' },
          nics: [{ mac: '', forwards: [{ guestPort: 80, hostAddress: '' }] }],
        }),
      );
      await done(created);
      const vm = await getVm(created.vm!.id);
      await waitFor(
        `${name}: ${DEMO_READY_MARKER} on its console`,
        async () => (await consoleLog(vm.id)).includes(`${DEMO_READY_MARKER} name=${name}`),
        bootWait,
      );
      return vm;
    };

    it('boots the demo image and serves HTTP from the guest through the forwarded port', async () => {
      const vm = await bootDemo('web-1');
      expect(vm.powerState).toBe(P.POWER_STATE_RUNNING);
      const address = vm.nics[0].forwards[0].hostAddress;
      expect(address).toMatch(/^127\.0\.0\.1:\d+$/);
      expect(await httpGet(address)).toContain('web-1');
      const host = (
        await cloud.admin.hosts.call.listHosts({ page: { pageSize: 10, pageToken: '', filter: '' } })
      ).hosts[0];
      expect(host.driver).toBe('qemu');
      expect(host.accelerator).toMatch(/^(kvm|tcg) \(.+\)$/);
    });

    it('attaches an interactive console through the gateway: keys reach the guest shell, output comes back', async () => {
      const vm = await bootDemo('console-1');
      const stream = tenant.clients.vms.duplex<
        computeV1.AttachVmConsoleRequest,
        computeV1.AttachVmConsoleResponse
      >('AttachVmConsole');
      let output = '';
      stream.on('data', (r: computeV1.AttachVmConsoleResponse) => (output += Buffer.from(r.data).toString()));
      stream.on('error', () => undefined);
      stream.write({ id: vm.id, data: Buffer.from('\r') });
      // 6*7 is computed by the guest's shell: the answer cannot be an echo of what was typed.
      await waitFor(
        'the guest shell to answer',
        () => {
          stream.write({ id: '', data: Buffer.from('echo flotilla-$((6*7))\r') });
          return output.includes('flotilla-42');
        },
        { timeoutMs: 60_000, intervalMs: 2000 },
      );
      stream.cancel();
    });

    it('reads live metrics of a running VM', async () => {
      const vm = await bootDemo('metrics-1');
      const { metrics } = await tenant.clients.vms.call.getVmMetrics({ id: vm.id });
      expect(metrics!.cpuTimeNs).toBeGreaterThan(0);
      expect(metrics!.residentMemoryBytes).toBeGreaterThan(16 * 1024 * 1024);
      const later = await waitFor('CPU time to grow', async () => {
        const m = (await tenant.clients.vms.call.getVmMetrics({ id: vm.id })).metrics!;
        return m.cpuTimeNs > metrics!.cpuTimeNs && m;
      });
      expect(later.vmId).toBe(vm.id);
      // The same counters for Prometheus on the host agent's /metrics.
      const scraped = await httpGet(metricsAddress, '/metrics');
      expect(scraped).toMatch(
        new RegExp(`^flotilla_vm_cpu_seconds_total\\{vm_id="${vm.id}"\\} [0-9.]+$`, 'm'),
      );
      expect(scraped).toMatch(
        new RegExp(`^flotilla_vm_resident_memory_bytes\\{vm_id="${vm.id}"\\} [0-9]+$`, 'm'),
      );
    });

    it('pauses (the guest stops ticking) and unpauses a VM, and reboots it (a new boot id)', async () => {
      const vm = await bootDemo('pause-1');
      const status = async () =>
        JSON.parse(await httpGet(vm.nics[0].forwards[0].hostAddress, '/cgi-bin/status')) as {
          bootId: string;
          tick: number;
        };
      const first = await status();
      await done(await tenant.clients.vms.call.pauseVm({ id: vm.id, requestId: '' }));
      expect((await getVm(vm.id)).powerState).toBe(P.POWER_STATE_PAUSED);
      const frozen = Math.max(0, ...ticks(await consoleLog(vm.id)));
      // Paused vCPUs print nothing: the console log stays where it was while wall time passes.
      const since = Date.now();
      await waitFor('two seconds of wall time', () => Date.now() - since > 2000);
      expect(Math.max(0, ...ticks(await consoleLog(vm.id)))).toBe(frozen);
      await done(await tenant.clients.vms.call.unpauseVm({ id: vm.id, requestId: '' }));
      await waitFor(
        'ticks after unpause',
        async () => Math.max(0, ...ticks(await consoleLog(vm.id))) > frozen,
        bootWait,
      );
      await done(
        await tenant.clients.vms.call.rebootVm({
          id: vm.id,
          requestId: '',
          mode: computeV1.ShutdownMode.SHUTDOWN_MODE_HARD,
        }),
      );
      const rebooted = await waitFor(
        'the guest to answer after the reboot',
        async () => {
          const now = await status();
          return now.bootId !== first.bootId && now;
        },
        bootWait,
      );
      expect(rebooted.bootId).not.toBe(first.bootId);
    });

    it('keeps VMs running while compute is killed and restarted, and compute reads them as running after', async () => {
      const vm = await bootDemo('steady-1');
      await cloud.compute.kill();
      expect(await httpGet(vm.nics[0].forwards[0].hostAddress)).toContain('steady-1');
      await cloud.compute.restart();
      // The gateway finds the new compute within its reconnect backoff (at most 2 s).
      const after = await waitFor('the VM through the gateway again', () => getVm(vm.id));
      expect(after.powerState).toBe(P.POWER_STATE_RUNNING);
      expect(await httpGet(vm.nics[0].forwards[0].hostAddress)).toContain('steady-1');
    });

    it('suspends a VM to its host and resumes it with its memory intact (the tick counter goes on)', async () => {
      const vm = await bootDemo('suspend-1');
      await waitFor('a few ticks', async () => ticks(await consoleLog(vm.id)).length >= 2, bootWait);
      await done(await tenant.clients.vms.call.suspendVm({ id: vm.id, requestId: '' }));
      expect((await getVm(vm.id)).powerState).toBe(P.POWER_STATE_SUSPENDED);
      const before = Math.max(...ticks(await consoleLog(vm.id)));
      await done(await tenant.clients.vms.call.resumeVm({ id: vm.id, requestId: '' }));
      const after = await waitFor(
        'ticks after resume',
        async () => {
          const t = ticks(await consoleLog(vm.id));
          return t[t.length - 1] > before && t;
        },
        bootWait,
      );
      // A guest that had rebooted would count from 1 again.
      expect(after.slice(after.lastIndexOf(before) + 1).every((t) => t > before)).toBe(true);
      const resumed = await getVm(vm.id);
      expect(await httpGet(resumed.nics[0].forwards[0].hostAddress)).toContain('suspend-1');
    });

    it('shuts a VM down cleanly: the guest sees the power button and powers off', async () => {
      const vm = await bootDemo('stop-1');
      await done(
        await tenant.clients.vms.call.shutdownVm({
          id: vm.id,
          requestId: '',
          mode: computeV1.ShutdownMode.SHUTDOWN_MODE_CLEAN,
          timeoutMs: 60_000,
        }),
      );
      expect((await getVm(vm.id)).powerState).toBe(P.POWER_STATE_HALTED);
      // The history outlives the VM's run: it says the guest saw the power button.
      expect(await consoleLog(vm.id)).toContain(DEMO_POWEROFF_MARKER);
    });

    it('keeps VMs running while the agent is away; a new agent re-attaches and reports the truth', async () => {
      const keep = await bootDemo('survivor-1');
      const victim = await bootDemo('victim-1');
      const [agent] = cloud.agents;
      await agent.stop();
      // While no agent watches: one VM keeps serving, the other's QEMU is killed.
      expect(await httpGet(keep.nics[0].forwards[0].hostAddress)).toContain('survivor-1');
      const pidfile = fs
        .readdirSync(agent.stateDir, { recursive: true, encoding: 'utf8' })
        .map((f) => path.join(agent.stateDir, f))
        .find((f) => f.includes(victim.id) && f.endsWith('.pid'));
      expect(pidfile).toBeDefined();
      process.kill(Number(fs.readFileSync(pidfile!, 'utf8').trim()), 'SIGKILL');
      await cloud.startAgent({ name: agent.name, stateDir: agent.stateDir, env: agentEnv });
      const halted = await waitFor(
        'the killed VM to read HALTED',
        async () => {
          const v = await getVm(victim.id);
          return v.powerState === P.POWER_STATE_HALTED && v;
        },
        { timeoutMs: 30_000 },
      );
      expect(halted.powerStateReason).toMatch(/killed or crashed|killed by/);
      // Its console history stays readable on the host while the VM is kept halted.
      // Two heartbeats later (each reconciles, and the agent acts on the answer before the next):
      for (let i = 0; i < 2; i++) {
        const since = Date.now();
        await waitFor('a heartbeat', async () => {
          const { hosts } = await cloud.admin.hosts.call.listHosts({
            page: { pageSize: 10, pageToken: '', filter: '' },
          });
          return hosts[0].lastHeartbeatAt!.getTime() > since;
        });
      }
      expect(await consoleLog(victim.id)).toContain(`${DEMO_READY_MARKER} name=victim-1`);
      expect((await getVm(keep.id)).powerState).toBe(P.POWER_STATE_RUNNING);
      expect(await httpGet(keep.nics[0].forwards[0].hostAddress)).toContain('survivor-1');
    });

    it('refuses to boot an image that is not in the catalogue, naming it', async () => {
      const created = await tenant.clients.vms.call.createVm(
        vmRequest({ name: 'ghost-1', boot: { image: 'no-such-image', kernel: '', initrd: '', cmdline: '' } }),
      );
      const op = await operationDone(tenant.clients.operations, created.operation!.id);
      expect(op.state).toBe(S.OPERATION_STATE_FAILED);
      expect(op.error?.message).toContain('image no-such-image not found');
      expect(await rejection(tenant.clients.vms.call.getVmMetrics({ id: created.vm!.id }))).toMatchObject({
        code: 'FAILED_PRECONDITION',
      });
    });
  });
});
