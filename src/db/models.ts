import { Model } from 'objection';
import type { DecisionsRow, RunsRow } from './rows.js';

/**
 * objection models of the control database. `useLimitInFirst` makes `.first()` send `LIMIT 1`
 * (without it, `.first()` with `FOR UPDATE SKIP LOCKED` locks every matching row).
 *
 * A model's properties are the generated row type's (src/db/rows.ts, from the migrations: `implements`
 * fails to compile when a column is added, removed or retyped), and its `jsonSchema` allows what the code
 * writes (test/db/models.db.test.ts inserts every kind through the model).
 */
export class BaseModel extends Model {
  static override useLimitInFirst = true;
}

/**
 * The kinds of run and the statuses each goes through: a consolidation (src/engine/consolidate/run.ts:
 * running, then succeeded or failed), a promotion (src/engine/promote/promote.ts: open while its
 * cross-release conflicts are decided, then succeeded) and an import (src/engine/transfer/import.ts:
 * done when it is inserted).
 */
export const RUN_STATUSES = {
  consolidate: ['running', 'succeeded', 'failed'],
  promote: ['open', 'succeeded'],
  import: ['done'],
} as const;
export type RunKind = keyof typeof RUN_STATUSES;
export type RunStatus = (typeof RUN_STATUSES)[RunKind][number];
export const RUN_KINDS = Object.keys(RUN_STATUSES) as RunKind[];
const ALL_RUN_STATUSES = [...new Set(Object.values(RUN_STATUSES).flat())];

export class Run extends BaseModel implements RunsRow {
  static override tableName = 'runs';
  id!: RunsRow['id'];
  release!: RunsRow['release'];
  kind!: RunKind;
  status!: RunStatus;
  started_by!: RunsRow['started_by'];
  pid!: RunsRow['pid'];
  host!: RunsRow['host'];
  env_filter!: RunsRow['env_filter'];
  started_at!: RunsRow['started_at'];
  finished_at!: RunsRow['finished_at'];
  steps!: RunsRow['steps'];
  counts!: RunsRow['counts'];
  error!: RunsRow['error'];

  static override jsonSchema = {
    type: 'object',
    required: ['release', 'kind', 'status', 'started_by'],
    properties: {
      release: { type: 'string', minLength: 1 },
      kind: { type: 'string', enum: RUN_KINDS },
      status: { type: 'string', enum: ALL_RUN_STATUSES },
      started_by: { type: 'string', minLength: 1 },
      pid: { type: ['integer', 'null'] },
      host: { type: ['string', 'null'] },
      env_filter: { type: ['string', 'null'] },
      error: { type: ['string', 'null'] },
    },
  };
}

/**
 * The actions a decision records (src/engine/review/types.ts `Decision`: review/decide.ts writes them, and
 * transfer/import.ts copies an exported release's).
 */
export const DECISION_ACTIONS = ['keep', 'keep-both', 'merge', 'delete-both', 'repoint', 'delete', 'waive'] as const;
export type DecisionAction = (typeof DECISION_ACTIONS)[number];

export class Decision extends BaseModel implements DecisionsRow {
  static override tableName = 'decisions';
  id!: DecisionsRow['id'];
  conflict_id!: DecisionsRow['conflict_id'];
  release!: DecisionsRow['release'];
  run_id!: DecisionsRow['run_id'];
  action!: DecisionAction;
  params!: DecisionsRow['params'];
  blast!: DecisionsRow['blast'];
  rationale!: DecisionsRow['rationale'];
  decided_by!: DecisionsRow['decided_by'];
  decided_at!: DecisionsRow['decided_at'];
  pattern_decision_id!: DecisionsRow['pattern_decision_id'];

  static override jsonSchema = {
    type: 'object',
    required: ['conflict_id', 'release', 'run_id', 'action', 'rationale', 'decided_by'],
    properties: {
      conflict_id: { type: 'integer' },
      release: { type: 'string', minLength: 1 },
      run_id: { type: 'integer' },
      action: { type: 'string', enum: [...DECISION_ACTIONS] },
      rationale: { type: 'string' },
      decided_by: { type: 'string', minLength: 1 },
      pattern_decision_id: { type: ['integer', 'null'] },
    },
  };
}
