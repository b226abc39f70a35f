import { candidateView } from '../testing/random-cluster';
import { requiredLabelsFilter } from './required-labels.filter';

describe('required-labels filter', () => {
  const host = candidateView({ labels: { zone: 'az1', gpu: 'true', rack: 'r7' } });

  it('accepts any host when the request requires no labels', () => {
    expect(requiredLabelsFilter.passes(host, { vcpus: 1, memoryMib: 1 })).toBe(true);
  });

  it('accepts a host carrying every required key=value and more', () => {
    const request = { vcpus: 1, memoryMib: 1, requiredLabels: { zone: 'az1', gpu: 'true' } };
    expect(requiredLabelsFilter.passes(host, request)).toBe(true);
  });

  it('rejects a host where one required value differs', () => {
    const request = { vcpus: 1, memoryMib: 1, requiredLabels: { zone: 'az1', gpu: 'false' } };
    expect(requiredLabelsFilter.passes(host, request)).toBe(false);
  });

  it('rejects a host missing a required key', () => {
    const request = { vcpus: 1, memoryMib: 1, requiredLabels: { ssd: 'true' } };
    expect(requiredLabelsFilter.passes(host, request)).toBe(false);
  });

  it('does not treat Object.prototype members as labels', () => {
    const request = { vcpus: 1, memoryMib: 1, requiredLabels: { toString: 'x' } };
    expect(requiredLabelsFilter.passes(host, request)).toBe(false);
  });

  it('describes the required labels', () => {
    const request = { vcpus: 1, memoryMib: 1, requiredLabels: { zone: 'az2', gpu: 'true' } };
    expect(requiredLabelsFilter.describe(request, [])).toBe('need labels zone=az2, gpu=true');
  });
});
