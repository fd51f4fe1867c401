import { Model } from 'objection';

/**
 * objection models of the control database. `useLimitInFirst` makes `.first()` send `LIMIT 1`
 * (without it, `.first()` with `FOR UPDATE SKIP LOCKED` locks every matching row).
 */
export class BaseModel extends Model {
  static override useLimitInFirst = true;
}

export class Run extends BaseModel {
  static override tableName = 'runs';
  id!: number;
  release!: string;
  kind!: string;
  status!: 'running' | 'succeeded' | 'failed';
  started_by!: string;
  pid!: number | null;
  host!: string | null;
  started_at!: Date;
  finished_at!: Date | null;
  steps!: Record<string, number>;
  counts!: Record<string, unknown>;
  error!: string | null;

  static override jsonSchema = {
    type: 'object',
    required: ['release', 'kind', 'status', 'started_by'],
    properties: {
      release: { type: 'string', minLength: 1 },
      kind: { type: 'string', enum: ['consolidate', 'import'] },
      status: { type: 'string', enum: ['running', 'succeeded', 'failed'] },
      started_by: { type: 'string', minLength: 1 },
    },
  };
}

export class Decision extends BaseModel {
  static override tableName = 'decisions';
  id!: number;
  conflict_id!: number;
  release!: string;
  run_id!: number;
  action!: string;
  params!: Record<string, unknown>;
  blast!: { renamed: unknown[]; rewritten: number; removed: number };
  rationale!: string;
  decided_by!: string;
  decided_at!: Date;
}
