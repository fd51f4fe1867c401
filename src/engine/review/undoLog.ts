import type { Knex } from 'knex';
import { runTables, workTable } from '../kernel/workArea.js';

/**
 * A decision's undo log: while a decision applies, a row trigger on the run's result and key map
 * (work.undo_log(), from the migration 20261206130000) logs each row it inserts, updates or deletes,
 * with its key and its image before, under the conflict's id. Undo (undo.ts) puts those images back.
 */
export function undoTable(runId: number): string {
  return workTable(runId, 'undo');
}

async function ensureUndoLog(k: Knex.Transaction, runId: number): Promise<void> {
  const log = undoTable(runId);
  const exists = async () => (await k.raw<{ rows: { r: string | null }[] }>('select to_regclass(?)::text as r', [log])).rows[0]?.r;
  if (await exists()) return;
  // two first decisions at once: one installs it, the other waits and finds it
  await k.raw('select pg_advisory_xact_lock(hashtext(?))', [`tributary:undo-log:${runId}`]);
  if (await exists()) return;
  const t = runTables(runId);
  await k.raw(`create unlogged table ${log} (seq bigserial primary key, conflict_id int not null, tbl text not null, op char(1) not null,
                 row_key text not null, old jsonb)`);
  await k.raw(`create index on ${log} (conflict_id)`);
  await k.raw(`create index on ${log} (tbl, row_key)`);
  const arg = (s: string) => `'${s.replace(/'/g, "''")}'`;
  await k.raw(`create trigger undo_log after insert or update or delete on ${t.result}
                 for each row execute function work.undo_log(${arg(log)}, 'result', 'entity', 'identity')`);
  await k.raw(`create trigger undo_log after insert or update or delete on ${t.keyMap}
                 for each row execute function work.undo_log(${arg(log)}, 'key_map', 'entity', 'env', 'old_pk')`);
}

/** From here to stopUndoLog, in this transaction, the run's rows changed are logged under the conflict. */
export async function startUndoLog(k: Knex.Transaction, runId: number, conflictId: number): Promise<void> {
  await ensureUndoLog(k, runId);
  await k.raw(`select set_config('tributary.undo', ?, true)`, [String(conflictId)]);
}

export async function stopUndoLog(k: Knex.Transaction): Promise<void> {
  await k.raw(`select set_config('tributary.undo', '', true)`);
}
