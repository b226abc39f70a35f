import type { Ec2Action } from '../context';
import { Ec2Error } from '../errors';
import { checkInstanceIds } from '../ids';
import { namedInstances } from '../instance-directory';
import { required } from '../params';
import { el, leaf, Xml } from '../xml';

/** Attributes Flotilla can answer truthfully, each as EC2 writes it (a <value> inside the attribute). */
const attributes: Record<string, (i: Awaited<ReturnType<typeof namedInstances>>[number]) => Xml> = {
  userData: (i) => el('userData', leaf('value', i.row.userData ?? undefined)),
  instanceType: (i) => el('instanceType', leaf('value', i.view.instanceType)),
  rootDeviceName: () => el('rootDeviceName', leaf('value', '/dev/vda')),
  disableApiTermination: () => el('disableApiTermination', leaf('value', false)),
  instanceInitiatedShutdownBehavior: () => el('instanceInitiatedShutdownBehavior', leaf('value', 'stop')),
};

/** DescribeInstanceAttribute: the user data given at launch (base64, as received) and a few fixed facts. */
export const describeInstanceAttribute: Ec2Action = {
  role: 'read-only',
  mutating: false,
  async handle(ctx) {
    const id = required(ctx.params, 'InstanceId');
    checkInstanceIds([id]);
    const attribute = required(ctx.params, 'Attribute');
    if (!Object.hasOwn(attributes, attribute))
      throw new Ec2Error(
        'InvalidParameterValue',
        `Value (${attribute.slice(0, 100)}) for parameter Attribute is invalid: Flotilla answers ${Object.keys(attributes).join(', ')}`,
      );
    const [instance] = await namedInstances(ctx, [id]);
    return [leaf('instanceId', id), attributes[attribute](instance)];
  },
};
