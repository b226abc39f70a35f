import { DataSource, In } from 'typeorm';
import { Ec2Error } from './errors';
import { keyPairIdOf } from './ids';
import { Ec2KeyPairRow } from './persistence';
import type { SshPublicKey } from './ssh-public-key';

export function keyPairNotFound(name: string): Ec2Error {
  return new Ec2Error('InvalidKeyPair.NotFound', `The key pair '${name}' does not exist`);
}

/** A tenant's imported key pairs (public halves only: Flotilla never holds a private key). */
export class KeyPairStore {
  constructor(private readonly dataSource: DataSource) {}

  find(tenantId: string, keyName: string): Promise<Ec2KeyPairRow | null> {
    return this.dataSource.manager.findOneBy(Ec2KeyPairRow, { tenantId, keyName });
  }

  list(tenantId: string): Promise<Ec2KeyPairRow[]> {
    return this.dataSource.manager.find(Ec2KeyPairRow, { where: { tenantId }, order: { keyName: 'ASC' } });
  }

  async add(tenantId: string, keyName: string, key: SshPublicKey): Promise<Ec2KeyPairRow> {
    try {
      await this.dataSource.manager.insert(Ec2KeyPairRow, {
        tenantId,
        keyName,
        keyPairId: keyPairIdOf(tenantId, keyName),
        keyType: key.keyType,
        fingerprint: key.fingerprint,
        publicKey: key.line,
      });
    } catch (e) {
      if (
        (e as { code?: string }).code === '23505' ||
        (e as { driverError?: { code?: string } }).driverError?.code === '23505'
      )
        throw new Ec2Error('InvalidKeyPair.Duplicate', `The keypair '${keyName}' already exists.`);
      throw e;
    }
    return this.dataSource.manager.findOneByOrFail(Ec2KeyPairRow, { tenantId, keyName });
  }

  /** Deletes by name or id; EC2 answers success for a key pair that does not exist. */
  async remove(tenantId: string, by: { keyName?: string; keyPairId?: string }): Promise<string | undefined> {
    const where = by.keyName
      ? { tenantId, keyName: by.keyName }
      : { tenantId, keyPairId: In([by.keyPairId]) };
    const row = await this.dataSource.manager.findOneBy(Ec2KeyPairRow, where);
    if (row) await this.dataSource.manager.delete(Ec2KeyPairRow, { tenantId, keyName: row.keyName });
    return row?.keyPairId;
  }
}
