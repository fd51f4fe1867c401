import type { ConnectionParams } from '../../db/connect.js';
import type { TableColumn } from '../kernel/checksum.js';

/** What collect.ts hands its child process (collect-child.ts), and what the child reports back. */
export interface ChildEnvPlan {
  env: string;
  source: ConnectionParams;
  entities: { entity: string; table: string; sourceSql: string; lockedColumns: TableColumn[] | null }[];
  /** An entity of the plan without a lock: refused before reading (the gate). */
  unlocked?: string;
}

export interface ChildPlan {
  release: string;
  target: ConnectionParams;
  copyIn: string;
  concurrency: number;
  envs: ChildEnvPlan[];
}

export interface ChildEnvResult {
  env: string;
  perEntity?: Record<string, number>;
  error?: { message: string; code?: string; tributary?: boolean };
}

/** The placeholder in sourceSql where the row hash expression (it needs the table's columns) goes. */
export const ROW_HASH = '/*ROW_HASH*/';


/** The placeholder in sourceSql where the row's cells as canonical texts (kernel/copy.ts) go. */
export const ROW_CELLS = '/*ROW_CELLS*/';

/**
 * What changed in a table since its lock (columns in name order, then and now), in words; null if nothing.
 */
export function shapeChange(then: TableColumn[], now: TableColumn[]): string | null {
  if (now.length === 0) return 'dropped since the lock';
  const before = new Map(then.map((c) => [c.name, c.type]));
  const after = new Map(now.map((c) => [c.name, c.type]));
  const changes = [
    ...then.filter((c) => !after.has(c.name)).map((c) => `column ${c.name} dropped`),
    ...now.filter((c) => !before.has(c.name)).map((c) => `column ${c.name} added`),
    ...now
      .filter((c) => before.has(c.name) && before.get(c.name) !== c.type)
      .map((c) => `column ${c.name} changed from ${before.get(c.name)} to ${c.type}`),
  ];
  return changes.length === 0 ? null : `reshaped since the lock: ${changes.join(', ')}`;
}
