import { Metadata } from '@grpc/grpc-js';
import { Controller, Inject } from '@nestjs/common';
import { GrpcMethod } from '@nestjs/microservices';
import { gatewayV1 } from '@flotilla/contracts';
import { TokenAuth } from '../auth/token-auth';
import { TenantRow, TokenRow } from '../persistence';
import { AdminService, roleToProto } from './admin.service';

const tenantToProto = (t: TenantRow): gatewayV1.Tenant => ({
  id: t.id,
  name: t.name,
  description: t.description,
  labels: t.labels,
  createdAt: t.createdAt,
  updatedAt: t.updatedAt,
  etag: String(t.version),
});

const tokenToProto = (t: TokenRow): gatewayV1.ApiToken => ({
  id: t.id,
  name: t.name,
  tenantId: t.tenantId,
  role: roleToProto(t.role),
  createdAt: t.createdAt,
  expiresAt: t.expiresAt ?? undefined,
  lastUsedAt: t.lastUsedAt ?? undefined,
  revoked: t.revoked,
  prefix: t.prefix,
});

@Controller()
export class TenantGrpc implements gatewayV1.TenantServiceController {
  constructor(
    @Inject(TokenAuth) private readonly auth: TokenAuth,
    @Inject(AdminService) private readonly admin: AdminService,
  ) {}

  @GrpcMethod('TenantService', 'CreateTenant')
  async createTenant(
    req: gatewayV1.CreateTenantRequest,
    md: Metadata,
  ): Promise<gatewayV1.CreateTenantResponse> {
    return { tenant: tenantToProto(await this.admin.createTenant(await this.auth.authenticate(md), req)) };
  }

  @GrpcMethod('TenantService', 'GetTenant')
  async getTenant(req: gatewayV1.GetTenantRequest, md: Metadata): Promise<gatewayV1.GetTenantResponse> {
    return { tenant: tenantToProto(await this.admin.getTenant(await this.auth.authenticate(md), req.id)) };
  }

  @GrpcMethod('TenantService', 'ListTenants')
  async listTenants(req: gatewayV1.ListTenantsRequest, md: Metadata): Promise<gatewayV1.ListTenantsResponse> {
    const { tenants, nextPageToken } = await this.admin.listTenants(
      await this.auth.authenticate(md),
      req.page,
    );
    return { tenants: tenants.map(tenantToProto), nextPageToken };
  }

  @GrpcMethod('TenantService', 'DeleteTenant')
  async deleteTenant(
    req: gatewayV1.DeleteTenantRequest,
    md: Metadata,
  ): Promise<gatewayV1.DeleteTenantResponse> {
    await this.admin.deleteTenant(await this.auth.authenticate(md), req.id);
    return {};
  }
}

@Controller()
export class TokenGrpc implements gatewayV1.TokenServiceController {
  constructor(
    @Inject(TokenAuth) private readonly auth: TokenAuth,
    @Inject(AdminService) private readonly admin: AdminService,
  ) {}

  @GrpcMethod('TokenService', 'CreateToken')
  async createToken(req: gatewayV1.CreateTokenRequest, md: Metadata): Promise<gatewayV1.CreateTokenResponse> {
    const { token, secret } = await this.admin.createToken(await this.auth.authenticate(md), req);
    return { token: tokenToProto(token), secret };
  }

  @GrpcMethod('TokenService', 'ListTokens')
  async listTokens(req: gatewayV1.ListTokensRequest, md: Metadata): Promise<gatewayV1.ListTokensResponse> {
    const { tokens, nextPageToken } = await this.admin.listTokens(await this.auth.authenticate(md), req.page);
    return { tokens: tokens.map(tokenToProto), nextPageToken };
  }

  @GrpcMethod('TokenService', 'RevokeToken')
  async revokeToken(req: gatewayV1.RevokeTokenRequest, md: Metadata): Promise<gatewayV1.RevokeTokenResponse> {
    return { token: tokenToProto(await this.admin.revokeToken(await this.auth.authenticate(md), req.id)) };
  }

  @GrpcMethod('TokenService', 'WhoAmI')
  async whoAmI(_req: gatewayV1.WhoAmIRequest, md: Metadata): Promise<gatewayV1.WhoAmIResponse> {
    const { token, tenantName } = await this.admin.whoAmI(await this.auth.authenticate(md));
    return { token: tokenToProto(token), tenantName };
  }
}
