import { describe, expect, it } from 'vitest';
import { TributaryError } from '../../../src/errors.js';
import { requireRationale } from '../../../src/engine/kernel/rationale.js';

describe('the minimum rationale (one rule for every human decision)', () => {
  it('needs at least three characters other than white space, and keeps it trimmed', () => {
    expect(requireRationale('  the third one \n', 'a decision', 'why?')).toBe('the third one');
    expect(requireRationale('abc', 'a decision', 'why?')).toBe('abc');
    for (const short of [undefined, null, '', '   ', 'ok', ' a b ', '\tx\ny ']) {
      expect(() => requireRationale(short, 'a waiver', 'why may F-001 stay?')).toThrow('a waiver needs a rationale of at least 3 characters (why may F-001 stay?)');
    }
  });

  it('refuses with decision_invalid, or the caller\'s code, naming the field', () => {
    const err = (code?: 'usage') => {
      try {
        requireRationale('no', 'a rollback', 'why?', code);
      } catch (e) {
        return e as TributaryError;
      }
      throw new Error('accepted');
    };
    expect([err().code, err('usage').code, err().details]).toEqual(['decision_invalid', 'usage', { field: 'rationale' }]);
  });
});
