import type { ConnectionParams } from '../../db/connect.js';

/** What collect.ts hands its child process (collect-child.ts), and what the child reports back. */
export interface ChildEnvPlan {
  env: string;
  source: ConnectionParams;
  entities: { entity: string; table: string; sourceSql: string }[];
  /** An entity of the plan without a lock: refused before reading (the gate). */
  unlocked?: string;
}

export interface ChildPlan {
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
