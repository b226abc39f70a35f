import { storageV1 } from '@flotilla/contracts';
import type { Ec2Action } from '../context';
import { wireDate } from '../../compat/wire-date';
import { Ec2Error } from '../errors';
import { compileFilters, isTagFilter, tagFilterValues } from '../filters';
import { accountIdOf, amiIdOf, checkAmiIds, publicImageOwnerId } from '../ids';
import { tagSet } from '../instance-view';
import { pageOf } from '../pagination';
import { filtersParam, listParam, pageParams } from '../params';
import { TagStore } from '../tag-store';
import { ec2Time, el, items, leaf, Xml } from '../xml';

const { ImageState: S, ImageVisibility: V, ImageKind: K } = storageV1;

/** A catalogue image as DescribeImages shows it. */
export interface ImageView {
  imageId: string;
  image: storageV1.Image;
  ownerId: string;
  ownerAlias: string | undefined;
  isPublic: boolean;
  state: 'available' | 'pending' | 'failed';
  tags: Array<{ key: string; value: string }>;
}

function imageState(state: storageV1.ImageState): ImageView['state'] {
  if (state === S.IMAGE_STATE_AVAILABLE) return 'available';
  if (state === S.IMAGE_STATE_REGISTERING) return 'pending';
  return 'failed';
}

const imageFields: Record<string, (v: ImageView) => string[]> = {
  name: (v) => [v.image.name],
  'image-id': (v) => [v.imageId],
  state: (v) => [v.state],
  architecture: (v) => (v.image.architecture ? [v.image.architecture] : []),
  'is-public': (v) => [String(v.isPublic)],
  'owner-id': (v) => [v.ownerId],
  'owner-alias': (v) => (v.ownerAlias ? [v.ownerAlias] : []),
  'image-type': () => ['machine'],
  description: (v) => [v.image.description],
  'root-device-type': (v) => [rootDeviceType(v.image)],
  'virtualization-type': () => ['hvm'],
};

function rootDeviceType(image: storageV1.Image): string {
  return image.kind === K.IMAGE_KIND_DISK ? 'ebs' : 'instance-store';
}

/**
 * DescribeImages over Flotilla's catalogue. Owners: "self" is the tenant's private images, "amazon" the
 * operator's public ones (owner id 000000000000), or an owner id; no owner lists every image the tenant
 * may boot (the catalogue is small, unlike AWS's public AMIs).
 */
export const describeImages: Ec2Action = {
  role: 'read-only',
  mutating: false,
  async handle(ctx) {
    const ids = listParam(ctx.params, 'ImageId');
    checkAmiIds(ids);
    const owners = listParam(ctx.params, 'Owner');
    const page = pageParams(ctx.params, { min: 5, max: 1000 }, 'ImageId');
    const matches = compileFilters<ImageView>(
      filtersParam(ctx.params),
      (name) => Object.hasOwn(imageFields, name) || isTagFilter(name),
      (v, name) =>
        (Object.hasOwn(imageFields, name) ? imageFields[name](v) : undefined) ??
        tagFilterValues(v.tags, name),
    );
    const tenantId = ctx.principal.tenantId;
    const self = accountIdOf(tenantId);
    const tags = await new TagStore(ctx.site.dataSource).tagsOf(tenantId);
    const views = (await ctx.lookups.allImages())
      .filter((i) => i.tenantId === tenantId || i.visibility === V.IMAGE_VISIBILITY_PUBLIC || !i.tenantId)
      .map((image): ImageView => {
        const isPublic = image.visibility === V.IMAGE_VISIBILITY_PUBLIC || !image.tenantId;
        const imageId = amiIdOf(image.id);
        return {
          imageId,
          image,
          ownerId: isPublic ? publicImageOwnerId : self,
          ownerAlias: isPublic ? 'amazon' : undefined,
          isPublic,
          state: imageState(image.state),
          tags: (tags.get(imageId) ?? []).map(({ key, value }) => ({ key, value })),
        };
      })
      .sort((a, b) => (a.imageId < b.imageId ? -1 : 1));
    const unknown = ids.filter((id) => !views.some((v) => v.imageId === id));
    if (unknown.length)
      throw new Ec2Error('InvalidAMIID.NotFound', `The image id '[${unknown.join(', ')}]' does not exist`);
    const ownerMatches = (v: ImageView) =>
      !owners.length ||
      owners.some((o) =>
        o === 'self' ? v.ownerId === self : o === 'amazon' ? v.ownerAlias === 'amazon' : o === v.ownerId,
      );
    const selected = views
      .filter((v) => (!ids.length || ids.includes(v.imageId)) && ownerMatches(v))
      .filter(matches);
    const { items: shown, nextToken } = pageOf(selected, (v) => v.imageId, page);
    return [items('imagesSet', shown.map(imageItem)), leaf('nextToken', nextToken)];
  },
};

function imageItem(v: ImageView): Xml[] {
  const i = v.image;
  return [
    leaf('imageId', v.imageId),
    leaf('imageLocation', `${v.ownerAlias ?? v.ownerId}/${i.name}`),
    leaf('imageState', v.state),
    leaf('imageOwnerId', v.ownerId),
    leaf('creationDate', ec2Time(wireDate(i.createdAt) ?? new Date(0))),
    leaf('isPublic', v.isPublic),
    leaf('architecture', i.architecture || 'x86_64'),
    leaf('imageType', 'machine'),
    leaf('platformDetails', i.osType === 'windows' ? 'Windows' : 'Linux/UNIX'),
    leaf('imageOwnerAlias', v.ownerAlias),
    leaf('name', i.name),
    leaf('description', i.description),
    leaf('rootDeviceType', rootDeviceType(i)),
    leaf('rootDeviceName', '/dev/vda'),
    items('blockDeviceMapping', []),
    leaf('virtualizationType', 'hvm'),
    v.tags.length ? tagSet(v.tags) : undefined,
    leaf('hypervisor', 'xen'),
    i.stateReason
      ? el('stateReason', leaf('code', 'Server.ImageUnavailable'), leaf('message', i.stateReason))
      : undefined,
  ].filter((x): x is Xml => x !== undefined);
}
