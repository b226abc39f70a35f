import type { Ec2Action } from '../context';
import { describeInstances } from './describe-instances';
import { describeInstanceAttribute } from './instance-attribute';
import { describeImages } from './images';
import { rebootInstances, startInstances, stopInstances, terminateInstances } from './instance-power';
import { describeInstanceTypes } from './instance-types';
import { deleteKeyPair, describeKeyPairs, importKeyPair } from './key-pairs';
import {
  describeAddresses,
  describeAvailabilityZones,
  describeRegions,
  describeSecurityGroups,
} from './placement';
import { runInstances } from './run-instances';
import { createTags, deleteTags, describeTags } from './tags';

/** The EC2 actions Flotilla serves (issue 7 point 2); any other is InvalidAction. */
export const ec2Actions: Readonly<Record<string, Ec2Action>> = {
  RunInstances: runInstances,
  DescribeInstances: describeInstances,
  DescribeInstanceAttribute: describeInstanceAttribute,
  StartInstances: startInstances,
  StopInstances: stopInstances,
  RebootInstances: rebootInstances,
  TerminateInstances: terminateInstances,
  DescribeImages: describeImages,
  DescribeInstanceTypes: describeInstanceTypes,
  DescribeRegions: describeRegions,
  DescribeAvailabilityZones: describeAvailabilityZones,
  CreateTags: createTags,
  DeleteTags: deleteTags,
  DescribeTags: describeTags,
  DescribeAddresses: describeAddresses,
  DescribeKeyPairs: describeKeyPairs,
  ImportKeyPair: importKeyPair,
  DeleteKeyPair: deleteKeyPair,
  DescribeSecurityGroups: describeSecurityGroups,
};
