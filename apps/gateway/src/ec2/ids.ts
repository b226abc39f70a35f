import { createHash, randomBytes } from 'node:crypto';
import { Ec2Error } from './errors';

/**
 * EC2 resource ids for Flotilla resources. Images and VMs seen first through another API get ids derived
 * from their Flotilla id (the same on every gateway); the gateway's instance map records which VM an
 * instance id names. Ids never leave the EC2 front as anything else.
 */

const hex17 = (seed: string) => createHash('sha256').update(seed).digest('hex').slice(0, 17);

// Every listing maps each VM's image to its AMI id: a hash per VM otherwise. Bounded: ids are few but unbounded.
const amiIds = new Map<string, string>();
const amiIdCacheSize = 10_000;

export function amiIdOf(imageId: string): string {
  let id = amiIds.get(imageId);
  if (id === undefined) {
    id = `ami-${hex17(`image:${imageId}`)}`;
    if (amiIds.size >= amiIdCacheSize) amiIds.clear();
    amiIds.set(imageId, id);
  }
  return id;
}

export function derivedInstanceIdOf(vmId: string): string {
  return `i-${hex17(`vm:${vmId}`)}`;
}

/** An instance id chosen before its VM exists (the VM is named after it); deterministic from a seed when given. */
export function newInstanceId(seed?: string): string {
  return `i-${seed ? hex17(`launch:${seed}`) : randomBytes(9).toString('hex').slice(0, 17)}`;
}

export function newReservationId(seed?: string): string {
  return `r-${seed ? hex17(`reservation:${seed}`) : randomBytes(9).toString('hex').slice(0, 17)}`;
}

export function keyPairIdOf(tenantId: string, keyName: string): string {
  return `key-${hex17(`key:${tenantId}:${keyName}`)}`;
}

/** The 12-digit EC2 account id (ownerId) of a tenant. */
export function accountIdOf(tenantId: string): string {
  const n = BigInt(`0x${createHash('sha256').update(`account:${tenantId}`).digest('hex').slice(0, 15)}`);
  return (n % 10n ** 12n).toString().padStart(12, '0');
}

/** Owner id of public catalogue images (alias "amazon": the operator's images). */
export const publicImageOwnerId = '000000000000';

const instanceIdPattern = /^i-(?:[0-9a-f]{8}|[0-9a-f]{17})$/;
const amiIdPattern = /^ami-(?:[0-9a-f]{8}|[0-9a-f]{17})$/;

export function isInstanceId(id: string): boolean {
  return instanceIdPattern.test(id);
}

export function isAmiId(id: string): boolean {
  return amiIdPattern.test(id);
}

export function checkInstanceIds(ids: string[]): void {
  const bad = ids.filter((id) => !isInstanceId(id));
  if (bad.length)
    throw new Ec2Error(
      'InvalidInstanceID.Malformed',
      `Invalid id: "${bad[0].slice(0, 100)}" (expecting "i-" followed by 8 or 17 lowercase hex digits)`,
    );
}

export function checkAmiIds(ids: string[]): void {
  const bad = ids.filter((id) => !isAmiId(id));
  if (bad.length)
    throw new Ec2Error(
      'InvalidAMIID.Malformed',
      `Invalid id: "${bad[0].slice(0, 100)}" (expecting "ami-" followed by 8 or 17 lowercase hex digits)`,
    );
}

export function instancesNotFound(ids: string[]): Ec2Error {
  return new Ec2Error(
    'InvalidInstanceID.NotFound',
    ids.length === 1
      ? `The instance ID '${ids[0]}' does not exist`
      : `The instance IDs '${ids.join(', ')}' do not exist`,
  );
}
