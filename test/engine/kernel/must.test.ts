import { describe, expect, it } from 'vitest';
import { firstRow, InvariantError, must } from '../../../src/engine/kernel/must.js';

describe('must and firstRow', () => {
  it('return the value when there is one, including falsy values that are not null or undefined', () => {
    expect(must(0, 'a count')).toBe(0);
    expect(must('', 'a name')).toBe('');
    expect(firstRow([{ id: 3 }], 'a run')).toEqual({ id: 3 });
  });
  it('throw an error naming what was expected', () => {
    expect(() => must(undefined, "run 12's row")).toThrow(new InvariantError("expected run 12's row, found none"));
    expect(() => firstRow([], 'the release state of R2')).toThrow('expected the release state of R2, found none');
  });
});
