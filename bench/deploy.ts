import fs from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import { stringify } from 'yaml';
import { loadConfig } from '../src/config/load.js';
import { openDatabase, paramsFromUrl } from '../src/db/connect.js';
import { createBundle, backupData, dataChecksums, deployData, restoreData } from '../src/engine/deploy/index.js';
import { logger } from '../src/log.js';
import { RELEASE, runBench, withScratch } from './dataset.js';

/**
 * `npm run bench:deploy [-- --quick | --rows N]`: the built-in data deployer on a data package of
 * 1,000,000 rows (users and accounts of release R2, bundled from a partitioned master), into production
 * tables that already hold as many rows of the earlier release R1. Measured in one run on the same
 * server (BENCH_DATABASE_URL, or an embedded PostgreSQL), against the baseline of a plain COPY of the
 * same rows into the same tables (rolled back, then vacuumed away):
 *   - data deploy (backup + load + verify) ≤ 3 × baseline
 *   - rollback's restore + verify ≤ 2 × baseline
 * and the restored tables' checksums must equal those before the deploy.
 */

const TARGETS = { deploy: 3, restore: 2 };
const TABLES = ['users', 'accounts'];

function options() {
  const { values } = parseArgs({ options: { quick: { type: 'boolean', default: false }, rows: { type: 'string' } }, strict: true });
  const rows = values.rows === undefined ? (values.quick ? 20_000 : 1_000_000) : Number(values.rows.replace(/_/g, ''));
  if (!Number.isInteger(rows) || rows < 10) throw new Error(`not an integer ≥ 10: ${values.rows}`);
  return { rows, quick: values.quick };
}

const COLUMNS = {
  users: `id int not null, email text, username text, name text, role text, phone text, city text, updated_at timestamptz,
    release text not null, feature text, created_by text, created_at timestamptz`,
  accounts: `id int not null, number text, user_id int, currency text, balance numeric(12,2),
    release text not null, feature text, created_by text, created_at timestamptz`,
};

/**
 * Master: users and accounts partitioned by release, R1 and R2 with `rows` rows each (40 % users);
 * production: plain tables like staging's (primary key id) holding R1's rows.
 */
async function generate(url: string, rows: number): Promise<void> {
  const c = new pg.Client(paramsFromUrl(url));
  c.on('error', () => undefined);
  await c.connect();
  try {
    const u = Math.round(rows * 0.4);
    const a = rows - u;
    await c.query('create schema st1; create schema master; create schema prod');
    for (const [t, cols] of Object.entries(COLUMNS)) {
      await c.query(`create table master.${t} (${cols}, primary key (id, release)) partition by list (release)`);
      for (const r of ['R1', RELEASE]) await c.query(`create table master.${t}__${r.toLowerCase()} partition of master.${t} for values in ('${r}')`);
      await c.query(`create table prod.${t} (${cols.replace(/ not null/g, '')}, primary key (id))`);
    }
    // R1: ids 1…u / 1…a; R2: above them
    await c.query(`
      insert into master.users
      select g, 'user' || g || '@bench.test', 'user' || g, 'User ' || g, (array['Customer', 'Merchant', 'Admin'])[g % 3 + 1],
             case when g % 7 = 0 then null else '+1 555 ' || lpad(g::text, 7, '0') end, (array['Oslo', 'Lyon', 'Porto', 'Turku'])[g % 4 + 1],
             timestamptz '2024-01-10 09:00Z' + g * interval '1.5 second',
             case when g <= ${u} then 'R1' else '${RELEASE}' end, (array['FEAT-C', 'FEAT-H1', 'FEAT-H2', 'FEAT-M', 'FEAT-L'])[g % 5 + 1], 'qa',
             timestamptz '2024-01-10 09:00Z' + (g % 1440) * interval '1 minute'
        from generate_series(1, ${2 * u}) g`);
    await c.query(`
      insert into master.accounts
      select h, 'AC-' || h, case when h % 10 = 0 then null when h <= ${a} then (h - 1) % ${u} + 1 else ${u} + (h - 1) % ${u} + 1 end,
             (array['USD', 'EUR', 'NOK'])[h % 3 + 1], (h % 100000) / 100.0 + 0.5,
             case when h <= ${a} then 'R1' else '${RELEASE}' end, (array['FEAT-C', 'FEAT-H1', 'FEAT-H2', 'FEAT-M', 'FEAT-L'])[h % 5 + 1], 'qa',
             timestamptz '2024-01-10 09:00Z' + (h % 1440) * interval '1 minute'
        from generate_series(1, ${2 * a}) h`);
    for (const t of TABLES) await c.query(`insert into prod.${t} select * from master.${t} where release = 'R1'`);
    await c.query('vacuum analyze');
    await c.query('checkpoint').catch(() => undefined);
  } finally {
    await c.end().catch(() => undefined);
  }
}

/** The baseline: COPY R2's rows from master into production's tables, nothing else; rolled back and vacuumed away. */
async function baseline(url: string): Promise<number> {
  const target = new pg.Client(paramsFromUrl(url));
  const source = new pg.Client(paramsFromUrl(url));
  await target.connect();
  await source.connect();
  try {
    await target.query('begin');
    const t0 = performance.now();
    for (const t of TABLES) {
      await pipeline(source.query(copyTo(`copy (select * from master.${t} where release = '${RELEASE}') to stdout`)), target.query(copyFrom(`copy prod.${t} from stdin`)));
    }
    const ms = performance.now() - t0;
    await target.query('rollback');
    await target.query(`vacuum analyze ${TABLES.map((t) => `prod.${t}`).join(', ')}`);
    return ms;
  } finally {
    await target.end();
    await source.end();
  }
}

/** Per step durations from the data deployer's progress calls (a step lasts until the next one starts). */
function steps() {
  const marks: [string, number][] = [];
  return {
    progress: (step: string, info: { table: string }) => void marks.push([`${step} ${info.table}`, performance.now()]),
    text(end: number): string {
      const out = marks.map(([name, at], i) => `${name} ${((((marks[i + 1]?.[1] ?? end) - at) / 1000)).toFixed(2)}`);
      marks.length = 0;
      return out.join(', ');
    },
  };
}

async function main(): Promise<void> {
  logger().level = 'warn';
  const opts = options();
  await withScratch('deploy', async ({ server, url, dir, defer }) => {
    console.log(`Tributary data deploy benchmark on ${server.label}`);
    await generate(url, opts.rows);
    const file = path.join(dir, 'tributary.yml');
    fs.writeFileSync(
      file,
      stringify({
        database: { url },
        releases: { [RELEASE]: { features: { 'FEAT-C': { priority: 'critical', owner: 'alice' } } } },
        environments: { 'ST-1': { role: 'source', precedence: 1, schema: 'st1' }, master: { role: 'master', schema: 'master' }, production: { role: 'production', schema: 'prod' } },
        dataset: {
          entities: {
            users: { primaryKey: 'id', naturalKeys: ['email'] },
            accounts: { primaryKey: 'id', naturalKeys: ['number'], references: [{ column: 'user_id', entity: 'users' }] },
          },
        },
      }),
    );
    const config = loadConfig({ file, env: { TRIBUTARY_AUDIT_KEY: 'bench-audit-key-0123456789' } });
    const db = await openDatabase(config);
    defer(() => db.close());
    const ctx = { config, db };
    const actor = 'cli:bench';
    await db.control('release_states').insert({ release: RELEASE, state: 'approved' });

    const tb = performance.now();
    const bundle = await createBundle(ctx, RELEASE, { code: 'bench-1', actor });
    const bundleMs = performance.now() - tb;
    const packageRows = bundle.tables.reduce((n, t) => n + t.rows, 0);
    const bytes = bundle.tables.reduce((n, t) => n + t.bytes, 0);

    const baseBefore = await baseline(url);
    const before = await dataChecksums(ctx, 'production', TABLES);

    const st = steps();
    const t0 = performance.now();
    const backup = await backupData(ctx, bundle, { actor, progress: st.progress });
    const backupMs = performance.now() - t0;
    const backupSteps = st.text(performance.now());
    const t1 = performance.now();
    const deployed = await deployData(ctx, bundle, backup, { actor, progress: st.progress });
    const loadMs = performance.now() - t1;
    const loadSteps = st.text(performance.now());
    const during = await dataChecksums(ctx, 'production', TABLES);

    const t2 = performance.now();
    const restored = await restoreData(ctx, backup, { actor, progress: st.progress });
    const restoreMs = performance.now() - t2;
    const restoreSteps = st.text(performance.now());
    const after = await dataChecksums(ctx, 'production', TABLES);
    const identical = JSON.stringify(after) === JSON.stringify(before);
    if (!identical) throw new Error(`production after the restore differs from before the deploy: ${JSON.stringify({ before, after })}`);
    // the baseline again, after: the mean of the two (a shared machine's load drifts during a run)
    const baseAfter = await baseline(url);
    const baseMs = (baseBefore + baseAfter) / 2;

    const s = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
    const n = (x: number) => x.toLocaleString('en-US');
    console.log(`package:  ${n(packageRows)} rows of ${RELEASE} (${bundle.tables.map((t) => `${t.table} ${n(t.rows)}`).join(', ')}), ${(bytes / 1e6).toFixed(1)} MB gzip; production holds ${n(before.reduce((x, t) => x + t.rows, 0))} rows of R1`);
    console.log(`bundle    export from master + checksums (not in the ratios)     ${s(bundleMs)}`);
    console.log(`baseline  plain COPY of the same rows into the same tables       ${s(baseMs)}   (mean of ${s(baseBefore)} before and ${s(baseAfter)} after)`);
    console.log(`deploy    backup (copies + checksums before)                     ${s(backupMs)}   (${backupSteps})`);
    console.log(`deploy    load (delete, COPY from the bundle) + verify           ${s(loadMs)}   (${loadSteps}; ${deployed.tables.map((t) => `${t.table} ${n(t.rows)}`).join(', ')})`);
    console.log(`rollback  restore + verify                                       ${s(restoreMs)}   (${restoreSteps})`);
    console.log('');
    console.log('table      rows before   checksum before       during deploy         after restore');
    for (const [i, b] of before.entries()) {
      console.log(`${b.table.padEnd(10)} ${n(b.rows).padStart(11)}   ${b.checksum.padEnd(20)}  ${during[i]!.checksum.padEnd(20)}  ${after[i]!.checksum}${after[i]!.checksum === b.checksum ? '  (equal)' : ''}`);
    }
    console.log(`restored tables identical to before the deploy: ${identical && restored.tables.every((t) => t.before.checksum === t.after.checksum) ? 'yes' : 'NO'}`);
    console.log('');
    const deployRatio = (backupMs + loadMs) / baseMs;
    const restoreRatio = restoreMs / baseMs;
    // the targets are for the full size; at the quick size the fixed costs (connections, snapshot, audit) dominate
    const verdict = (v: number, target: number) => (opts.quick ? '(judged at 1,000,000 rows)' : v <= target ? 'PASS' : 'MISS');
    const line = (name: string, v: number, target: number) => console.log(`${name.padEnd(44)} ${v.toFixed(2).padEnd(7)} ≤ ${target}     ${verdict(v, target)}`);
    console.log(`${'figure'.padEnd(44)} value   target`);
    line('data deploy (backup + load + verify) / COPY', deployRatio, TARGETS.deploy);
    line('rollback (restore + verify) / COPY', restoreRatio, TARGETS.restore);
  });
}

runBench('deploy', main);
