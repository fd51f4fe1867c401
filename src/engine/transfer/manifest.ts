import { FORMATS, type PackageManifest, type PackageTable } from '../kernel/package.js';
import type { UserType } from '../kernel/types.js';
import type { AuditEventView } from '../report/index.js';

/** The transfer package's manifest (manifest.json), signed by the cloud side's key (kernel/package.ts). */
export const TRANSFER_FORMAT = FORMATS.transfer;

/** A table of the package (kernel/package.ts's shape): counts and checksums from the cloud's control database. */
export interface TransferTable extends PackageTable {
  columns: { name: string; type: string; notNull: boolean; num: number }[];
  primaryKey: string[];
  types: UserType[];
}

export interface LineageFile {
  file: string;
  rows: number;
  columns: string[];
}

/** A travelled audit event, exactly as the cloud's chain holds it (at: ISO UTC with microseconds). */
export type TravelledEvent = AuditEventView;

export interface TransferManifest extends PackageManifest {
  release: string;
  createdAt: string;
  createdBy: string;
  /** The cloud's consolidation run: a package is accepted only for a later run than staging holds. */
  run: {
    id: number;
    startedBy: string;
    startedAt: string;
    finishedAt: string | null;
    steps: Record<string, unknown>;
    counts: Record<string, unknown>;
  };
  /** The release tag column of the tables. */
  releaseTag: string;
  tables: TransferTable[];
  /** What `why` needs on premises: the work area's records, result and key map, and the conflicts and decisions. */
  lineage: {
    records: LineageFile;
    result: LineageFile;
    keyMap: LineageFile;
    /** The rules' resolutions (A-codes), when the cloud side records them. */
    autoResolutions?: LineageFile;
    conflicts: Record<string, unknown>[];
    decisions: Record<string, unknown>[];
  };
  /** The release's audit events and the chain head at export (its hash witnesses every event before it). */
  audit: { events: TravelledEvent[]; head: { seq: number; id: number; hash: string; at: string } | null };
}

/**
 * The lineage tables as they travel and as the on-premises work area holds them (what `why`, `audit` and
 * `result` read): the records without their cells (staging holds the rows), the result's provenance, the
 * key map. The result's `rule` and `reason` are the automatic resolutions.
 */
const K = 'text collate "C"';
export const LINEAGE_COLUMNS: Record<'records' | 'result' | 'keyMap' | 'autoResolutions', [string, string][]> = {
  records: [
    ['entity', K], ['env', K], ['env_rank', 'int'], ['pk', K], ['identity', K], ['feature', K],
    ['created_by', 'text'], ['created_at', 'text'],
  ],
  result: [
    ['entity', K], ['identity', K], ['pk', K], ['sources', 'jsonb'], ['rule', 'text'], ['reason', 'text'], ['conflict', 'text'],
    ['status', 'text'], ['rep_env', K], ['rep_pk', K], ['feature', K],
  ],
  keyMap: [['entity', K], ['env', K], ['old_pk', K], ['new_pk', K]],
  autoResolutions: [
    ['release', 'text'], ['code', 'text'], ['entity', 'text'], ['identity', 'text'], ['key_label', 'text'],
    ['rule', 'text'], ['reason', 'text'], ['detail', 'jsonb'],
  ],
};
