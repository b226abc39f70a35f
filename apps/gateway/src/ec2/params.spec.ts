import { Ec2Error } from './errors';
import {
  booleanParam,
  filtersParam,
  intParam,
  listParam,
  pageParams,
  parseParams,
  tagsParam,
} from './params';

const params = (query: string) => parseParams(query, Buffer.alloc(0), undefined);

const errorOf = (fn: () => unknown): Ec2Error => {
  try {
    fn();
  } catch (e) {
    if (e instanceof Ec2Error) return e;
    throw e;
  }
  throw new Error('expected an Ec2Error');
};

describe('EC2 parameters', () => {
  it('merges the query with a form body, the body winning', () => {
    const p = parseParams(
      'Action=DescribeInstances&Version=1',
      Buffer.from('Version=2016-11-15&InstanceId.1=i-1'),
      'application/x-www-form-urlencoded; charset=utf-8',
    );
    expect(Object.fromEntries(p)).toEqual({
      Action: 'DescribeInstances',
      Version: '2016-11-15',
      'InstanceId.1': 'i-1',
    });
  });

  it('ignores a body that is not a form', () => {
    const p = parseParams('Action=X', Buffer.from('{"Action":"Y"}'), 'application/json');
    expect(p.get('Action')).toBe('X');
  });

  it('orders list members by their numeric suffix, 0-based and with gaps', () => {
    expect(listParam(params('InstanceId.10=c&InstanceId.0=a&InstanceId.2=b'), 'InstanceId')).toEqual([
      'a',
      'b',
      'c',
    ]);
  });

  it('does not take another parameter sharing the prefix as a list member', () => {
    expect(listParam(params('InstanceIds.1=x&InstanceId.x=y&InstanceId.1=a'), 'InstanceId')).toEqual(['a']);
  });

  it('reads filters with 0-based indices and their values in order', () => {
    const p = params(
      'Filter.0.Name=tag:env&Filter.0.Value.1=b&Filter.0.Value.0=a&Filter.1.Name=instance-state-name&Filter.1.Value.1=running',
    );
    expect(filtersParam(p)).toEqual([
      { name: 'tag:env', values: ['a', 'b'] },
      { name: 'instance-state-name', values: ['running'] },
    ]);
  });

  it('answers MissingParameter naming Filter.N.Name when a filter has no name', () => {
    expect(errorOf(() => filtersParam(params('Filter.3.Value.1=x')))).toMatchObject({
      code: 'MissingParameter',
      message: expect.stringContaining('Filter.3.Name'),
    });
  });

  it('reads tags, keeping an absent value apart from an empty one', () => {
    expect(tagsParam(params('Tag.0.Key=a&Tag.0.Value=&Tag.1.Key=b'))).toEqual([
      { key: 'a', value: '' },
      { key: 'b', value: undefined },
    ]);
  });

  it('answers InvalidParameterValue naming the parameter for a non-integer or out-of-range number', () => {
    expect(
      errorOf(() => intParam(params('MaxResults=abc'), 'MaxResults', { min: 5, max: 1000 })),
    ).toMatchObject({
      code: 'InvalidParameterValue',
      message: expect.stringContaining('MaxResults'),
    });
    expect(
      errorOf(() => intParam(params('MaxResults=4'), 'MaxResults', { min: 5, max: 1000 })).message,
    ).toMatch(/MaxResults.*between 5 and 1000/);
  });

  it('refuses MaxResults together with an id list (InvalidParameterCombination)', () => {
    expect(
      errorOf(() => pageParams(params('MaxResults=5&InstanceId.1=i-1'), { min: 5, max: 1000 }, 'InstanceId'))
        .code,
    ).toBe('InvalidParameterCombination');
  });

  it('reads booleans case-insensitively and refuses anything else', () => {
    expect(booleanParam(params('DryRun=TRUE'), 'DryRun')).toBe(true);
    expect(booleanParam(params(''), 'DryRun')).toBe(false);
    expect(errorOf(() => booleanParam(params('DryRun=yes'), 'DryRun')).message).toMatch(/DryRun/);
  });
});
