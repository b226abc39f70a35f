import type { Metadata } from '@grpc/grpc-js';
import { commonV1, type computeV1, type storageV1 } from '@flotilla/contracts';
import type { GrpcClient, Logger } from '@flotilla/platform';
import type { Principal } from '../auth/token-auth';
import { listAllFlavors, listAllImages } from './list-all';
import type { PoolApi } from './pool-api';

type Call = { metadata: Metadata };

/** What a ListCache needs to know of a service's changes. */
export interface ChangeSignal {
  /** Whether every change from now on is seen (the Watch stream is open and has sent its first BOOKMARK). */
  readonly live: boolean;
  /** Moves on every change, and whenever the stream opens or drops. */
  readonly generation: number;
}

/**
 * Lists kept per caller until the service announces a change of their kind. A list is kept only while the
 * signal is live, and is good only for the generation it was read in: a change announced while it was being
 * read makes the next caller read it again. While the signal is not live, every call reads.
 */
export class ListCache<T> {
  private readonly entries = new Map<string, { generation: number; list: Promise<readonly T[]> }>();

  constructor(
    private readonly changes: ChangeSignal,
    private readonly maxKeys = 1000,
  ) {}

  /** The list for `key`: kept, or read with `load` (always read when `fresh`; the result is kept). */
  get(key: string, load: () => Promise<T[]>, fresh = false): Promise<readonly T[]> {
    const { live, generation } = this.changes;
    const kept = this.entries.get(key);
    if (live && !fresh && kept?.generation === generation) return kept.list;
    // Frozen: every request of the key shares it.
    const list = load().then((items) => Object.freeze(items));
    if (!live) return list;
    const entry = { generation, list };
    this.entries.delete(key);
    if (this.entries.size >= this.maxKeys) this.entries.delete(this.entries.keys().next().value as string);
    this.entries.set(key, entry);
    list.catch(() => {
      if (this.entries.get(key) === entry) this.entries.delete(key);
    });
    return list;
  }
}

type WatchClient = GrpcClient<unknown>;

/**
 * Follows one service's Watch stream for some resource kinds, as a ChangeSignal. It starts from "now" each
 * time it (re)opens: caches that follow it drop everything when it drops, so no position is needed.
 */
export class ChangeWatch implements ChangeSignal {
  live = false;
  generation = 0;
  private stream?: { cancel(): void };
  private retry?: NodeJS.Timeout;
  private retryMs: number;
  private closed = false;

  constructor(
    private readonly client: WatchClient,
    private readonly kinds: string[],
    private readonly logger: Logger,
    private readonly timing = { retryMs: 1000, maxRetryMs: 30_000 },
  ) {
    this.retryMs = timing.retryMs;
  }

  start(): this {
    this.open();
    return this;
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.retry);
    this.stream?.cancel();
    this.drop();
  }

  private open(): void {
    const stream = this.client.stream<{ event?: commonV1.EventMeta }>('Watch', {
      cursor: { resumeToken: '', kinds: this.kinds },
    });
    this.stream = stream;
    stream.on('data', (r: { event?: commonV1.EventMeta }) => {
      if (r.event?.type !== commonV1.EventType.EVENT_TYPE_BOOKMARK) this.generation++;
      else if (!this.live) {
        this.live = true;
        this.generation++;
        this.retryMs = this.timing.retryMs;
        this.logger.debug({ kinds: this.kinds }, 'catalogue: following changes');
      }
    });
    // Every end comes as a status; errors are reported there (a listener keeps them from throwing).
    stream.on('error', () => undefined);
    stream.on('status', (s: { code: number; details: string }) => {
      if (this.stream !== stream) return;
      if (this.live)
        this.logger.info(
          { kinds: this.kinds, code: s.code, details: s.details },
          'catalogue: change stream ended; reading lists on every request until it is back',
        );
      this.drop();
      if (this.closed) return;
      this.retry = setTimeout(() => this.open(), this.retryMs);
      this.retry.unref();
      this.retryMs = Math.min(this.retryMs * 2, this.timing.maxRetryMs);
    });
  }

  private drop(): void {
    this.live = false;
    this.generation++;
  }
}

/**
 * The pool's flavors and images as the fronts read them on nearly every request: an EC2 launch resolves its
 * ImageId and InstanceType before CreateVm, and every instance listing maps each VM to an instance type and
 * an AMI. Each caller's lists are kept until compute announces a flavor change or storage an image change
 * on its Watch stream, so a kept list is behind the pool by at most the stream's delay; callers that look
 * an item up and miss read again (`fresh`) before they answer that it does not exist.
 */
export class Catalogue {
  private readonly flavorChanges: ChangeSignal;
  private readonly imageChanges: ChangeSignal;
  private readonly watches: ChangeWatch[] = [];
  private readonly flavorLists: ListCache<computeV1.Flavor>;
  private readonly imageLists: ListCache<storageV1.Image>;

  /** `signals` replace the Watch streams (tests that hold a list still). */
  constructor(
    private readonly pool: PoolApi,
    logger: Logger,
    signals?: { flavors: ChangeSignal; images: ChangeSignal },
  ) {
    const follow = (client: WatchClient, kind: string) => {
      const watch = new ChangeWatch(client, [kind], logger).start();
      this.watches.push(watch);
      return watch;
    };
    this.flavorChanges = signals?.flavors ?? follow(pool.computeEvents, 'flavor');
    this.imageChanges = signals?.images ?? follow(pool.storageEvents, 'image');
    this.flavorLists = new ListCache(this.flavorChanges);
    this.imageLists = new ListCache(this.imageChanges);
  }

  /** Whether both change streams are followed (lists are kept). */
  get following(): boolean {
    return this.flavorChanges.live && this.imageChanges.live;
  }

  flavors(caller: CatalogueCaller, o: { fresh?: boolean } = {}): Promise<readonly computeV1.Flavor[]> {
    return this.flavorLists.get(keyOf(caller), () => listAllFlavors(this.pool, caller.call), o.fresh);
  }

  images(caller: CatalogueCaller, o: { fresh?: boolean } = {}): Promise<readonly storageV1.Image[]> {
    return this.imageLists.get(keyOf(caller), () => listAllImages(this.pool, caller.call), o.fresh);
  }

  /** The kept lists, indexed. */
  async index(caller: CatalogueCaller): Promise<CatalogueIndex> {
    const [flavors, images] = await Promise.all([this.flavors(caller), this.images(caller)]);
    return new CatalogueIndex(flavors, images);
  }

  /** The catalogue to show these VMs with (CatalogueIndex.covering over the kept lists). */
  async covering(
    caller: CatalogueCaller,
    vms: ReadonlyArray<computeV1.Vm | undefined>,
  ): Promise<CatalogueIndex> {
    return (await this.index(caller)).covering(vms, {
      allFlavors: () => this.flavors(caller, { fresh: true }),
      allImages: () => this.images(caller, { fresh: true }),
    });
  }

  close(): void {
    for (const w of this.watches) w.close();
  }
}

/** Flavors and images indexed as VMs name them: a listing asks for a thousand VMs' flavor and image. */
export class CatalogueIndex {
  private readonly flavorByKey = new Map<string, computeV1.Flavor>();
  private readonly imageByName: Map<string, storageV1.Image>;

  constructor(
    readonly flavors: readonly computeV1.Flavor[],
    readonly images: readonly storageV1.Image[],
  ) {
    // A VM names its flavor by id (or, made with explicit sizing, not at all); the first of a key wins.
    for (const f of [...flavors].reverse()) {
      this.flavorByKey.set(f.name, f);
      this.flavorByKey.set(f.id, f);
    }
    this.imageByName = new Map(images.map((i) => [i.name, i]));
  }

  flavorOf(vm: computeV1.Vm | undefined): computeV1.Flavor | undefined {
    return vm?.flavorId ? this.flavorByKey.get(vm.flavorId) : undefined;
  }

  imageOf(vm: computeV1.Vm | undefined): storageV1.Image | undefined {
    return vm?.boot?.image ? this.imageByName.get(vm.boot.image) : undefined;
  }

  /**
   * The catalogue to show these VMs with: this one, or one read now when a VM names a flavor or an image this
   * one lacks (made a moment ago, or gone: a VM outlives its image). `read` gives the pool's lists as they are.
   */
  async covering(
    vms: ReadonlyArray<computeV1.Vm | undefined>,
    read: {
      allFlavors(): Promise<readonly computeV1.Flavor[]>;
      allImages(): Promise<readonly storageV1.Image[]>;
    },
  ): Promise<CatalogueIndex> {
    const flavorsLacking = vms.some((vm) => !!vm?.flavorId && !this.flavorOf(vm));
    const imagesLacking = vms.some((vm) => !!vm?.boot?.image && !this.imageOf(vm));
    if (!flavorsLacking && !imagesLacking) return this;
    const [flavors, images] = await Promise.all([
      flavorsLacking ? read.allFlavors() : this.flavors,
      imagesLacking ? read.allImages() : this.images,
    ]);
    return new CatalogueIndex(flavors, images);
  }
}

/** Whom a list is read for: what a pool service scopes lists by (tenant and role), and the call to read it. */
export interface CatalogueCaller {
  principal: Pick<Principal, 'tenantId' | 'role'>;
  call: Call;
}

const keyOf = ({ principal }: CatalogueCaller) => `${principal.role}\n${principal.tenantId}`;
