import type { Knex } from 'knex';
import type { Config } from '../config/load.js';
import { openDatabase } from '../db/connect.js';
import { migrationSource } from '../db/migrations.js';
import { controlOwnership } from '../db/owner.js';
import { leastPrivilegeSql } from '../db/grants.js';
import { recordAudit } from '../engine/kernel/audit.js';
import { TributaryError } from '../errors.js';
import type { Io } from '../commands/io.js';
import type { Parsed } from '../commands/table.js';

/**
 * `tributary migrate [--down --yes]`: only the owner of the control tables migrates (the app role of a
 * least-privilege set-up is refused, audited); a roll-back first says what it would drop (tables with
 * their row counts, the audit trail's events, columns) and needs --yes. `tributary grants <app-role>`
 * prints (or with --apply runs) the SQL of that set-up.
 */
interface DroppedTable {
  table: string;
  rows: number;
}

interface RollbackPlan {
  migrations: string[];
  tables: DroppedTable[];
  columns: string[];
  /** Events of the audit trail dropped with it (null: the trail stays). */
  auditEvents: number | null;
}

const ROLLED_BACK = new Error('plan only');

async function shape(db: Knex | Knex.Transaction): Promise<Map<string, Set<string>>> {
  const res = await db.raw<{ rows: { t: string; c: string }[] }>(
    `select case when table_schema = current_schema() then table_name else table_schema || '.' || table_name end as t, column_name as c
       from information_schema.columns where table_schema in (current_schema(), 'work')`,
  );
  const m = new Map<string, Set<string>>();
  for (const r of res.rows) (m.get(r.t) ?? m.set(r.t, new Set()).get(r.t)!).add(r.c);
  return m;
}

/** What rolling back the last batch drops: found by running its down steps in a transaction rolled back. */
async function planRollback(db: Knex): Promise<RollbackPlan> {
  const batch = (await db('knex_migrations').max('batch as b').first()) as { b: number | null } | undefined;
  if (!batch?.b) return { migrations: [], tables: [], columns: [], auditEvents: null };
  const migrations = (await db('knex_migrations').where('batch', batch.b).orderBy('id', 'desc').select('name')).map((r: { name: string }) => r.name);
  const before = await shape(db);
  let after = before;
  try {
    await db.transaction(async (trx) => {
      for (const name of migrations) await (await migrationSource.getMigration(name)).down!(trx);
      after = await shape(trx);
      throw ROLLED_BACK;
    });
  } catch (err) {
    if (err !== ROLLED_BACK) throw err;
  }
  const tables: DroppedTable[] = [];
  const columns: string[] = [];
  for (const [table, cols] of before) {
    const left = after.get(table);
    if (!left) {
      const n = await db.raw<{ rows: { n: string }[] }>(`select count(*) as n from ${table.split('.').map((p) => `"${p}"`).join('.')}`);
      tables.push({ table, rows: Number(n.rows[0]!.n) });
    } else for (const c of cols) if (!left.has(c)) columns.push(`${table}.${c}`);
  }
  const audit = tables.find((t) => t.table === 'audit_events');
  return { migrations, tables: tables.sort((a, b) => a.table.localeCompare(b.table)), columns, auditEvents: audit ? audit.rows : null };
}

function renderRollbackPlan(p: RollbackPlan): string {
  if (p.migrations.length === 0) return 'Nothing to roll back.';
  const lines = [`Rolling back ${p.migrations.join(', ')} drops:`];
  for (const t of p.tables) lines.push(`  table ${t.table} (${t.rows.toLocaleString('en-US')} rows)${t.table === 'audit_events' ? ': the audit trail' : ''}`);
  for (const c of p.columns) lines.push(`  column ${c}`);
  if (p.auditEvents !== null) lines.push(`The audit trail goes with it: ${p.auditEvents} event(s), and the next command starts an empty one.`);
  return lines.join('\n');
}

async function refuseUnlessOwner(db: Knex, actor: string): Promise<void> {
  const own = await controlOwnership(db);
  if (own.isOwner) return;
  const message = `migrate needs the owner of the control tables (${own.owner}); connected as ${own.user}: run it with the owner role's credentials (docs/operations.md, "Least privilege")`;
  await recordAudit(db, { actor, action: 'auth.refused', subject: 'migrate', details: { needed: `owner:${own.owner}`, connectedAs: own.user } });
  throw new TributaryError('forbidden', message, { owner: own.owner, user: own.user });
}

/** `tributary migrate [--down --yes]`. */
export async function migrateRun(config: Config, p: Parsed, io: Io): Promise<void> {
  const db = await openDatabase(config, { migrate: false });
  try {
    await refuseUnlessOwner(db.control, io.actor);
    if (!p.flags.down) {
      const [batch, names] = (await db.control.migrate.latest({ migrationSource })) as [number, string[]];
      return io.out({ batch, migrations: names }, () => `applied: ${names.length ? names.join(', ') : 'nothing to do'}`);
    }
    const plan = await planRollback(db.control);
    if (!p.flags.yes) throw new TributaryError('unconfirmed', `${renderRollbackPlan(plan)}\nNothing was done: add --yes to roll back.`, { plan });
    if (plan.migrations.length > 0) await recordAudit(db.control, { actor: io.actor, action: 'migrate.down', details: { ...plan } });
    const [batch, names] = (await db.control.migrate.rollback({ migrationSource })) as [number, string[]];
    io.out({ batch, migrations: names, dropped: plan }, () => `rolled back: ${names.length ? names.join(', ') : 'nothing to do'}\n${renderRollbackPlan(plan)}`);
  } finally {
    await db.close();
  }
}

/** `tributary grants <app-role> [--apply]`. */
export async function grantsRun(config: Config, p: Parsed, io: Io): Promise<void> {
  const app = p.args['app-role']!;
  const db = await openDatabase(config, { migrate: false });
  try {
    const own = await controlOwnership(db.control);
    if (!own.owner) throw new TributaryError('usage', 'the control database has no tables yet: run `tributary migrate` as the owner role first, then grants');
    if (own.owner === app) throw new TributaryError('usage', `${app} owns the control tables: the app role must be another role`);
    const sql = leastPrivilegeSql({ owner: own.owner, app, database: db.controlParams.database });
    if (p.flags.apply) await db.control.transaction((trx) => trx.raw(sql));
    io.out({ owner: own.owner, app, sql, applied: !!p.flags.apply }, () => (p.flags.apply ? `Applied: ${app} has least privilege on ${db.controlParams.database} (owner ${own.owner}).` : sql));
  } finally {
    await db.close();
  }
}
