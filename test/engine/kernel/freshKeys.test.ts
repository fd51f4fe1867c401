import { describe, expect, it } from 'vitest';
import { freshKeys, isIntegerKey, keyFloor } from '../../../src/engine/kernel/freshKeys.js';

describe('fresh keys (one rule for re-keying, keep both and promotion)', () => {
  it('the floor is the largest of every source given, 0 when none has an integer key', () => {
    expect(keyFloor('2000', null, 3000n, undefined, '-5')).toBe(3000n);
    expect(keyFloor(null, undefined)).toBe(0n);
    expect(keyFloor('99999999999999999999')).toBe(99999999999999999999n);
  });

  it('an integer key gets the next integer above the floor, in the order asked; another key its owner\'s suffix', () => {
    const fresh = freshKeys(3000n);
    expect([fresh('9', 'ST-2'), fresh('7f', 'ST-2'), fresh('-4', 'ST-3'), fresh('ab', 'R2')]).toEqual(['3001', '7f-st-2', '3002', 'ab-r2']);
  });

  it('an integer key is an optional minus and digits only', () => {
    expect(['0', '-12', '0012'].every(isIntegerKey)).toBe(true);
    expect(['1.5', '1e3', '', '12 ', '+3', '٣'].some(isIntegerKey)).toBe(false);
  });
});
