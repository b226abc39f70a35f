import { createHash } from 'node:crypto';
import { status } from '@grpc/grpc-js';
import { commonV1, computeV1, type storageV1 } from '@flotilla/contracts';
import { validateName } from '@flotilla/domain';
import { isGrpcStatus, quotedTable } from '@flotilla/platform';
import type { Ec2Action, Ec2Context } from '../context';
import { Ec2Error } from '../errors';
import { ec2ErrorFromGrpc } from '../grpc-errors';
import { accountIdOf, amiIdOf, checkAmiIds, newInstanceId, newReservationId } from '../ids';
import { instancesOfRows } from '../instance-directory';
import { InstanceMap, InstanceRecord } from '../instance-map';
import { ec2State } from '../instance-state';
import { reservationXml } from '../instance-view';
import { keyPairNotFound, KeyPairStore } from '../key-pair-store';
import {
  invalidValue,
  intParam,
  missing,
  optional,
  Params,
  required,
  structListParam,
  tagsParam,
} from '../params';
import { Ec2ClientTokenRow } from '../persistence';
import { checkTag, TagStore } from '../tag-store';

/** At most this many instances per RunInstances (each is one CreateVm). */
export const maxInstancesPerLaunch = 100;
/** EC2's limit on user data: 16 KiB before base64. */
const maxUserDataBytes = 16 * 1024;
/** How long RunInstances waits for its VMs to be placed before answering pending (capacity errors show then). */
const placementWaitMs = 5000;

/** Parameters that do not change what is launched (signature, token itself, dry run). */
const notLaunchParams =
  /^(Action|Version|ClientToken|DryRun|AWSAccessKeyId|Signature|SignatureVersion|SignatureMethod|Timestamp|Expires|X-Amz-.*)$/;

/** Hash of what a launch asks for: the same ClientToken with another hash is IdempotentParameterMismatch. */
export function launchParamsHash(params: Params): string {
  const kept = [...params]
    .filter(([k]) => !notLaunchParams.test(k))
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return createHash('sha256').update(JSON.stringify(kept)).digest('hex');
}

interface Launch {
  imageName: string;
  amiId: string;
  flavorId: string;
  minCount: number;
  maxCount: number;
  keyName: string | null;
  userData: string | null;
  clientToken: string | null;
  tags: Array<{ key: string; value: string }>;
}

async function parseLaunch(ctx: Ec2Context): Promise<Launch> {
  const p = ctx.params;
  const amiId = required(p, 'ImageId');
  checkAmiIds([amiId]);
  const minCount = intParam(p, 'MinCount', { min: 1, max: maxInstancesPerLaunch });
  const maxCount = intParam(p, 'MaxCount', { min: 1, max: maxInstancesPerLaunch });
  if (minCount === undefined) throw missing('MinCount');
  if (maxCount === undefined) throw missing('MaxCount');
  if (maxCount < minCount)
    throw new Ec2Error(
      'InvalidParameterValue',
      `MaxCount (${maxCount}) must be at least MinCount (${minCount})`,
    );
  const clientToken = optional(p, 'ClientToken') ?? null;
  if (clientToken && (clientToken.length > 64 || !/^[\x20-\x7e]+$/.test(clientToken)))
    throw invalidValue('ClientToken', clientToken, 'It must be at most 64 printable ASCII characters.');
  const userData = optional(p, 'UserData') ?? null;
  if (userData !== null) {
    const compact = userData.replace(/\s+/g, '');
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(compact) || compact.length % 4 === 1)
      throw new Ec2Error('InvalidParameterValue', 'Invalid BASE64 encoding of user data (UserData)');
    if (Buffer.from(compact, 'base64').length > maxUserDataBytes)
      throw new Ec2Error(
        'InvalidParameterValue',
        `User data (UserData) is limited to ${maxUserDataBytes} bytes`,
      );
  }
  const tags: Array<{ key: string; value: string }> = [];
  for (const spec of structListParam(p, 'TagSpecification')) {
    const type = spec.fields.get('ResourceType');
    if (type !== 'instance')
      throw new Ec2Error(
        'InvalidParameterValue',
        `${spec.name}.ResourceType '${type ?? ''}' is not supported: Flotilla tags instances only (use "instance")`,
      );
    for (const [i, t] of tagsParam(spec.fields, 'Tag').entries()) {
      checkTag(`${spec.name}.Tag.${i + 1}`, t.key, t.value ?? '');
      tags.push({ key: t.key, value: t.value ?? '' });
    }
  }

  const keyName = optional(p, 'KeyName') ?? null;
  const instanceType = optional(p, 'InstanceType') ?? 'm1.small';
  const isImage = (i: storageV1.Image) => amiIdOf(i.id) === amiId;
  const isFlavor = (f: computeV1.Flavor) => f.name === instanceType;
  const [keptImages, keptFlavors, keyPair] = await Promise.all([
    ctx.lookups.keptImages(),
    ctx.lookups.keptFlavors(),
    keyName ? new KeyPairStore(ctx.site.dataSource).find(ctx.principal.tenantId, keyName) : undefined,
  ]);
  // Not among the kept ones: perhaps made a moment ago. The pool's answer decides.
  const [image, flavor] = await Promise.all([
    keptImages.find(isImage) ?? ctx.lookups.allImages().then((all) => all.find(isImage)),
    keptFlavors.find(isFlavor) ?? ctx.lookups.allFlavors().then((all) => all.find(isFlavor)),
  ]);
  if (!image) throw new Ec2Error('InvalidAMIID.NotFound', `The image id '[${amiId}]' does not exist`);
  if (!flavor)
    throw new Ec2Error(
      'InvalidParameterValue',
      `Invalid value '${instanceType}' for InstanceType: DescribeInstanceTypes lists the types this cloud offers`,
    );
  if (keyName && !keyPair) throw keyPairNotFound(keyName);
  return {
    imageName: image.name,
    amiId,
    flavorId: flavor.id,
    minCount,
    maxCount,
    keyName,
    userData,
    clientToken,
    tags,
  };
}

/**
 * Claims the ClientToken for this launch. Returns the reservation id to use, and whether an earlier launch
 * claimed it (it may have launched already); an earlier launch with other parameters is
 * IdempotentParameterMismatch.
 */
async function claimClientToken(
  ctx: Ec2Context,
  launch: Launch,
): Promise<{ reservationId: string; claimedBefore: boolean }> {
  if (!launch.clientToken) return { reservationId: newReservationId(), claimedBefore: false };
  const tenantId = ctx.principal.tenantId;
  const paramsHash = launchParamsHash(ctx.params);
  const m = ctx.site.dataSource.manager;
  const reservationId = newReservationId(`${tenantId}:${launch.clientToken}`);
  const claimed: unknown[] = await m.query(
    `INSERT INTO ${quotedTable(m, Ec2ClientTokenRow)} (tenant_id, client_token, params_hash, reservation_id)
     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING reservation_id`,
    [tenantId, launch.clientToken, paramsHash, reservationId],
  );
  if (claimed.length) return { reservationId, claimedBefore: false };
  const row = await m.findOneByOrFail(Ec2ClientTokenRow, { tenantId, clientToken: launch.clientToken });
  if (row.paramsHash !== paramsHash)
    throw new Ec2Error(
      'IdempotentParameterMismatch',
      `The client token '${launch.clientToken}' was used before with different parameters: use a new ClientToken for a different launch`,
    );
  return { reservationId: row.reservationId, claimedBefore: true };
}

/**
 * RunInstances: one CreateVm (started) per instance, up to MaxCount as capacity allows, at least MinCount or
 * nothing. With a ClientToken every CreateVm carries a request_id derived from it, so a repeat (or a retry
 * after a crash midway) gets the same VMs from compute, never new ones.
 */
export const runInstances: Ec2Action = {
  role: 'vm-admin',
  mutating: true,
  readsWhileClaiming: true,
  async handle(ctx) {
    const launch = await parseLaunch(ctx);
    const tenantId = ctx.principal.tenantId;
    await ctx.claimed;
    const { reservationId, claimedBefore } = await claimClientToken(ctx, launch);
    const map = new InstanceMap(ctx.site.dataSource);
    const earlier = claimedBefore ? await map.byReservation(tenantId, reservationId) : [];
    // The launch's own instances only, not a listing of the tenant.
    const launched = earlier.length
      ? await instancesOfRows(ctx, earlier)
      : await launchVms(ctx, launch, reservationId).then(({ rows, started }) =>
          instancesOfRows(ctx, rows, {
            vms: started,
            // No tags asked for: none to read (tagged launches read theirs back, in the store's order).
            tags: launch.tags.length ? undefined : new Map(),
          }),
        );
    const views = launched.map((i) => i.view).sort((a, b) => (a.instanceId < b.instanceId ? -1 : 1));
    // A launch answers pending for the instances it started: their boot is in progress or just done.
    if (!earlier.length) for (const v of views) if (v.state.name === 'running') v.state = ec2State('pending');
    return reservationXml(reservationId, accountIdOf(tenantId), views);
  },
};

/**
 * Launches the instances; returns the rows of those kept, in launch order, and the VMs whose start is known
 * to have succeeded (running as of now: no need to read them again).
 */
async function launchVms(
  ctx: Ec2Context,
  launch: Launch,
  reservationId: string,
): Promise<{ rows: InstanceRecord[]; started: Map<string, computeV1.Vm> }> {
  const tenantId = ctx.principal.tenantId;
  const map = new InstanceMap(ctx.site.dataSource);
  const seed = launch.clientToken
    ? createHash('sha256').update(`${tenantId}:${launch.clientToken}`).digest('hex')
    : ctx.requestId;
  const nameTag = launch.tags.find((t) => t.key === 'Name')?.value;
  const launched: Array<{
    vm: computeV1.Vm;
    operation: commonV1.Operation | undefined;
    instanceId: string;
    record: InstanceRecord;
    settled: Promise<commonV1.Operation | undefined>;
  }> = [];
  let stoppedBy: unknown;
  for (let i = 0; i < launch.maxCount; i++) {
    const instanceId = newInstanceId(launch.clientToken ? `${seed}:${i}` : undefined);
    const name = launch.maxCount === 1 && nameTag && isVmName(nameTag) ? nameTag : instanceId;
    try {
      const created = await createVm(ctx, launch, {
        name,
        fallbackName: instanceId,
        requestId: `ec2:${seed}:${i}`,
      });
      // Placement proceeds while the row is written: the wait starts now.
      const settled = settle(ctx, created.operation);
      const record = await map.record({
        instanceId,
        vmId: created.vm.id,
        tenantId,
        reservationId,
        launchIndex: i,
        imageId: launch.amiId,
        instanceType: null,
        keyName: launch.keyName,
        userData: launch.userData,
        clientToken: launch.clientToken,
        launchTime: new Date(),
      });
      launched.push({ ...created, instanceId, record, settled });
    } catch (e) {
      stoppedBy = e;
      break;
    }
  }
  if (
    stoppedBy !== undefined &&
    !(launched.length >= launch.minCount && isGrpcStatus(stoppedBy, status.RESOURCE_EXHAUSTED))
  ) {
    await destroy(
      ctx,
      launched.map((l) => l.vm.id),
    );
    throw ec2ErrorFromGrpc(
      stoppedBy,
      {
        notFoundCode: 'InvalidParameterValue',
        notFoundMessage: launchNotFound(stoppedBy),
        parameter: 'InstanceType',
      },
      ctx.site.logger,
    );
  }
  // Placement happens in each VM's operation: the ones no host could take are given back.
  const outcomes = await Promise.all(launched.map((l) => l.settled));
  const unplaced = launched.filter((_, i) => outcomes[i]?.error?.code === status.RESOURCE_EXHAUSTED);
  if (unplaced.length) {
    const placed = launched.length - unplaced.length;
    const giveBack = placed >= launch.minCount ? unplaced : launched;
    await destroy(
      ctx,
      giveBack.map((l) => l.vm.id),
    );
    if (placed < launch.minCount) {
      const why = outcomes.find((o) => o?.error?.code === status.RESOURCE_EXHAUSTED)?.error?.message ?? '';
      throw new Ec2Error(
        'InsufficientInstanceCapacity',
        `There is not enough capacity for ${launch.minCount} instance(s) of this type (${placed} could be placed): ${why}`,
        500,
      );
    }
  }
  const kept = launched.filter((l) => !unplaced.includes(l));
  if (launch.tags.length)
    await new TagStore(ctx.site.dataSource).put(
      tenantId,
      kept.map((l) => l.instanceId),
      launch.tags,
    );
  const started = new Map<string, computeV1.Vm>();
  for (const [i, l] of launched.entries())
    if (outcomes[i]?.state === commonV1.OperationState.OPERATION_STATE_SUCCEEDED)
      started.set(l.vm.id, {
        ...l.vm,
        powerState: computeV1.PowerState.POWER_STATE_RUNNING,
        powerStateReason: '',
        currentOperationId: '',
      });
  return { rows: kept.map((l) => l.record), started };
}

function launchNotFound(e: unknown): string {
  return `A resource of this launch does not exist: ${(e as Error)?.message ?? ''}`;
}

function isVmName(name: string): boolean {
  try {
    validateName('name', name);
    return true;
  } catch {
    return false;
  }
}

async function createVm(
  ctx: Ec2Context,
  launch: Launch,
  o: { name: string; fallbackName: string; requestId: string },
): Promise<{ vm: computeV1.Vm; operation: commonV1.Operation | undefined }> {
  const request = (name: string): computeV1.CreateVmRequest => ({
    requestId: o.requestId,
    name,
    labels: {},
    flavorId: launch.flavorId,
    vcpus: 0,
    memoryMib: 0,
    boot: { image: launch.imageName, kernel: '', initrd: '', cmdline: '' },
    antiAffinityGroup: '',
    requiredHostLabels: {},
    start: true,
    nics: [],
    rootDiskSizeBytes: 0,
    rootDiskSr: '',
  });
  const create = async (name: string) => {
    const { vm, operation } = await ctx.site.pool.vms.call.createVm(request(name), ctx.call);
    if (!vm) throw new Error('CreateVm answered without a VM');
    return { vm, operation };
  };
  try {
    return await create(o.name);
  } catch (e) {
    // The Name tag is a name another VM of the tenant has: the VM is named after its instance id instead.
    if (o.name === o.fallbackName || !isGrpcStatus(e, status.ALREADY_EXISTS)) throw e;
    return create(o.fallbackName);
  }
}

/** Waits (bounded) for a create operation; undefined when it is still running after the wait. */
async function settle(
  ctx: Ec2Context,
  operation: commonV1.Operation | undefined,
): Promise<commonV1.Operation | undefined> {
  if (!operation) return undefined;
  try {
    const { operation: op } = await ctx.site.pool.computeOperations.call.waitOperation(
      { id: operation.id, timeoutMs: placementWaitMs },
      { ...ctx.call, deadlineMs: placementWaitMs + 5000 },
    );
    return op;
  } catch {
    return undefined;
  }
}

async function destroy(ctx: Ec2Context, vmIds: string[]): Promise<void> {
  for (const id of vmIds)
    await ctx.site.pool.vms.call
      .destroyVm({ id, requestId: '' }, ctx.call)
      .catch((e: unknown) =>
        ctx.site.logger.warn(
          { vmId: id, err: e },
          'EC2 RunInstances: could not give back a VM of a failed launch',
        ),
      );
  await new InstanceMap(ctx.site.dataSource).forget(vmIds);
}
