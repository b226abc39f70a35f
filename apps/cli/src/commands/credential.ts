import { Command, Option } from 'commander';
import { randomUUID } from 'node:crypto';
import { gatewayV1 } from '@flotilla/contracts';
import { intInRange, looksLikeId } from '../args';
import { action, type CommandContext } from '../context';
import { CliError, ExitCode } from '../errors';
import { configPath, readConfig } from '../profile';
import { age, enumValue, timestamp, word } from '../format';
import { listWith, noteMore, withListOptions, type ListOptions } from './list-options';

const { CredentialKind, Role } = gatewayV1;
const roleValues = Object.values(Role).filter((r) => r !== Role.ROLE_UNSPECIFIED && r !== Role.UNRECOGNIZED);
const roleWords = roleValues.map((r) => word(r, 'ROLE_'));
const role = (r: gatewayV1.Role): string => word(r, 'ROLE_');
const kind = (k: gatewayV1.CredentialKind): string => word(k, 'CREDENTIAL_KIND_');

/** Where the compatibility fronts listen by default (the gateway's FLOTILLA_EC2_ADDRESS and FLOTILLA_OPENSTACK_ADDRESS). */
const defaultEc2Port = 8773;
const defaultOpenStackPort = 8774;
const defaultRegion = 'RegionOne';

export function credentialCommand(): Command {
  const credential = new Command('credential').description(
    "credentials for the EC2 and OpenStack APIs: access key pairs and passwords (pool-admin manages every tenant's)",
  );
  credential
    .command('create')
    .description(
      'create an EC2 access key pair or an OpenStack user and password for a tenant; the secret is printed once and cannot be shown again',
    )
    .addOption(new Option('--ec2', 'an EC2 access key pair (aws-cli, AWS SDKs)').conflicts('openstack'))
    .addOption(new Option('--openstack', 'an OpenStack user and password (openstack CLI, Keystone)'))
    .requiredOption('--tenant <tenant>', 'tenant id or name')
    .requiredOption('--role <role>', `one of ${roleWords.join(', ')}`)
    .option(
      '--name <name>',
      "1..63 letters, digits, '-', '_', '.', '@': the OpenStack user name (default: generated; EC2: the access key id)",
    )
    .option(
      '--ttl-seconds <s>',
      'expire after this many seconds, at most 31622400 (default: never)',
      intInRange(1, 31_622_400),
    )
    .option('--request-id <id>', 'idempotency key (default: a new random id)')
    .action(action(createCredential));
  withListOptions(
    credential.command('list').description('list credentials (never their secrets)'),
    'fields: tenant_id, kind (ec2, openstack)',
  ).action(action(listCredentials));
  credential
    .command('revoke')
    .description('revoke a credential: new requests with it fail at once')
    .argument('<id>', 'credential id or EC2 access key id (see `flotilla credential list`)')
    .action(action(revokeCredential));
  return credential;
}

interface CreateOptions {
  ec2?: boolean;
  openstack?: boolean;
  tenant: string;
  role: string;
  name?: string;
  ttlSeconds?: number;
  requestId?: string;
}

async function createCredential(ctx: CommandContext, o: CreateOptions): Promise<void> {
  if (!o.ec2 && !o.openstack)
    throw new CliError(
      'say which credential: --ec2 (an access key pair for the EC2 API) or --openstack (a user and password for Keystone)',
      ExitCode.Usage,
    );
  const wanted = enumValue(o.role, 'ROLE_', roleValues);
  if (!wanted)
    throw new CliError(`unknown role "${o.role}": use one of ${roleWords.join(', ')}`, ExitCode.Usage);
  const cloud = ctx.cloud();
  const res = await cloud.credentials.call.createCredential({
    requestId: o.requestId ?? `cli-${randomUUID()}`,
    name: o.name ?? '',
    tenantId: o.tenant,
    role: wanted,
    kind: o.ec2 ? CredentialKind.CREDENTIAL_KIND_EC2 : CredentialKind.CREDENTIAL_KIND_OPENSTACK,
    ttlSeconds: o.ttlSeconds ?? 0,
  });
  if (ctx.out.json) return ctx.out.printJson(res);
  const c = res.credential;
  const urls = frontUrls(ctx);
  const what = o.ec2 ? `EC2 access key ${c?.accessKeyId}` : `OpenStack user ${c?.name}`;
  ctx.out.note(
    `${what} (credential ${c?.id}) created for tenant ${o.tenant} with role ${c ? role(c.role) : o.role}` +
      (c?.expiresAt ? `, expiring ${timestamp(c.expiresAt)}` : ''),
  );
  ctx.out.note('the secret below is shown only this once: store it now');
  if (o.ec2) {
    ctx.out.line(`export AWS_ACCESS_KEY_ID=${c?.accessKeyId}`);
    ctx.out.line(`export AWS_SECRET_ACCESS_KEY=${res.secret}`);
    ctx.out.note(
      `then: aws ec2 describe-instances --endpoint-url ${urls.ec2} --region ${defaultRegion}` +
        ` (${urls.where}; see docs/compat.md)`,
    );
    return;
  }
  // Keystone's project is the tenant, by name.
  const project = looksLikeId(o.tenant)
    ? ((await cloud.tenants.call.getTenant({ id: o.tenant })).tenant?.name ?? o.tenant)
    : o.tenant;
  ctx.out.line(`export OS_USERNAME=${c?.name}`);
  ctx.out.line(`export OS_PASSWORD=${res.secret}`);
  ctx.out.line(`export OS_PROJECT_NAME=${project}`);
  ctx.out.line('export OS_USER_DOMAIN_NAME=Default');
  ctx.out.line('export OS_PROJECT_DOMAIN_NAME=Default');
  ctx.out.note(
    `then: export OS_AUTH_URL=${urls.openstack}/identity/v3 OS_IDENTITY_API_VERSION=3 ` +
      `OS_REGION_NAME=${defaultRegion} (${urls.where}; see docs/compat.md)`,
  );
}

async function listCredentials(ctx: CommandContext, o: ListOptions): Promise<void> {
  const cloud = ctx.cloud();
  const page = await listWith(o, async (p) => {
    const res = await cloud.credentials.call.listCredentials({ page: p });
    return { items: res.credentials, nextPageToken: res.nextPageToken };
  });
  if (ctx.out.json) return ctx.out.printJson({ credentials: page.items, nextPageToken: page.nextPageToken });
  ctx.out.table(
    ['ID', 'KIND', 'NAME', 'ACCESS KEY', 'TENANT', 'ROLE', 'CREATED', 'EXPIRES', 'LAST USED', 'REVOKED'],
    page.items.map((c) => [
      c.id,
      kind(c.kind),
      c.name,
      c.kind === CredentialKind.CREDENTIAL_KIND_EC2 ? c.accessKeyId : '',
      c.tenantId,
      role(c.role),
      timestamp(c.createdAt),
      timestamp(c.expiresAt) || 'never',
      age(c.lastUsedAt) ? `${age(c.lastUsedAt)} ago` : '',
      c.revoked ? 'yes' : '',
    ]),
    'no credentials',
  );
  noteMore(ctx.out, page);
}

async function revokeCredential(ctx: CommandContext, id: string): Promise<void> {
  const res = await ctx.cloud().credentials.call.revokeCredential({ id });
  if (ctx.out.json) return ctx.out.printJson(res);
  const c = res.credential;
  ctx.out.line(`credential ${c?.id ?? id}${c ? ` (${kind(c.kind)} ${c.name})` : ''} revoked`);
}

/** The host of a gRPC endpoint ("h:7400", "[::1]:7400"): the fronts listen beside it. */
/** The fronts' URLs: those `flotilla up` wrote to the profile, else the defaults on the gateway's host. */
function frontUrls(ctx: CommandContext): { ec2: string; openstack: string; where: string } {
  const { endpoint, profile } = ctx.connection();
  const saved = profile ? readConfig(configPath()).profiles[profile] : undefined;
  if (saved?.ec2Url && saved.openstackUrl)
    return { ec2: saved.ec2Url, openstack: saved.openstackUrl, where: `the URLs of profile ${profile}` };
  const host = hostOf(endpoint);
  return {
    ec2: `http://${host}:${defaultEc2Port}`,
    openstack: `http://${host}:${defaultOpenStackPort}`,
    where: "the gateway's default ports and region",
  };
}

function hostOf(endpoint: string): string {
  const colon = endpoint.lastIndexOf(':');
  return colon > 0 && !endpoint.endsWith(']') ? endpoint.slice(0, colon) : endpoint;
}
