import { describe, expect, it } from 'vitest';
import type { Config } from '../../../src/config/load.js';
import { conflictPriority, featurePriority } from '../../../src/engine/kernel/priority.js';

describe('feature priority → conflict priority (one rule for consolidation and promotion)', () => {
  it('P1 only when a critical feature is involved, else P2 (high is no exception; unknown features are not critical)', () => {
    expect(conflictPriority(['medium', 'critical'])).toBe('P1');
    expect(conflictPriority(['high', 'high'])).toBe('P2');
    expect(conflictPriority(['low', undefined])).toBe('P2');
    expect(conflictPriority([])).toBe('P2');
  });

  it('a feature is looked up in the plan of the release its row was tagged with', () => {
    const features = (list: [string, string][]) => new Map(list.map(([id, priority]) => [id, { id, priority, owner: 'o', deprecated: false }]));
    const config = { releases: new Map([['R1', { name: 'R1', features: features([['FEAT-1', 'critical']]) }], ['R2', { name: 'R2', features: features([['FEAT-1', 'low']]) }]]) } as unknown as Config;
    expect([featurePriority(config, 'R1', 'FEAT-1'), featurePriority(config, 'R2', 'FEAT-1')]).toEqual(['critical', 'low']);
    expect([featurePriority(config, 'R0', 'FEAT-1'), featurePriority(config, 'R1', 'FEAT-9'), featurePriority(config, 'R1', null)]).toEqual([undefined, undefined, undefined]);
  });
});
