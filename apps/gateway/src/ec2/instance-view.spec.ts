import { XMLParser } from 'fast-xml-parser';
import { ec2State } from './instance-state';
import {
  instanceItem,
  InstanceView,
  reservationSet,
  ReservationItems,
  reservationXml,
  sameView,
} from './instance-view';
import { items, responseDocument, utf8 } from './xml';

const view = (over: Partial<InstanceView> = {}): InstanceView => ({
  instanceId: 'i-0123456789abcdef0',
  reservationId: 'r-0123456789abcdef0',
  imageId: 'ami-0123456789abcdef0',
  state: ec2State('running'),
  reason: '',
  keyName: 'k1',
  launchIndex: 0,
  instanceType: 'm1.small',
  launchTime: new Date('2026-01-02T03:04:05.678Z'),
  zone: 'dc1',
  architecture: 'x86_64',
  rootDeviceType: 'instance-store',
  clientToken: '',
  vcpus: 2,
  tags: [],
  ...over,
});

describe('EC2 instance items', () => {
  it('writes the members in the order AWS writes them, absent ones left out and empty ones empty', () => {
    expect(instanceItem(view({ imageId: undefined, keyName: undefined })).raw).toBe(
      '<item><instanceId>i-0123456789abcdef0</instanceId>' +
        '<instanceState><code>16</code><name>running</name></instanceState><privateDnsName/><dnsName/><reason/>' +
        '<amiLaunchIndex>0</amiLaunchIndex><productCodes/><instanceType>m1.small</instanceType>' +
        '<launchTime>2026-01-02T03:04:05.678Z</launchTime>' +
        '<placement><availabilityZone>dc1</availabilityZone><groupName/><tenancy>default</tenancy></placement>' +
        '<monitoring><state>disabled</state></monitoring><groupSet/><architecture>x86_64</architecture>' +
        '<rootDeviceType>instance-store</rootDeviceType><rootDeviceName>/dev/vda</rootDeviceName><blockDeviceMapping/>' +
        '<virtualizationType>hvm</virtualizationType><clientToken/><hypervisor>xen</hypervisor><networkInterfaceSet/>' +
        '<ebsOptimized>false</ebsOptimized><enaSupport>false</enaSupport>' +
        '<cpuOptions><coreCount>2</coreCount><threadsPerCore>1</threadsPerCore></cpuOptions>' +
        '<metadataOptions><state>applied</state><httpTokens>optional</httpTokens>' +
        '<httpPutResponseHopLimit>1</httpPutResponseHopLimit><httpEndpoint>disabled</httpEndpoint></metadataOptions></item>',
    );
  });

  it('escapes every value a user or another API supplied, so none can add elements', () => {
    const evil = '</keyName><injected>1</injected><keyName>&';
    const xml = `<r>${
      reservationSet(
        [
          view({
            keyName: evil,
            reason: evil,
            clientToken: evil,
            instanceType: evil,
            architecture: evil,
            tags: [{ key: evil, value: evil }],
          }),
        ],
        '123456789012',
      ).raw
    }</r>`;
    const item = new XMLParser().parse(xml).r.reservationSet.item.instancesSet.item;
    expect(item.injected).toBeUndefined();
    for (const field of ['keyName', 'reason', 'clientToken', 'instanceType', 'architecture'])
      expect(item[field]).toBe(evil);
    expect(item.tagSet.item).toEqual({ key: evil, value: evil });
  });

  it('groups instances into their reservations in first-seen order, as the generic builders would write them', () => {
    const views = [
      view({ instanceId: 'i-1', reservationId: 'r-a' }),
      view({ instanceId: 'i-2', reservationId: 'r-b' }),
      view({
        instanceId: 'i-3',
        reservationId: 'r-a',
        keyName: undefined,
        tags: [{ key: 'Name', value: 'x' }],
      }),
    ];
    const expected = items('reservationSet', [
      reservationXml('r-a', '123456789012', [views[0], views[2]]),
      reservationXml('r-b', '123456789012', [views[1]]),
    ]);
    expect(reservationSet(views, '123456789012').raw).toBe(expected.raw);
    expect(reservationSet([], '123456789012').raw).toBe('<reservationSet/>');
  });
});

describe('ReservationItems: reservations kept as written while their instances do not change', () => {
  // One change per field of the view (the type makes this name every field of InstanceView): sameView must see each.
  const changes: { [K in keyof InstanceView]-?: Partial<InstanceView> } = {
    instanceId: { instanceId: 'i-0fffffffffffffff0' },
    reservationId: { reservationId: 'r-0fffffffffffffff0' },
    imageId: { imageId: undefined },
    state: { state: ec2State('stopped') },
    reason: { reason: 'User initiated' },
    keyName: { keyName: 'k2' },
    launchIndex: { launchIndex: 1 },
    instanceType: { instanceType: 'm1.large' },
    launchTime: { launchTime: new Date('2026-01-02T03:04:05.679Z') },
    zone: { zone: 'dc2' },
    architecture: { architecture: 'arm64' },
    rootDeviceType: { rootDeviceType: 'ebs' },
    clientToken: { clientToken: 'tok' },
    vcpus: { vcpus: 4 },
    tags: { tags: [{ key: 'Name', value: 'web' }] },
  };

  it.each(Object.entries(changes))('sees a change of %s', (_field, change) => {
    expect(sameView(view(), view())).toBe(true);
    expect(sameView(view(), view(change))).toBe(false);
  });

  it('sees a changed tag value and a reordered tag set', () => {
    const tags = [
      { key: 'a', value: '1' },
      { key: 'b', value: '2' },
    ];
    expect(sameView(view({ tags }), view({ tags: [tags[0], { key: 'b', value: '3' }] }))).toBe(false);
    expect(sameView(view({ tags }), view({ tags: [tags[1], tags[0]] }))).toBe(false);
  });

  const owner = '123456789012';
  const r1 = view().reservationId;
  // The reservation's item as reservationSet writes it as text.
  const text = (members: InstanceView[]) =>
    reservationSet(members, owner).raw.replace(/^<reservationSet>|<\/reservationSet>$/g, '');

  it('writes the bytes the text writer writes, reusing them until an instance changes', () => {
    const kept = new ReservationItems();
    const first = kept.write(r1, owner, [view()]);
    expect(Buffer.from(first).toString()).toBe(text([view()]));
    expect(kept.write(r1, owner, [view()])).toBe(first);
    const changed = [view({ state: ec2State('stopped'), tags: [{ key: 'é', value: '<ü>' }] })];
    const stopped = kept.write(r1, owner, changed);
    expect(stopped).not.toBe(first);
    expect(Buffer.from(stopped).toString()).toBe(text(changed));
  });

  it('writes a reservation again when its owner or its members listed change', () => {
    const kept = new ReservationItems();
    const a = view({ instanceId: 'i-a' });
    const b = view({ instanceId: 'i-b' });
    const both = kept.write(r1, owner, [a, b]);
    // A filter that lists one of the two, then both again, then another owner.
    expect(Buffer.from(kept.write(r1, owner, [b])).toString()).toBe(text([b]));
    expect(Buffer.from(kept.write(r1, owner, [a, b])).toString()).toBe(Buffer.from(both).toString());
    expect(Buffer.from(kept.write(r1, '210987654321', [a, b])).toString()).toContain(
      '<ownerId>210987654321</ownerId>',
    );
  });

  it('is not fooled by a caller that changes a view after writing it', () => {
    const kept = new ReservationItems();
    const v = view({ tags: [{ key: 'Name', value: 'a' }] });
    kept.write(r1, owner, [v]);
    v.tags[0].value = 'b';
    const again = kept.write(r1, owner, [view({ tags: [{ key: 'Name', value: 'b' }] })]);
    expect(Buffer.from(again).toString()).toContain('<value>b</value>');
  });

  it('gives the same document, byte for byte, as reservations written as text', () => {
    const views = [
      view({ instanceId: 'i-1', reservationId: 'r-a', tags: [{ key: 'Name', value: 'café' }] }),
      view({ instanceId: 'i-2', reservationId: 'r-b' }),
      view({ instanceId: 'i-3', reservationId: 'r-a', keyName: undefined }),
    ];
    const kept = new ReservationItems();
    const document = (write?: ReservationItems['write']) =>
      utf8(responseDocument('DescribeInstances', 'req-1', [reservationSet(views, owner, write)]));
    const asText = document();
    expect(document(kept.write)).toEqual(asText);
    expect(document(kept.write)).toEqual(asText); // the second time from the kept bytes
    expect(responseDocument('X', 'r', [reservationSet(views, owner, kept.write)]).raw).toBe(
      responseDocument('X', 'r', [reservationSet(views, owner)]).raw,
    );
    expect(reservationSet([], owner, kept.write).raw).toBe('<reservationSet/>');
  });
});
