import type { CandidateView, PlacementRequest } from '../model';
import type { PlacementFilter } from './placement-filter';

/** Every required key=value must be on the host; extra host labels do not matter. */
export function hasRequiredLabels(
  host: Pick<CandidateView, 'labels'>,
  request: Pick<PlacementRequest, 'requiredLabels'>,
): boolean {
  const required = request.requiredLabels;
  if (required === undefined) return true;
  for (const key in required) {
    // hasOwn: a label key such as "constructor" must not match Object.prototype.
    if (!Object.hasOwn(host.labels, key) || host.labels[key] !== required[key]) return false;
  }
  return true;
}

export function formatLabels(labels: Readonly<Record<string, string>>): string {
  return Object.entries(labels)
    .map(([key, value]) => `${key}=${value}`)
    .join(', ');
}

export const requiredLabelsFilter: PlacementFilter = {
  name: 'required-labels',
  passes: hasRequiredLabels,
  describe(request) {
    return `need labels ${formatLabels(request.requiredLabels ?? {})}`;
  },
};
