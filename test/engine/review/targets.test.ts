import { describe, expect, it } from 'vitest';
import { keyDistance, rankTargets, TARGET_LIMIT } from '../../../src/engine/review/targets.js';

/** The re-point targets' order and limit, on their own: same env first, then the nearest keys, then by key. */
describe('rankTargets', () => {
  const t = (key: string, env: string) => ({ key, env });

  it('puts the parents of the child own env first, each group by closeness of key to the collected one', () => {
    const ranked = rankTargets([t('1', 'ST-2'), t('998', 'ST-2'), t('5', 'ST-1'), t('1000', 'ST-1'), t('990', 'ST-1'), t('999', 'master')], { env: 'ST-1', value: '999' });
    expect(ranked.map((r) => `${r.env}:${r.key}`)).toEqual(['ST-1:1000', 'ST-1:990', 'ST-1:5', 'master:999', 'ST-2:998', 'ST-2:1']);
  });

  it('ranks other keys by edit distance, ties by key', () => {
    const ranked = rankTargets([t('AC-17', 'ST-1'), t('AC-10', 'ST-1'), t('BX-99', 'ST-1'), t('AC-1', 'ST-1')], { env: 'ST-1', value: 'AC-1' });
    expect(ranked.map((r) => r.key)).toEqual(['AC-1', 'AC-10', 'AC-17', 'BX-99']);
  });

  it('offers at most the limit (100 by default), the nearest ones', () => {
    const many = Array.from({ length: 250 }, (_, i) => t(String(i), i % 2 === 0 ? 'ST-1' : 'ST-2'));
    const ranked = rankTargets(many, { env: 'ST-2', value: '100' });
    expect(ranked).toHaveLength(TARGET_LIMIT);
    expect(TARGET_LIMIT).toBe(100);
    expect(ranked.every((r) => r.env === 'ST-2')).toBe(true);
    expect(ranked.slice(0, 3).map((r) => r.key)).toEqual(['99', '101', '97']);
    expect(rankTargets(many, { env: 'ST-2', value: '100' }, 5)).toHaveLength(5);
    expect(rankTargets(many, { env: 'ST-2', value: '100' }, 0)).toEqual([]);
  });
});

describe('keyDistance', () => {
  it('is the difference of two integers, and the edit distance of anything else', () => {
    expect(keyDistance('1000', '999')).toBe(1);
    expect(keyDistance('-3', '4')).toBe(7);
    expect(keyDistance('kitten', 'sitting')).toBe(3);
    expect(keyDistance('12', 'A12')).toBe(1);
    expect(keyDistance('', 'abc')).toBe(3);
  });
});
