import type { Principal } from '../auth/token-auth';

/**
 * What the compatibility fronts ask of credentials (apps/gateway/src/credentials implements it over the
 * gateway's database, with a short cache). A revoked or expired credential is unknown to every method.
 */
export interface CredentialStore {
  /** EC2: the secret access key and principal of an access key id; undefined when unknown. */
  ec2Secret(accessKeyId: string): Promise<{ secret: string; principal: Principal } | undefined>;
  /**
   * OpenStack/Keystone: checks a user name and password (or Rackspace API key, the same secret) in constant
   * time per candidate; undefined when they do not match a live credential.
   */
  checkPassword(userName: string, password: string): Promise<OpenStackIdentity | undefined>;
  /** A credential still live (not revoked, not expired): for validating Keystone tokens issued from it. */
  identityOf(credentialId: string): Promise<OpenStackIdentity | undefined>;
}

export interface OpenStackIdentity {
  principal: Principal;
  credentialId: string;
  userName: string;
  tenantName: string;
}
