import type { ConflictRow, Decision } from './types.js';

/**
 * A decision in words, one wording for every place that shows one: as it is asked for or planned ("keep version
 * 2 (ST-2)", in reasons, refusals and the audit) or as it was done ("kept version 2 (ST-2)", on a decided card).
 */
const VERB = {
  keep: ['keep', 'kept'],
  merge: ['merge', 'merged'],
  delete: ['delete', 'deleted'],
  repoint: ['re-point', 're-pointed'],
  waive: ['waive', 'waived'],
} as const;

export function describeDecision(c: ConflictRow, d: Decision, tense: 'asked' | 'done' = 'asked'): string {
  const verb = (v: keyof typeof VERB) => VERB[v][tense === 'asked' ? 0 : 1];
  switch (d.action) {
    case 'keep': {
      const v = c.detail.versions?.find((x) => x.no === d.version);
      return `${verb('keep')} version ${d.version}${v ? ` (${v.envs.join(', ')})` : ''}`;
    }
    case 'keep-both':
      return `${verb('keep')} both, renamed`;
    case 'merge':
      return `${verb('merge')} (${Object.entries(d.picks).map(([a, v]) => `${a} from version ${v}`).join(', ')})`;
    case 'delete-both':
      return `${verb('delete')} both${d.cascade ? ', with dependents' : ''}`;
    case 'repoint':
      return `${verb('repoint')} ${c.detail.column ?? 'the reference'} to ${d.to}`;
    case 'delete':
      return `${verb('delete')}${d.cascade ? ', with dependents' : ''}`;
    case 'waive':
      return verb('waive');
  }
}
