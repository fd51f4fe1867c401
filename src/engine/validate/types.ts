import { type DataTest } from '../../config/load.js';
import { type BlastRadius, type Decision } from '../review/index.js';
import type { FindingsRow } from '../../db/rows.js';

export type FindingStatus = 'open' | 'closed' | 'waived';

/** What a finding's `detail` (jsonb) holds: where it was found, and the decision that closed it. */
export interface FindingDetail {
  parent?: string;
  test?: string;
  env?: string;
  table?: string;
  decision?: Decision;
  blast?: BlastRadius;
}

/**
 * A row of `findings` (the generated FindingsRow), its status, kind and detail narrowed to what validation
 * writes. `key` is the record's primary key value (null for a finding about a whole entity).
 */
export type FindingRow = Omit<FindingsRow, 'status' | 'kind' | 'detail'> & {
  status: FindingStatus;
  kind: 'integrity' | 'test';
  detail: FindingDetail;
};

export interface ValidationCounts {
  open: number;
  waived: number;
  closed: number;
  /** Findings seen for the first time in this run. */
  new: number;
  /** Closed (or waived) findings that occur again. */
  reopened: number;
  /** Findings that no longer occur, closed by this validation. */
  closedNow: number;
}

export interface ValidationReport {
  release: string;
  runId: number;
  state: string;
  ms: number;
  /** Final rows checked, per entity. */
  rows: Record<string, number>;
  counts: ValidationCounts;
  /** Open findings per rule. */
  byRule: Record<string, number>;
  /** Open and waived findings, in code order. */
  findings: FindingRow[];
}

/** Integrity rules (the data tests are named by their `name`, else by their kind). */
export const INTEGRITY_RULES = ['orphan', 'orphan-chain', 'required', 'type', 'unknown-column'] as const;


export function ruleOf(t: DataTest): string {
  return t.name ?? t.kind;
}

/** A reference that resolves neither among the final rows nor in master. */
export interface Unresolved {
  identity: string;
  pk: string;
  v: string;
  pstatus: string | null;
}

/** The advisory lock of a release's validation (a decision on one of its findings takes it too). */
export const lockKey = (release: string) => `tributary:validate:${release}`;
