import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import { stringify } from 'yaml';
import { loadConfig } from '../src/config/load.js';
import { openDatabase, paramsFromUrl } from '../src/db/connect.js';
import { archiveReleases, restoreRelease, nightlySummary } from '../src/engine/nightly/index.js';
import { checksumSql, COLUMNS_SQL } from '../src/engine/kernel/checksum.js';
import { classifyRun } from '../src/engine/tiers/index.js';
import { logger } from '../src/log.js';
import { runBench, withScratch } from './dataset.js';

/**
 * `npm run bench:nightly [-- --quick | --nights N --tests T --rows R]`, two figures of one run:
 *   1. the nightly summary (new regressions and fixed against the previous night, the flaky leaderboard
 *      over the last nights, per release, the 7/30-night trend) over 30 nights × 10,000 tests of history,
 *      seeded set-based into test_runs/test_results: target < 1 s;
 *   2. archive (checksum + COPY out through gzip + manifest + detach/drop) and restore (COPY in through
 *      gunzip + checksum verified + attach) of a 1,000,000-row release partition, against a plain COPY
 *      out to a file and COPY in from it of the same rows, measured here: target ≤ 2×.
 * `--quick`: 30 nights × 2,000 tests and 100,000 rows.
 */

const TARGETS = { summaryMs: 1000, ratio: 2 };

function options() {
  const { values } = parseArgs({ options: { quick: { type: 'boolean', default: false }, nights: { type: 'string' }, tests: { type: 'string' }, rows: { type: 'string' } }, strict: true });
  const base = values.quick ? { nights: 30, tests: 2_000, rows: 100_000 } : { nights: 30, tests: 10_000, rows: 1_000_000 };
  const int = (v: string | undefined, d: number) => (v === undefined ? d : Number(v));
  return { nights: int(values.nights, base.nights), tests: int(values.tests, base.tests), rows: int(values.rows, base.rows), quick: values.quick };
}

const RELEASES = 8;
const FEATURES_PER_RELEASE = 5;

async function main(): Promise<void> {
  const o = options();
  logger().level = 'warn';
  await withScratch('nightly', async ({ server, url, dir }) => {
    const file = path.join(dir, 'tributary.yml');
    const releases: Record<string, unknown> = {};
    for (let r = 1; r <= RELEASES; r++) {
      const features: Record<string, unknown> = {};
      for (let f = 0; f < FEATURES_PER_RELEASE; f++) features[`FEAT-${r}${f}`] = { priority: 'medium', owner: 'qa' };
      releases[`R${r}`] = { features };
    }
    releases.R0 = { features: { 'FEAT-00': { priority: 'low', owner: 'qa' } } };
    fs.writeFileSync(
      file,
      stringify({
        database: { url },
        releases,
        environments: { 'ST-1': { role: 'source', precedence: 1, schema: 'st1' }, master: { role: 'master', schema: 'master' } },
        dataset: { entities: { users: { primaryKey: 'id' } } },
        archive: { dir: path.join(dir, 'cold') },
      }),
    );
    const config = loadConfig({ file, env: { ...process.env, TRIBUTARY_AUDIT_KEY: 'bench-audit-key-0123456789' } });
    const db = await openDatabase(config);
    const ctx = { config, db };
    try {
      // ---- 1. the nightly summary over the history ----
      const t0 = performance.now();
      await db.control.raw(
        `insert into test_runs (id, release, tier, env, status, started_by, started_at, finished_at, totals, gate)
         select n, 'R8', 'nightly', 'master', 'passed', 'bench', now() - (? - n) * interval '1 day', now() - (? - n) * interval '1 day' + interval '1 hour', '{}', '{"reasons": []}'
           from generate_series(1, ?) n`,
        [o.nights, o.nights, o.nights],
      );
      await db.control.raw(`select setval(pg_get_serial_sequence('test_runs', 'id'), ?)`, [o.nights]);
      // most tests pass; ~1% fail some nights, ~0.5% flip night to night, a few fail throughout
      await db.control.raw(
        `insert into test_results (run_id, test_id, name, shard, status, duration_ms, message, features, smoke, retried)
         select n, 'suite::test ' || t, 'test ' || t || ' @FEAT-' || (1 + t % ?) || (t / ? % ?), 1 + t % 8,
                case when t % 199 = 0 then 'failed'
                     when t % 211 = 0 and (n + t) % 2 = 0 then 'failed'
                     when hashtext(n::text || ':' || t) % 100 = 0 then 'failed'
                     when t % 97 = 0 then 'skipped'
                     else 'passed' end,
                t % 1000, null, jsonb_build_array('FEAT-' || (1 + t % ?) || (t / ? % ?)), t % 50 = 0, t % 307 = 0 and n % 3 = 0
           from generate_series(1, ?) n, generate_series(1, ?) t`,
        [RELEASES, RELEASES, FEATURES_PER_RELEASE, RELEASES, RELEASES, FEATURES_PER_RELEASE, o.nights, o.tests],
      );
      await db.control.raw(
        `update test_runs r set totals = jsonb_build_object('total', x.total, 'passed', x.passed, 'failed', x.failed, 'errored', 0, 'skipped', x.skipped,
                                                          'passRate', round(100.0 * x.passed / nullif(x.total - x.skipped, 0), 2))
           from (select run_id, count(*) as total, count(*) filter (where status = 'passed') as passed, count(*) filter (where status = 'failed') as failed,
                        count(*) filter (where status = 'skipped') as skipped from test_results group by run_id) x where x.run_id = r.id`,
      );
      // one scheduled night per run (the summary's nights), and the last run classified against the one before
      await db.control.raw(
        `insert into nightly_runs (kind, slot, scheduled_for, trigger, status, claimed_by, test_run_id, release, started_at, finished_at, posted_at)
         select 'nightly', to_char(r.started_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS') || '[UTC]', r.started_at, 'schedule', 'done', 'bench', r.id, 'R8', r.started_at, r.finished_at, r.finished_at
           from test_runs r`,
      );
      await db.control.raw('analyze test_runs');
      await db.control.raw('analyze test_results');
      await classifyRun(db.control, o.nights, o.nights - 1);
      const seedMs = performance.now() - t0;
      await nightlySummary(db.control, config, o.nights, { nights: 14 }); // warm-up (plans, caches)
      const times: number[] = [];
      let summary;
      for (let i = 0; i < 3; i++) {
        const s0 = performance.now();
        summary = await nightlySummary(db.control, config, o.nights, { nights: 14 });
        times.push(performance.now() - s0);
      }
      times.sort((a, b) => a - b);
      const summaryMs = times[1]!;
      if (!summary || summary.totals.total !== o.tests || summary.trend.points.length !== Math.min(30, o.nights)) throw new Error(`unexpected summary: ${JSON.stringify(summary?.totals)}`);

      // ---- 2. archive and restore of a release partition against plain COPY ----
      const admin = new pg.Client(paramsFromUrl(url));
      await admin.connect();
      await admin.query("set datestyle = 'ISO, YMD'; set intervalstyle = 'postgres'; set time zone 'UTC'");
      await admin.query('create schema master');
      await admin.query(`create table master.users (id int not null, email text, name text, balance numeric(12,2), created_at timestamptz, active boolean, release text not null, feature text,
                           primary key (id, release)) partition by list (release)`);
      await admin.query(`create table master.users__r0 partition of master.users for values in ('R0')`);
      await admin.query(`create table master.users__r1 partition of master.users for values in ('R1')`);
      const g0 = performance.now();
      await admin.query(
        `insert into master.users select i, 'user' || i || '@example.com', 'User number ' || i, (i % 100000) / 100.0, timestamptz '2023-01-01' + i * interval '1 minute', i % 3 = 0, 'R0', 'FEAT-00'
           from generate_series(1, $1) i`,
        [o.rows],
      );
      await admin.query(`insert into master.users select i, 'u' || i, 'n', 1, now(), true, 'R1', 'FEAT-10' from generate_series(1, 1000) i`);
      await admin.query('vacuum analyze master.users__r0');
      const genMs = performance.now() - g0;
      await db.control('promotions').insert([
        { release: 'R0', env: 'master', entity: 'users', table_name: 'users', partition_name: 'users__r0', row_count: o.rows, checksum: '0', promoted_by: 'bench', promoted_at: db.control.raw("now() - interval '3 years'") },
        { release: 'R1', env: 'master', entity: 'users', table_name: 'users', partition_name: 'users__r1', row_count: 1000, checksum: '0', promoted_by: 'bench', promoted_at: db.control.raw("now() - interval '1 day'") },
      ]);

      // the baseline: the same rows out to a file and back in, plain COPY (text), into a table with the same primary key
      const cols = 'id, email, name, balance, created_at, active, release, feature';
      const plainFile = path.join(dir, 'plain.copy');
      const b0 = performance.now();
      await pipeline(admin.query(copyTo(`copy (select ${cols} from master.users__r0) to stdout`)), fs.createWriteStream(plainFile));
      const copyOutMs = performance.now() - b0;
      await admin.query('create table master.plain_in (like master.users__r0 including all)');
      const b1 = performance.now();
      await pipeline(fs.createReadStream(plainFile), admin.query(copyFrom(`copy master.plain_in (${cols}) from stdin`)));
      const copyInMs = performance.now() - b1;
      // what verification costs: one checksum pass over the partition (archive makes one, restore one)
      const cols8 = (await admin.query(COLUMNS_SQL, ['master.users__r0'])).rows;
      await admin.query('set extra_float_digits = 1');
      const c0 = performance.now();
      await admin.query(checksumSql(cols8, 'master', 'users__r0', 'true'));
      const checksumMs = performance.now() - c0;
      await admin.query('drop table master.plain_in');
      const plainBytes = fs.statSync(plainFile).size;
      fs.rmSync(plainFile);

      const a0 = performance.now();
      const archived = await archiveReleases(ctx, { olderThan: '2y', actor: 'bench' });
      const archiveMs = performance.now() - a0;
      if (archived.archived.length !== 1 || archived.archived[0]!.rows !== o.rows) throw new Error(`archive: ${JSON.stringify(archived)}`);
      const r0 = performance.now();
      const restored = await restoreRelease(ctx, 'R0', { actor: 'bench' });
      const restoreMs = performance.now() - r0;
      if (restored.rows !== o.rows) throw new Error(`restore: ${JSON.stringify(restored)}`);
      const back = (await admin.query(`select count(*)::int as n from master.users where release = 'R0'`)).rows[0].n as number;
      if (back !== o.rows) throw new Error(`restored ${back} rows of ${o.rows}`);
      await admin.end();

      const ok = (pass: boolean) => (pass ? 'PASS' : 'MISS');
      const ratio = (archiveMs + restoreMs) / (copyOutMs + copyInMs);
      console.log(`bench:nightly on ${server.label}${o.quick ? ' (quick)' : ''}`);
      console.log(`  history: ${o.nights} nights × ${o.tests.toLocaleString('en-US')} tests = ${(o.nights * o.tests).toLocaleString('en-US')} results, seeded set-based in ${seedMs.toFixed(0)} ms`);
      console.log(`  nightly summary (regressions, fixed, flaky over 14 nights, ${summary.perRelease.length} releases, 7/30-night trend): ${summaryMs.toFixed(0)} ms median of 3 [${times.map((t) => t.toFixed(0)).join(', ')}] (target < ${TARGETS.summaryMs}: ${ok(summaryMs < TARGETS.summaryMs)})`);
      console.log(`    found ${summary.newRegressions.count} new regressions, ${summary.fixed.count} fixed, ${summary.flaky.items.length} flaky on the leaderboard, pass rate ${summary.totals.passRate}%`);
      console.log(`  partition: ${o.rows.toLocaleString('en-US')} rows (${(plainBytes / 1e6).toFixed(0)} MB as COPY text), generated in ${genMs.toFixed(0)} ms`);
      console.log(`  plain COPY out to a file ${copyOutMs.toFixed(0)} ms + COPY in (with its primary key) ${copyInMs.toFixed(0)} ms = ${(copyOutMs + copyInMs).toFixed(0)} ms`);
      console.log(`  archive ${archiveMs.toFixed(0)} ms (${(archiveMs / copyOutMs).toFixed(2)}× COPY out; ${(archived.archived[0]!.tables[0]!.bytes / 1e6).toFixed(1)} MB gzip) + restore ${restoreMs.toFixed(0)} ms (${(restoreMs / copyInMs).toFixed(2)}× COPY in), checksums verified = ${(archiveMs + restoreMs).toFixed(0)} ms`);
      console.log(`  archive + restore / plain COPY out + in: ${ratio.toFixed(2)}× (target ≤ ${TARGETS.ratio}: ${ok(ratio <= TARGETS.ratio)})`);
      console.log(`    of which verification: one checksum pass over the partition takes ${checksumMs.toFixed(0)} ms here (${os.cpus().length} CPU(s)); archive and restore each make one`);
    } finally {
      await db.close();
    }
  });
}

runBench('nightly', main);
