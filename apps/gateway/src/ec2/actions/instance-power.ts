import { status } from '@grpc/grpc-js';
import { computeV1 } from '@flotilla/contracts';
import { isGrpcStatus } from '@flotilla/platform';
import type { Ec2Action, Ec2Context } from '../context';
import { Ec2Error } from '../errors';
import { ec2ErrorFromGrpc } from '../grpc-errors';
import { checkInstanceIds } from '../ids';
import { InstanceStatus, namedStatuses } from '../instance-directory';
import { Ec2State, ec2State } from '../instance-state';
import { stateXml } from '../instance-view';
import { booleanParam, listParam, missing } from '../params';
import { items, leaf, Xml } from '../xml';

const P = computeV1.PowerState;
const { SHUTDOWN_MODE_CLEAN: clean, SHUTDOWN_MODE_HARD: hard } = computeV1.ShutdownMode;

/** What one power action does to an instance in a given state: nothing (already there), a call, or refuse. */
type Step =
  { kind: 'none' } | { kind: 'call'; then: Ec2State; run: () => Promise<unknown> } | { kind: 'refuse' };

function instanceIds(ctx: Ec2Context): string[] {
  const ids = listParam(ctx.params, 'InstanceId');
  if (!ids.length) throw missing('InstanceId');
  checkInstanceIds(ids);
  return ids;
}

function incorrectState(i: InstanceStatus, verb: string): Ec2Error {
  return new Ec2Error(
    'IncorrectInstanceState',
    `The instance '${i.view.instanceId}' is not in a state from which it can be ${verb} (it is ${i.view.state.name})`,
  );
}

/**
 * Start/Stop/Terminate: every id is checked first (unknown → NotFound, nothing done), then each instance gets
 * its call; the answer lists currentState before previousState, as EC2 writes them.
 */
function stateChange(verb: string, plan: (ctx: Ec2Context, i: InstanceStatus) => Step): Ec2Action['handle'] {
  return async (ctx) => {
    const instances = await namedStatuses(ctx, instanceIds(ctx));
    const steps = instances.map((i) => ({ i, step: plan(ctx, i) }));
    const refused = steps.find((s) => s.step.kind === 'refuse');
    if (refused) throw incorrectState(refused.i, verb);
    await ctx.claimed;
    const changes: Array<Array<Xml | undefined>> = [];
    for (const { i, step } of steps) {
      let current = i.view.state;
      if (step.kind === 'call') {
        try {
          await step.run();
        } catch (e) {
          throw ec2ErrorFromGrpc(
            e,
            {
              notFoundCode: 'InvalidInstanceID.NotFound',
              notFoundMessage: `The instance ID '${i.view.instanceId}' does not exist`,
            },
            ctx.site.logger,
          );
        }
        current = step.then;
      }
      changes.push([
        leaf('instanceId', i.view.instanceId),
        stateXml('currentState', current),
        stateXml('previousState', i.view.state),
      ]);
    }
    return [items('instancesSet', changes)];
  };
}

const vmCall = (ctx: Ec2Context) => ctx.site.pool.vms.call;

/**
 * Runs a power call; when compute refuses it because the VM's previous operation is still in flight (a
 * terminate right after a launch), waits for that operation (bounded) and tries once more.
 */
async function afterInFlight(
  ctx: Ec2Context,
  vm: computeV1.Vm,
  call: () => Promise<unknown>,
): Promise<unknown> {
  try {
    return await call();
  } catch (e) {
    if (!vm.currentOperationId || !isGrpcStatus(e, status.FAILED_PRECONDITION)) throw e;
    await ctx.site.pool.computeOperations.call
      .waitOperation({ id: vm.currentOperationId, timeoutMs: 10_000 }, { ...ctx.call, deadlineMs: 15_000 })
      .catch(() => undefined);
    return call();
  }
}

export const startInstances: Ec2Action = {
  role: 'vm-operator',
  mutating: true,
  readsWhileClaiming: true,
  handle: stateChange('started', (ctx, i) => {
    const name = i.view.state.name;
    if (name === 'running' || name === 'pending') return { kind: 'none' };
    if (name !== 'stopped' || !i.vm) return { kind: 'refuse' };
    const id = i.vm.id;
    const run =
      i.vm.powerState === P.POWER_STATE_PAUSED
        ? () => vmCall(ctx).unpauseVm({ id, requestId: '' }, ctx.call)
        : i.vm.powerState === P.POWER_STATE_SUSPENDED
          ? () => vmCall(ctx).resumeVm({ id, requestId: '' }, ctx.call)
          : () => vmCall(ctx).startVm({ id, requestId: '', hostId: '' }, ctx.call);
    return { kind: 'call', then: ec2State('pending'), run };
  }),
};

export const stopInstances: Ec2Action = {
  role: 'vm-operator',
  mutating: true,
  readsWhileClaiming: true,
  handle: async (ctx) => {
    const force = booleanParam(ctx.params, 'Force');
    return stateChange('stopped', (c, i) => {
      const name = i.view.state.name;
      if (name === 'stopped' || name === 'stopping') return { kind: 'none' };
      const vm = i.vm;
      if (name !== 'running' || !vm) return { kind: 'refuse' };
      const id = vm.id;
      return {
        kind: 'call',
        then: ec2State('stopping'),
        run: () =>
          afterInFlight(c, vm, () =>
            vmCall(c).shutdownVm({ id, requestId: '', mode: force ? hard : clean, timeoutMs: 0 }, c.call),
          ),
      };
    })(ctx);
  },
};

export const terminateInstances: Ec2Action = {
  role: 'vm-admin',
  mutating: true,
  readsWhileClaiming: true,
  handle: stateChange('terminated', (ctx, i) => {
    const vm = i.vm;
    if (!vm || i.view.state.name === 'shutting-down') return { kind: 'none' };
    const id = vm.id;
    return {
      kind: 'call',
      then: ec2State('shutting-down'),
      run: () => afterInFlight(ctx, vm, () => vmCall(ctx).destroyVm({ id, requestId: '' }, ctx.call)),
    };
  }),
};

export const rebootInstances: Ec2Action = {
  role: 'vm-operator',
  mutating: true,
  readsWhileClaiming: true,
  async handle(ctx) {
    const instances = await namedStatuses(ctx, instanceIds(ctx));
    const notRunning = instances.find((i) => i.view.state.name !== 'running' || !i.vm);
    if (notRunning) throw incorrectState(notRunning, 'rebooted');
    await ctx.claimed;
    for (const i of instances)
      await vmCall(ctx)
        .rebootVm({ id: i.vm?.id ?? '', requestId: '', mode: clean }, ctx.call)
        .catch((e: unknown) => {
          throw ec2ErrorFromGrpc(
            e,
            {
              notFoundCode: 'InvalidInstanceID.NotFound',
              notFoundMessage: `The instance ID '${i.view.instanceId}' does not exist`,
            },
            ctx.site.logger,
          );
        });
    return [leaf('return', true)];
  },
};
