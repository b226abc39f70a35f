import { PageWalks } from './page-walks';

describe('PageWalks', () => {
  let now = 0;
  const clock = () => now;
  beforeEach(() => (now = 1_000));

  it('finds a kept listing by its id for the same scope only', () => {
    const walks = new PageWalks<string>({ now: clock });
    const id = walks.keep('tenant-a|filters', ['i-1', 'i-2']);
    expect(walks.find(id, 'tenant-a|filters')).toEqual(['i-1', 'i-2']);
    expect(walks.find(id, 'tenant-b|filters')).toBeUndefined();
    expect(walks.find(id, 'tenant-a|other filters')).toBeUndefined();
    expect(walks.find('never-kept', 'tenant-a|filters')).toBeUndefined();
  });

  it('forgets a walk once its time is up', () => {
    const walks = new PageWalks<string>({ now: clock, ttlMs: 100 });
    const id = walks.keep('s', ['x']);
    now += 99;
    expect(walks.find(id, 's')).toEqual(['x']);
    now += 1;
    expect(walks.find(id, 's')).toBeUndefined();
    expect(walks.size()).toEqual({ walks: 0, items: 0 });
  });

  it('drops expired walks when it keeps a new one', () => {
    const walks = new PageWalks<string>({ now: clock, ttlMs: 100 });
    walks.keep('s', ['a', 'b']);
    now += 50;
    const second = walks.keep('s', ['c']);
    now += 60;
    walks.keep('s', ['d']);
    expect(walks.size()).toEqual({ walks: 2, items: 2 });
    expect(walks.find(second, 's')).toEqual(['c']);
  });

  it('evicts the oldest walks past its item bound, but keeps the newest however long', () => {
    const walks = new PageWalks<number>({ now: clock, maxItems: 5 });
    const a = walks.keep('s', [1, 2]);
    const b = walks.keep('s', [3, 4]);
    const c = walks.keep('s', [5, 6]);
    expect([walks.find(a, 's'), walks.find(b, 's'), walks.find(c, 's')]).toEqual([undefined, [3, 4], [5, 6]]);
    const big = walks.keep('s', [1, 2, 3, 4, 5, 6, 7]);
    expect(walks.find(big, 's')).toHaveLength(7);
    expect(walks.size()).toEqual({ walks: 1, items: 7 });
  });
});
