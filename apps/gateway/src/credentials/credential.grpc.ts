import { Metadata } from '@grpc/grpc-js';
import { Controller, Inject } from '@nestjs/common';
import { GrpcMethod } from '@nestjs/microservices';
import { gatewayV1 } from '@flotilla/contracts';
import { TokenAuth } from '../auth/token-auth';
import { roleToProto } from '../tenants/admin.service';
import { CredentialAdmin } from './credential-admin.service';
import { CredentialRow } from './credential.entity';

const kindToProto = {
  ec2: gatewayV1.CredentialKind.CREDENTIAL_KIND_EC2,
  openstack: gatewayV1.CredentialKind.CREDENTIAL_KIND_OPENSTACK,
} as const;

/** Never carries the secret: only CreateCredentialResponse.secret does, once. */
export const credentialToProto = (c: CredentialRow): gatewayV1.Credential => ({
  id: c.id,
  name: c.name,
  tenantId: c.tenantId,
  role: roleToProto(c.role),
  kind: kindToProto[c.kind],
  accessKeyId: c.accessKeyId ?? c.name,
  createdAt: c.createdAt,
  expiresAt: c.expiresAt ?? undefined,
  lastUsedAt: c.lastUsedAt ?? undefined,
  revoked: c.revoked,
});

@Controller()
export class CredentialGrpc implements gatewayV1.CredentialServiceController {
  constructor(
    @Inject(TokenAuth) private readonly auth: TokenAuth,
    @Inject(CredentialAdmin) private readonly admin: CredentialAdmin,
  ) {}

  @GrpcMethod('CredentialService', 'CreateCredential')
  async createCredential(
    req: gatewayV1.CreateCredentialRequest,
    md: Metadata,
  ): Promise<gatewayV1.CreateCredentialResponse> {
    const { credential, secret } = await this.admin.create(await this.auth.authenticate(md), req);
    return { credential: credentialToProto(credential), secret };
  }

  @GrpcMethod('CredentialService', 'ListCredentials')
  async listCredentials(
    req: gatewayV1.ListCredentialsRequest,
    md: Metadata,
  ): Promise<gatewayV1.ListCredentialsResponse> {
    const { credentials, nextPageToken } = await this.admin.list(await this.auth.authenticate(md), req.page);
    return { credentials: credentials.map(credentialToProto), nextPageToken };
  }

  @GrpcMethod('CredentialService', 'RevokeCredential')
  async revokeCredential(
    req: gatewayV1.RevokeCredentialRequest,
    md: Metadata,
  ): Promise<gatewayV1.RevokeCredentialResponse> {
    return {
      credential: credentialToProto(await this.admin.revoke(await this.auth.authenticate(md), req.id)),
    };
  }
}
