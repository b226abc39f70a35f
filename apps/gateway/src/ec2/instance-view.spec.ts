import { XMLParser } from 'fast-xml-parser';
import { ec2State } from './instance-state';
import { instanceItem, InstanceView, reservationSet, reservationXml } from './instance-view';
import { items } from './xml';

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
