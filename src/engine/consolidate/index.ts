

/**
 * Consolidate: collect a release's locked rows from every ST env (collect.ts, its child process
 * collect-child.ts), find identities, re-key shared primary keys, resolve versions by the policy's rules
 * (rules.ts, applied in detect.ts), follow references through the key map, and queue what people must
 * decide; run.ts is the run itself (gate, drift check, carrying decisions forward, audit). Owns the
 * consolidation `runs` and the run's work area tables (their names are kernel/workArea.ts's).
 */
export { consolidate } from './run.js';
export type { ConsolidateResult } from './run.js';
