import type pg from 'pg';
import type { EntitySpec, EnvSpec } from '../../config/load.js';
import type { ConflictDetail, ConflictRow, Decision } from '../review/index.js';
import type { Ctx } from '../kernel/context.js';
import type { ConflictPriority } from '../kernel/priority.js';

/** The shapes a promotion works with (promote.ts runs the steps; see there for what promotion does). */

export interface PromotedTable {
  entity: string;
  table: string;
  partition: string;
  rows: number;
  checksum: string;
  /** Staging rows of the release not promoted (exact duplicates, keep 1, delete both). */
  skipped: number;
  autoResolved: number;
}

export interface AutoResolvedItem {
  entity: string;
  /** The shared identity, e.g. `email=a@x`. */
  key: string;
  pk: string;
  /** The earlier release whose identical row master keeps. */
  release: string;
  rule: 'exact-duplicate';
}

export interface AppliedDecision {
  code: string;
  entity: string;
  key: string;
  action: Decision['action'];
  effect: string;
}

/** Master rows of earlier releases deleted by decisions (keep 2, delete both). */
export type Replaced = { entity: string; release: string; pk: string }[];

export interface PromoteResult {
  release: string;
  env: string;
  /** The promote run whose decisions were applied (null when there were no cross-release conflicts). */
  runId: number | null;
  tables: PromotedTable[];
  autoResolved: { total: number; items: AutoResolvedItem[] };
  decisions: AppliedDecision[];
  /** Master rows of earlier releases deleted by decisions (keep 2, delete both). */
  replaced: Replaced;
  ms: number;
}

export type Progress = (step: string, info?: Record<string, unknown>) => void;

export type Query = (sql: string, params?: unknown[]) => Promise<pg.QueryResult>;

export interface Column {
  name: string;
  type: string;
  notNull: boolean;
}

/** One entity's promotion: its new partition, and what detection and decisions did to it. */
export interface Work {
  e: EntitySpec;
  parent: string;
  part: string;
  partQ: string;
  staging: string;
  columns: Column[];
  skipped: Set<string>;
  /** staging pk → new column values (text), as applied to the new partition. */
  patches: Map<string, Record<string, string>>;
  /** new pk → staging pk, for rows given a new key. */
  pkOrig: Map<string, string>;
  autoResolved: AutoResolvedItem[];
  autoCount: number;
  decisions: AppliedDecision[];
  freshKey?: (pk: string, owner: string) => string;
}

/** A release row and a master row of another release sharing an identity key. */
export interface Pair {
  spk: string;
  mpk: string;
  mrel: string;
  shash: string;
  mhash: string;
  keys: string[];
}

export interface Known extends ConflictRow {
  params: Decision | null;
}

/** What reviewers decided so far: the latest conflict per pair of rows; decided delete-both by staging row. */
export interface KnownDecisions {
  latest: Map<string, Known>;
  standingDelete: Map<string, Known>;
}

/** A conflict to record (or keep open) when the promotion is refused. */
export interface Blocking {
  entity: string;
  identity: string;
  keyLabel: string;
  priority: ConflictPriority;
  detail: ConflictDetail;
  /** An open conflict of the same rows (kept, its detail refreshed); else a new one is created. */
  existing?: Known;
}

/**
 * One promotion's connections to staging (`source`, one read-only snapshot) and master (`target`, one
 * transaction; `m` queries it), and where it is: the env and table an error names.
 */
export interface Session {
  ctx: Ctx;
  release: string;
  /** The release tag column. */
  rel: string;
  staging: EnvSpec;
  master: EnvSpec;
  source: pg.Client;
  target: pg.Client;
  m: Query;
  at: { env: EnvSpec; table: string };
  progress?: Progress;
}

/** What cross-release detection gathers over every entity of the release. */
export interface Outcome {
  byEntity: Map<string, Work>;
  blocking: Blocking[];
  issues: string[];
  /** `entity\0identity` of every differing pair found (an open conflict no longer found is dropped). */
  detected: Set<string>;
  replaced: Replaced;
}

/** One entity's detection: its pairs and the rows of those that differ, as the cells' texts. */
export interface Scope {
  s: Session;
  out: Outcome;
  w: Work;
  /** The columns left out of the comparison (kernel/entities.ts nonPayloadColumns). */
  excl: string[];
  /** The columns compared. */
  payload: Column[];
  /** The pairs by the release row's key, in key order. */
  bySpk: Map<string, Pair[]>;
  sdata: Map<string, Record<string, unknown>>;
  /** master rows by `release|pk`. */
  mdata: Map<string, Record<string, unknown>>;
  /** Release keys whose children follow another key (master's row, or the row's new key). */
  mapping: Map<string, string>;
}

/** A differing pair whose decision still applies (the rows unchanged since). */
export interface Decided {
  p: Pair;
  k: Known;
  d: Decision;
}
