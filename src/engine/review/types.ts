import type { ConflictsRow } from '../../db/rows.js';
import type { ConflictPriority } from '../kernel/priority.js';

/** The review queue's shapes: conflicts as stored, decisions and their blast radius. */

export interface VersionView {
  no: number;
  envs: string[];
  pks: string[];
  feature: string | null;
  features: string[] | null;
  created_by: string | null;
  created_at: string | null;
  ts: string | null;
  data: Record<string, unknown>;
  /** Child rows (of every child entity) that hang on this version's records. */
  children?: number;
  /** Cross-release conflicts: the release the version belongs to (master's earlier one, or the promoted one). */
  release?: string;
}

/** What a cross-release conflict (found by `tributary promote`) is about: one staging row and one master row. */
export interface CrossReleaseInfo {
  /** The release being promoted (version 2, staging). */
  release: string;
  /** The earlier release of master's row (version 1). */
  masterRelease: string;
  stagingPk: string;
  masterPk: string;
  /** The identity keys the two rows share (the natural keys and/or the primary key). */
  keys: string[];
  /**
   * A hash of each row's compared data (tags and ignored columns left out): a decision applies while both
   * are unchanged. `text:`-prefixed: of the cells' texts (promote.ts payloadHashSql); else the to_jsonb
   * form of decisions recorded before.
   */
  stagingHash: string;
  masterHash: string;
}

export interface ConflictDetail {
  reason: string;
  /** 'none': no version is suggested (cross-release conflicts: a person decides). */
  suggestion: 'keep' | 'keep-both' | 'delete' | 'waive' | 'none';
  suggested?: number;
  differing?: string[];
  versions?: VersionView[];
  column?: string;
  parent?: string;
  value?: string;
  env?: string;
  record?: { data: Record<string, unknown>; env: string; pk: string; sources: unknown[] };
  crossRelease?: CrossReleaseInfo;
  /** A re-opened automatic resolution (same code): the rule, its reason and what it had kept. */
  /** A record conflict's reference, read live when the conflict is shown (queue.ts showConflict). */
  reference?: ReferenceForms;
  overrules?: { code: string; rule: string; reason: string; kept: { version?: number; env: string; pk: string; key: string } };
}

/** A reference as the record holds it now, and as its env's key map reads the key it was collected with. */
export interface ReferenceForms {
  column: string;
  env: string;
  /** The key as collected in `env`. */
  collected: string;
  /** The key the consolidated record holds now (null: none). */
  held: string | null;
  /** Where `env`'s key map sends the collected key (null: nowhere, the parent is missing there). */
  mapped: string | null;
}

/**
 * A row of `conflicts` (src/db/rows.ts) as the review reads it: its priority, its status and its detail
 * (jsonb) in the shapes the review writes there.
 */
export type ConflictRow = Omit<ConflictsRow, 'priority' | 'status' | 'detail'> & {
  priority: ConflictPriority;
  status: 'open' | 'decided';
  detail: ConflictDetail;
};

/** A person's decision on a conflict or a finding. */
export type Decision =
  | { action: 'keep'; version: number }
  | { action: 'keep-both'; rename?: Record<number, Record<string, string>> }
  | { action: 'merge'; picks: Record<string, number> }
  | { action: 'delete-both'; cascade?: boolean }
  | { action: 'repoint'; to: string }
  | { action: 'delete'; cascade?: boolean }
  | { action: 'waive' };

export interface Dependent {
  entity: string;
  pk: string;
}

export interface BlastRadius {
  /** Child rows whose reference is rewritten to another parent key. */
  rewritten: number;
  /** Rows removed (the record(s) and, with cascade, their dependents). */
  removed: number;
  /** Records kept under new natural keys. */
  renamed: { version: number; values: Record<string, string>; pk: string }[];
  /** Rows that depend on what would be deleted (first 50). */
  dependents: Dependent[];
  dependentCount: number;
}

export interface DecisionOutcome {
  conflict: ConflictRow;
  decision: Decision;
  blast: BlastRadius;
  applied: boolean;
  decidedBy?: string;
  decidedAt?: Date;
  rationale?: string;
  /** What the decision contradicts, said before it is taken (a re-pointed parent's columns: targets.ts). */
  warnings?: string[];
}

export interface Plan {
  blast: BlastRadius;
  apply: () => Promise<void>;
}
