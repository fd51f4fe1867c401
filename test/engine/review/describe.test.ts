import { describe, expect, it } from 'vitest';
import { describeDecision, type ConflictRow, type Decision } from '../../../src/engine/review/index.js';

/** One wording of a decision for the engine's reasons and audit (asked) and the decided card (done). */
describe('describeDecision', () => {
  const c = { detail: { column: 'user_id', versions: [{ no: 2, envs: ['ST-2', 'ST-3'] }] } } as unknown as ConflictRow;
  const cases: [Decision, string, string][] = [
    [{ action: 'keep', version: 2 }, 'keep version 2 (ST-2, ST-3)', 'kept version 2 (ST-2, ST-3)'],
    [{ action: 'keep-both' }, 'keep both, renamed', 'kept both, renamed'],
    [{ action: 'merge', picks: { role: 2, phone: 1 } }, 'merge (role from version 2, phone from version 1)', 'merged (role from version 2, phone from version 1)'],
    [{ action: 'delete-both', cascade: true }, 'delete both, with dependents', 'deleted both, with dependents'],
    [{ action: 'repoint', to: '7' }, 're-point user_id to 7', 're-pointed user_id to 7'],
    [{ action: 'delete' }, 'delete', 'deleted'],
    [{ action: 'waive' }, 'waive', 'waived'],
  ];
  it.each(cases)('%j: "%s", done "%s"', (d, asked, done) => {
    expect([describeDecision(c, d), describeDecision(c, d, 'done')]).toEqual([asked, done]);
  });
});
