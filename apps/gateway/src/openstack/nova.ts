import { commonV1, computeV1, storageV1 } from '@flotilla/contracts';
import { listAllFlavors, listAllImages, listAllVms } from '../compat/list-all';
import type { Catalogue } from '../compat/catalogue';
import type { PoolApi } from '../compat/pool-api';
import { OpenStackError, notFound } from './errors';
import { atLeast, format, maxMicroversion, Microversion, minMicroversion } from './microversion';
import {
  flavorDocument,
  LinkBase,
  novaImageDocument,
  novaTime,
  ServerContext,
  serverDocument,
  ServerFacts,
  serverState,
  serverStatuses,
  serverSummary,
} from './nova-documents';
import { runServerAction } from './nova-actions';
import { parseCreateServer } from './nova-create-request';
import { nameMatcher, nextHref, pageAfter, parseLimit } from './paging';
import { findImageByGlanceId, glanceIdOf, isTerminal } from './pool-lists';
import { AuthedCtx, isUuid, json, readJson, Reply } from './request';

const { PowerState: P } = computeV1;
const maxLimit = 1000;

export interface NovaOptions {
  pool: PoolApi;
  /** Flavors and images for server documents, kept while nothing changes them. */
  catalogue: Catalogue;
  publicUrl: string;
  zone: string;
}

/** A request under /compute/v2.1 or /compute/v2/{tenant}: the version path decides the link base. */
export interface NovaRequest {
  ctx: AuthedCtx;
  version: Microversion;
  links: LinkBase;
}

/**
 * Nova v2.1 over the pool: flavors from compute's FlavorService, servers from its VmService (no copy of
 * either is kept), images through the catalogue (the 2.1 image proxy, below 2.36).
 */
export class Nova {
  constructor(private readonly o: NovaOptions) {}

  private get root() {
    return `${this.o.publicUrl.replace(/\/+$/, '')}/compute`;
  }

  versionDoc(id: 'v2.0' | 'v2.1') {
    const v21 = id === 'v2.1';
    return {
      id,
      status: v21 ? 'CURRENT' : 'SUPPORTED',
      version: v21 ? format(maxMicroversion) : '',
      min_version: v21 ? format(minMicroversion) : '',
      updated: v21 ? '2013-07-23T11:33:21Z' : '2011-01-21T11:33:21Z',
      links: [{ rel: 'self', href: `${this.root}/${id === 'v2.1' ? 'v2.1' : 'v2'}/` }],
    };
  }

  versions() {
    return { versions: [this.versionDoc('v2.0'), this.versionDoc('v2.1')] };
  }

  async handle(r: NovaRequest): Promise<Reply> {
    const { ctx } = r;
    const [collection, id, sub, ...rest] = ctx.segments;
    const m = ctx.method === 'HEAD' ? 'GET' : ctx.method;
    const only = (method: string) => {
      if (m !== method) throw new OpenStackError(405, `${ctx.method} is not allowed on this resource.`);
    };
    if (collection === 'flavors') {
      only('GET');
      if (id === undefined || id === 'detail') return this.listFlavors(r, id === 'detail');
      if (sub === undefined) return this.showFlavor(r, id);
      if (sub === 'os-extra_specs') {
        await this.flavorById(r, id);
        if (rest.length === 0) return json(200, { extra_specs: {} });
        throw notFound(`Flavor ${id} has no extra spec with key ${rest.join('/')}.`);
      }
    }
    if (collection === 'servers') {
      if (id === undefined) {
        if (m === 'POST') return this.createServers(r);
        only('GET');
        return this.listServers(r, false);
      }
      if (id === 'detail' && sub === undefined) {
        only('GET');
        return this.listServers(r, true);
      }
      if (sub === undefined) {
        if (m === 'DELETE') return this.deleteServer(r, id);
        only('GET');
        return this.showServer(r, id);
      }
      if (sub === 'action' && rest.length === 0) {
        only('POST');
        return this.action(r, id);
      }
    }
    if (collection === 'images' && !atLeast(r.version, 36)) {
      only('GET');
      return this.imageProxy(r, id, sub);
    }
    if (collection === 'os-availability-zone' && (id === undefined || id === 'detail') && !sub) {
      only('GET');
      return json(200, {
        availabilityZoneInfo: [{ zoneName: this.o.zone, zoneState: { available: true }, hosts: null }],
      });
    }
    if (collection === 'os-keypairs' && id === undefined) {
      // No key pairs exist here (nothing would put one into a guest); importing one is not built.
      if (m === 'POST') throw new OpenStackError(501, 'Key pairs are not supported by this cloud yet.');
      only('GET');
      return json(200, { keypairs: [] });
    }
    throw notFound(`The resource could not be found: ${ctx.method} ${ctx.req.url ?? ''}`);
  }

  private call(r: NovaRequest) {
    return this.o.pool.as(r.ctx.identity.principal, r.ctx.requestId);
  }

  private context(r: NovaRequest): ServerContext {
    return { ...r.links, version: r.version, zone: this.o.zone, userId: r.ctx.identity.credentialId };
  }

  // ---- flavors

  private async listFlavors(r: NovaRequest, detail: boolean): Promise<Reply> {
    const q = r.ctx.query;
    const isPublic = q.get('is_public');
    if (isPublic !== null && !/^(true|false|none|1|0|yes|no|t|f|on|off|y|n)$/i.test(isPublic))
      throw new OpenStackError(400, `Invalid is_public filter [${isPublic}]`);
    const minDisk = intParam(q, 'minDisk');
    const minRam = intParam(q, 'minRam');
    let flavors = await listAllFlavors(this.o.pool, this.call(r));
    // Every Flotilla flavor is public: is_public=False (private flavors only) lists none.
    if (isPublic !== null && /^(false|0|no|f|off|n)$/i.test(isPublic)) flavors = [];
    flavors = flavors
      .filter((f) => Number(f.rootDiskGib) >= minDisk && Number(f.memoryMib) >= minRam)
      .sort((a, b) => Number(a.memoryMib) - Number(b.memoryMib) || a.name.localeCompare(b.name));
    const limit = parseLimit(q.get('limit'), { max: maxLimit, fallback: maxLimit });
    const { page, nextMarker } = pageAfter(flavors, (f) => f.id, { limit, marker: q.get('marker') });
    const c = { ...r.links, version: r.version };
    const body: Record<string, unknown> = { flavors: page.map((f) => flavorDocument(f, c, detail)) };
    if (nextMarker)
      body.flavors_links = [
        {
          rel: 'next',
          href: nextHref(`${r.links.base}/flavors${detail ? '/detail' : ''}`, q, limit, nextMarker),
        },
      ];
    return json(200, body);
  }

  /** A flavor by id only: GetFlavor also takes names, and clients rely on a name answering 404. */
  private async flavorById(r: NovaRequest, id: string): Promise<computeV1.Flavor> {
    const missing = () => notFound(`Flavor ${id} could not be found.`);
    const flavor = await this.o.pool.flavors.call
      .getFlavor({ id }, this.call(r))
      .then((x) => x.flavor)
      .catch((e: { code?: number }) => {
        if (e.code === 5 || e.code === 3) return undefined;
        throw e;
      });
    if (!flavor || flavor.id !== id) throw missing();
    return flavor;
  }

  private async showFlavor(r: NovaRequest, id: string): Promise<Reply> {
    const flavor = await this.flavorById(r, id);
    return json(200, { flavor: flavorDocument(flavor, { ...r.links, version: r.version }, true) });
  }

  // ---- servers

  /** What a server document needs besides the VM: its flavor, image id, operation in flight, failure. */
  private async facts(r: NovaRequest, vms: computeV1.Vm[]): Promise<ServerFacts[]> {
    const call = this.call(r);
    const catalogue = await this.o.catalogue.covering({ principal: r.ctx.identity.principal, call }, vms);
    const withFlavor = atLeast(r.version, 47);
    return Promise.all(
      vms.map(async (vm) => {
        const image = catalogue.imageOf(vm);
        const facts: ServerFacts = {
          vm,
          flavor: withFlavor ? catalogue.flavorOf(vm) : undefined,
          imageId: image ? glanceIdOf(image) : '',
        };
        if (vm.currentOperationId) {
          const op = await this.o.pool.computeOperations.call
            .getOperation({ id: vm.currentOperationId }, call)
            .then((x) => x.operation)
            .catch(() => undefined);
          if (op && !isTerminal(op)) facts.operationKind = op.kind;
        } else if (vm.powerState === P.POWER_STATE_HALTED) {
          // A HALTED VM whose latest operation is a failed create never ran: Nova's ERROR.
          const { operations } = await this.o.pool.computeOperations.call.listOperations(
            { page: { pageSize: 1, pageToken: '', filter: `target_id=${vm.id}` } },
            call,
          );
          const last = operations?.[0];
          if (last?.kind === 'vm.create' && last.state === commonV1.OperationState.OPERATION_STATE_FAILED)
            facts.failedCreate = last.error?.message || 'the create failed';
        }
        return facts;
      }),
    );
  }

  private async listServers(r: NovaRequest, detail: boolean): Promise<Reply> {
    const q = r.ctx.query;
    const matchesName = nameMatcher(q.get('name'));
    const statuses = q.getAll('status').map((s) => s.toUpperCase());
    for (const s of statuses)
      if (!serverStatuses.includes(s) && s !== 'DELETED')
        throw new OpenStackError(400, `Invalid status value ${s}: use one of ${serverStatuses.join(', ')}.`);
    const limit = parseLimit(q.get('limit'), { max: maxLimit, fallback: maxLimit });
    const vms = (await listAllVms(this.o.pool, this.call(r)))
      .filter((vm) => !vm.isSnapshot && matchesName(vm.name))
      .sort((a, b) => toMs(b.createdAt) - toMs(a.createdAt) || a.id.localeCompare(b.id));
    // Status needs each VM's operation in flight: with a status filter every VM's facts are read,
    // otherwise only the page's (and only for detail).
    let candidates: ServerFacts[] = vms.map((vm) => ({ vm, imageId: '' }));
    if (statuses.length)
      candidates = (await this.facts(r, vms)).filter((f) => statuses.includes(serverState(f).status));
    const { page, nextMarker } = pageAfter(candidates, (f) => f.vm.id, { limit, marker: q.get('marker') });
    const context = this.context(r);
    const docs = !detail
      ? page.map((f) => serverSummary(f.vm, r.links))
      : (statuses.length
          ? page
          : await this.facts(
              r,
              page.map((f) => f.vm),
            )
        ).map((f) => serverDocument(f, context));
    const body: Record<string, unknown> = { servers: docs };
    if (nextMarker)
      body.servers_links = [
        {
          rel: 'next',
          href: nextHref(`${r.links.base}/servers${detail ? '/detail' : ''}`, q, limit, nextMarker),
        },
      ];
    return json(200, body);
  }

  /** A server by id; names, snapshots and other tenants' VMs answer 404 like unknown ids. */
  private async vmById(r: NovaRequest, id: string): Promise<computeV1.Vm> {
    const missing = () => notFound(`Instance ${id} could not be found.`);
    if (!isUuid(id)) throw missing();
    const vm = await this.o.pool.vms.call
      .getVm({ id }, this.call(r))
      .then((x) => x.vm)
      .catch((e: { code?: number }) => {
        if (e.code === 5) return undefined;
        throw e;
      });
    if (!vm || vm.isSnapshot) throw missing();
    return vm;
  }

  private async showServer(r: NovaRequest, id: string): Promise<Reply> {
    const [facts] = await this.facts(r, [await this.vmById(r, id)]);
    return json(200, { server: serverDocument(facts, this.context(r), { show: true }) });
  }

  private async deleteServer(r: NovaRequest, id: string): Promise<Reply> {
    await this.vmById(r, id);
    await this.o.pool.vms.call.destroyVm({ id, requestId: '' }, this.call(r));
    return json(204);
  }

  private async createServers(r: NovaRequest): Promise<Reply> {
    const spec = await this.createSpec(r);
    const call = this.call(r);
    const created: computeV1.Vm[] = [];
    try {
      for (let i = 1; i <= spec.maxCount; i++) {
        const name = spec.maxCount > 1 ? `${spec.name}-${i}` : spec.name;
        const res = await this.o.pool.vms.call
          .createVm(
            {
              requestId: '',
              name,
              labels: spec.metadata,
              flavorId: spec.flavor.id,
              vcpus: 0,
              memoryMib: 0,
              boot: { image: spec.image.name, kernel: '', initrd: '', cmdline: '' },
              antiAffinityGroup: '',
              requiredHostLabels: {},
              start: true,
              nics: Array.from({ length: spec.nicCount }, () => ({ mac: '', forwards: [] })),
              rootDiskSizeBytes: 0,
              rootDiskSr: '',
            },
            call,
          )
          .catch((e) => {
            // Past min_count, running out of quota or room ends the batch, as in Nova.
            if (created.length >= spec.minCount) return undefined;
            throw e;
          });
        if (!res?.vm) break;
        created.push(res.vm);
      }
    } catch (e) {
      await Promise.all(
        created.map((vm) =>
          this.o.pool.vms.call.destroyVm({ id: vm.id, requestId: '' }, call).catch(() => undefined),
        ),
      );
      throw e;
    }
    const first = created[0];
    return json(
      202,
      {
        server: {
          id: first.id,
          links: serverSummary(first, r.links).links,
          'OS-DCF:diskConfig': 'MANUAL',
          security_groups: [{ name: 'default' }],
          // No adminPass: nothing could put one into the guest, so none is made up (Nova likewise leaves it
          // out when enable_instance_password is off).
        },
      },
      { location: `${r.links.base}/servers/${first.id}` },
    );
  }

  /** The create request, validated, with its image and flavor found (unknown ones are 400, as in Nova). */
  private async createSpec(r: NovaRequest) {
    const spec = parseCreateServer(await readJson(r.ctx.req), { version: r.version, zone: this.o.zone });
    const image = await findImageByGlanceId(this.o.pool, this.call(r), spec.imageRef);
    if (!image) throw new OpenStackError(400, `Image ${spec.imageRef} could not be found.`);
    const flavor = await this.flavorById(r, spec.flavorRef).catch((e) => {
      if (e instanceof OpenStackError && e.status === 404)
        throw new OpenStackError(400, `Flavor ${spec.flavorRef} could not be found.`);
      throw e;
    });
    return { ...spec, image, flavor };
  }

  // ---- actions

  private async action(r: NovaRequest, id: string): Promise<Reply> {
    const body = await readJson(r.ctx.req);
    const vm = await this.vmById(r, id);
    await runServerAction({ vms: this.o.pool.vms.call, vm, body, call: this.call(r) });
    return json(202);
  }

  // ---- the 2.1 image proxy (gone at 2.36)

  private async imageProxy(r: NovaRequest, id: string | undefined, sub: string | undefined): Promise<Reply> {
    const images = await listAllImages(this.o.pool, this.call(r));
    const doc = (i: storageV1.Image, detail: boolean) => novaImageDocument(i, r.links, detail);
    if (id === undefined || (id === 'detail' && sub === undefined))
      return json(200, { images: images.map((i) => doc(i, id === 'detail')) });
    const image = sub === undefined ? images.find((i) => glanceIdOf(i) === id) : undefined;
    if (!image) throw notFound(`Image ${id} could not be found.`);
    return json(200, { image: doc(image, true) });
  }
}

const toMs = (t: unknown) => {
  const d = novaTime(t);
  return d ? Date.parse(d) : 0;
};

function intParam(q: URLSearchParams, key: string): number {
  const raw = q.get(key);
  if (raw === null || raw === '') return 0;
  if (!/^\d+$/.test(raw))
    throw new OpenStackError(400, `Invalid input for query parameters ${key}: '${raw}' is not an integer.`);
  return Number(raw);
}
