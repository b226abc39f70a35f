import type { Ec2Action } from '../context';
import { Ec2Error } from '../errors';
import { compileFilters } from '../filters';
import { keyPairNotFound, KeyPairStore } from '../key-pair-store';
import { booleanParam, filtersParam, listParam, optional, required } from '../params';
import type { Ec2KeyPairRow } from '../persistence';
import { parseSshPublicKey } from '../ssh-public-key';
import { ec2Time, items, leaf } from '../xml';

const keyFields: Record<string, (k: Ec2KeyPairRow) => string[]> = {
  'key-name': (k) => [k.keyName],
  'key-pair-id': (k) => [k.keyPairId],
  fingerprint: (k) => [k.fingerprint],
  'key-type': (k) => [k.keyType],
};

export const describeKeyPairs: Ec2Action = {
  role: 'read-only',
  mutating: false,
  async handle(ctx) {
    const names = listParam(ctx.params, 'KeyName');
    const ids = listParam(ctx.params, 'KeyPairId');
    const withPublicKey = booleanParam(ctx.params, 'IncludePublicKey');
    const matches = compileFilters<Ec2KeyPairRow>(
      filtersParam(ctx.params),
      (name) => Object.hasOwn(keyFields, name),
      (k, name) => keyFields[name](k),
    );
    const all = await new KeyPairStore(ctx.site.dataSource).list(ctx.principal.tenantId);
    const missingName = names.find((n) => !all.some((k) => k.keyName === n));
    if (missingName) throw keyPairNotFound(missingName);
    const missingId = ids.find((id) => !all.some((k) => k.keyPairId === id));
    if (missingId)
      throw new Ec2Error('InvalidKeyPair.NotFound', `The key pair ID '${missingId}' does not exist`);
    const shown = all
      .filter(
        (k) => (!names.length || names.includes(k.keyName)) && (!ids.length || ids.includes(k.keyPairId)),
      )
      .filter(matches);
    return [
      items(
        'keySet',
        shown.map((k) => [
          leaf('keyPairId', k.keyPairId),
          leaf('keyFingerprint', k.fingerprint),
          leaf('keyName', k.keyName),
          leaf('keyType', k.keyType),
          withPublicKey ? leaf('publicKey', k.publicKey) : undefined,
          leaf('createTime', ec2Time(k.createdAt)),
        ]),
      ),
    ];
  },
};

export const importKeyPair: Ec2Action = {
  role: 'vm-admin',
  mutating: true,
  async handle(ctx) {
    const keyName = required(ctx.params, 'KeyName');
    if (keyName.length > 255 || !/^[\x20-\x7e]+$/.test(keyName))
      throw new Ec2Error('InvalidParameterValue', 'KeyName must be 1 to 255 printable ASCII characters');
    const material = required(ctx.params, 'PublicKeyMaterial');
    const key = parseSshPublicKey(Buffer.from(material, 'base64').toString('utf8'));
    if (!key)
      throw new Ec2Error(
        'InvalidKey.Format',
        'PublicKeyMaterial must be the base64 of an OpenSSH public key line: ssh-rsa (at least 1024 bits) or ssh-ed25519',
      );
    const row = await new KeyPairStore(ctx.site.dataSource).add(ctx.principal.tenantId, keyName, key);
    return [
      leaf('keyFingerprint', row.fingerprint),
      leaf('keyName', row.keyName),
      leaf('keyPairId', row.keyPairId),
    ];
  },
};

export const deleteKeyPair: Ec2Action = {
  role: 'vm-admin',
  mutating: true,
  async handle(ctx) {
    const keyName = optional(ctx.params, 'KeyName');
    const keyPairId = optional(ctx.params, 'KeyPairId');
    if (!keyName && !keyPairId) required(ctx.params, 'KeyName');
    const removed = await new KeyPairStore(ctx.site.dataSource).remove(ctx.principal.tenantId, {
      keyName,
      keyPairId,
    });
    return [leaf('return', true), leaf('keyPairId', removed)];
  },
};
