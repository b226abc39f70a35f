import { Command } from 'commander';
import { randomUUID } from 'node:crypto';
import { gatewayV1 } from '@flotilla/contracts';
import { collectKeyValues, intInRange } from '../args';
import { action, type CommandContext } from '../context';
import { CliError, ExitCode } from '../errors';
import { age, enumValue, labels, timestamp, word } from '../format';
import { listWith, noteMore, withListOptions, type ListOptions } from './list-options';

const { Role } = gatewayV1;
const roleValues = Object.values(Role).filter((r) => r !== Role.ROLE_UNSPECIFIED && r !== Role.UNRECOGNIZED);
const roleWords = roleValues.map((r) => word(r, 'ROLE_'));
const role = (r: gatewayV1.Role): string => word(r, 'ROLE_');

export function tenantCommand(): Command {
  const tenant = new Command('tenant').description('tenants: who owns VMs (pool-admin only)');
  tenant
    .command('create')
    .description('create a tenant')
    .argument('<name>', "1..63 lowercase letters, digits and '-'")
    .option('--description <text>', 'what the tenant is for')
    .option('--label <key=value>', 'label the tenant (repeatable)', collectKeyValues)
    .option(
      '--request-id <id>',
      'idempotency key: repeating with the same id returns the first tenant (default: a new random id)',
    )
    .action(action(createTenant));
  withListOptions(tenant.command('list').description('list tenants'), 'fields: name').action(
    action(listTenants),
  );
  tenant
    .command('show')
    .description('show one tenant')
    .argument('<tenant>', 'tenant id or name')
    .action(action(showTenant));
  tenant
    .command('delete')
    .description('delete a tenant that owns no VMs, revoking its tokens')
    .argument('<tenant>', 'tenant id or name')
    .action(action(deleteTenant));
  return tenant;
}

export function tokenCommand(): Command {
  const token = new Command('token').description("API tokens (pool-admin manages every tenant's)");
  token
    .command('create')
    .description('create a bearer token for a tenant; the secret is printed once and cannot be shown again')
    .requiredOption('--tenant <tenant>', 'tenant id or name')
    .requiredOption('--role <role>', `one of ${roleWords.join(', ')}`)
    .option('--name <name>', 'a name to recognise the token by')
    .option(
      '--ttl-seconds <s>',
      'expire after this many seconds, at most 31622400 (default: never)',
      intInRange(1, 31_622_400),
    )
    .option('--request-id <id>', 'idempotency key (default: a new random id)')
    .action(action(createToken));
  withListOptions(
    token.command('list').description('list tokens (never their secrets)'),
    'fields: tenant_id, role',
  ).action(action(listTokens));
  token
    .command('revoke')
    .description('revoke a token: new calls with it fail at once')
    .argument('<id>', 'token id (see `flotilla token list`)')
    .action(action(revokeToken));
  return token;
}

/** tenant, token and whoami. */
export function adminCommands(): Command[] {
  return [tenantCommand(), tokenCommand(), whoamiCommand()];
}

export function whoamiCommand(): Command {
  return new Command('whoami')
    .description('show the tenant and role of the token in use')
    .action(action(whoami));
}

async function createTenant(
  ctx: CommandContext,
  name: string,
  o: { description?: string; label?: Record<string, string>; requestId?: string },
): Promise<void> {
  const res = await ctx.cloud().tenants.call.createTenant({
    requestId: o.requestId ?? `cli-${randomUUID()}`,
    name,
    description: o.description ?? '',
    labels: o.label ?? {},
  });
  if (ctx.out.json) return ctx.out.printJson(res);
  ctx.out.line(`tenant ${res.tenant?.name} created (${res.tenant?.id})`);
}

async function listTenants(ctx: CommandContext, o: ListOptions): Promise<void> {
  const cloud = ctx.cloud();
  const page = await listWith(o, async (p) => {
    const res = await cloud.tenants.call.listTenants({ page: p });
    return { items: res.tenants, nextPageToken: res.nextPageToken };
  });
  if (ctx.out.json) return ctx.out.printJson({ tenants: page.items, nextPageToken: page.nextPageToken });
  ctx.out.table(
    ['NAME', 'ID', 'DESCRIPTION', 'LABELS', 'AGE'],
    page.items.map((t) => [t.name, t.id, t.description, labels(t.labels), age(t.createdAt)]),
    'no tenants',
  );
  noteMore(ctx.out, page);
}

async function showTenant(ctx: CommandContext, ref: string): Promise<void> {
  const { tenant } = await ctx.cloud().tenants.call.getTenant({ id: ref });
  if (ctx.out.json) return ctx.out.printJson({ tenant });
  if (!tenant) return;
  ctx.out.details([
    ['name', tenant.name],
    ['id', tenant.id],
    ['description', tenant.description],
    ['labels', labels(tenant.labels)],
    ['created', timestamp(tenant.createdAt)],
    ['updated', timestamp(tenant.updatedAt)],
    ['etag', tenant.etag],
  ]);
}

async function deleteTenant(ctx: CommandContext, ref: string): Promise<void> {
  const res = await ctx.cloud().tenants.call.deleteTenant({ id: ref });
  if (ctx.out.json) return ctx.out.printJson(res);
  ctx.out.line(`tenant ${ref} deleted`);
}

async function createToken(
  ctx: CommandContext,
  o: { tenant: string; role: string; name?: string; ttlSeconds?: number; requestId?: string },
): Promise<void> {
  const wanted = enumValue(o.role, 'ROLE_', roleValues);
  if (!wanted)
    throw new CliError(`unknown role "${o.role}": use one of ${roleWords.join(', ')}`, ExitCode.Usage);
  const res = await ctx.cloud().tokens.call.createToken({
    requestId: o.requestId ?? `cli-${randomUUID()}`,
    name: o.name ?? '',
    tenantId: o.tenant,
    role: wanted,
    ttlSeconds: o.ttlSeconds ?? 0,
  });
  if (ctx.out.json) return ctx.out.printJson(res);
  const t = res.token;
  ctx.out.note(
    `token ${t?.id} created for tenant ${o.tenant} with role ${t ? role(t.role) : o.role}` +
      (t?.expiresAt ? `, expiring ${timestamp(t.expiresAt)}` : ''),
  );
  ctx.out.note(
    'the secret below is shown only this once: store it now (use it with --token or FLOTILLA_TOKEN)',
  );
  ctx.out.line(res.secret);
}

async function listTokens(ctx: CommandContext, o: ListOptions): Promise<void> {
  const cloud = ctx.cloud();
  const page = await listWith(o, async (p) => {
    const res = await cloud.tokens.call.listTokens({ page: p });
    return { items: res.tokens, nextPageToken: res.nextPageToken };
  });
  if (ctx.out.json) return ctx.out.printJson({ tokens: page.items, nextPageToken: page.nextPageToken });
  ctx.out.table(
    ['ID', 'NAME', 'TENANT', 'ROLE', 'PREFIX', 'CREATED', 'EXPIRES', 'LAST USED', 'REVOKED'],
    page.items.map((t) => [
      t.id,
      t.name,
      t.tenantId,
      role(t.role),
      t.prefix,
      timestamp(t.createdAt),
      timestamp(t.expiresAt) || 'never',
      age(t.lastUsedAt) ? `${age(t.lastUsedAt)} ago` : '',
      t.revoked ? 'yes' : '',
    ]),
    'no tokens',
  );
  noteMore(ctx.out, page);
}

async function revokeToken(ctx: CommandContext, id: string): Promise<void> {
  const res = await ctx.cloud().tokens.call.revokeToken({ id });
  if (ctx.out.json) return ctx.out.printJson(res);
  ctx.out.line(`token ${res.token?.id ?? id} revoked`);
}

async function whoami(ctx: CommandContext): Promise<void> {
  const res = await ctx.cloud().tokens.call.whoAmI({});
  if (ctx.out.json) return ctx.out.printJson(res);
  const t = res.token;
  const c = ctx.connection();
  ctx.out.details([
    ['tenant', `${res.tenantName} ${t?.tenantId ?? ''}`.trim()],
    ['role', t ? role(t.role) : ''],
    ['token', t ? `${t.name ? `${t.name} ` : ''}${t.id} (${t.prefix}…)` : ''],
    ['expires', t?.expiresAt ? timestamp(t.expiresAt) : 'never'],
    ['endpoint', c.endpoint],
    ['profile', c.profile],
  ]);
}
