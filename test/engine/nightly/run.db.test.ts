import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { paramsFromUrl } from '../../../src/db/connect.js';
import { archiveReleases, parseAge, restoreRelease } from '../../../src/engine/nightly/archive.js';
import { tableChecksum } from '../../../src/engine/kernel/checksum.js';
import { coverageGrowth } from '../../../src/engine/nightly/coverage.js';
import { catalogTests, learnTests, selectTests } from '../../../src/engine/tiers/catalog.js';
import { decideProposal, proposePruning } from '../../../src/engine/nightly/prune.js';
import { claimSlot, executeNightly, NIGHTLY_LOCK, runNightlyNow } from '../../../src/engine/nightly/run.js';
import { NO_RELEASE, type NightlySummary } from '../../../src/engine/nightly/summary.js';
import { coverageChartPng } from '../../../src/views/coverageChart.js';
import { renderNightly } from '../../../src/views/nightly.js';
import { ROOT, testEnv, urlFor, type TestEnv } from '../../helpers.js';
import { cli, output } from '../../process.js';

/**
 * The nightly regression on a real PostgreSQL with the fake test runner: the summary against the
 * previous night (new regressions, fixed, flaky, per release, trend), runs never overlapping, coverage
 * growth with its chart as a real PNG, archive and restore of a release partition (checksums equal), and
 * pruning that never happens without the owner's confirmation.
 */
const RUNNER = path.join(ROOT, 'test/fixtures/fake-runner.mjs');
const SUITE = ['login works @FEAT-C', 'profile edit @FEAT-M', 'service answers @smoke', 'R1 statements @FEAT-OLD', 'R1 export @FEAT-OLD', 'old fax one @FEAT-GONE', 'old fax two @FEAT-GONE'];

let env: TestEnv;
let behaviour: string;
const behave = (results: Record<string, string> = {}) => {
  fs.writeFileSync(behaviour, JSON.stringify({ suite: SUITE, results }));
  fs.rmSync(`${behaviour}.count`, { force: true, recursive: true });
};

beforeAll(async () => {
  behaviour = path.join(fs.mkdtempSync(path.join(process.env.TMPDIR ?? '/tmp', 'tributary-nightly-')), 'behaviour.json');
  behave();
  env = await testEnv(1, {
    releases: {
      R0: { features: { 'FEAT-ZERO': { priority: 'low', owner: 'U0ZOE' } } },
      R1: { features: { 'FEAT-OLD': { priority: 'high', owner: 'U0ZOE' }, 'FEAT-GONE': { priority: 'low', owner: 'U0FAX', deprecated: true } } },
      R2: { features: { 'FEAT-C': { priority: 'critical', owner: 'U0ALICE' }, 'FEAT-M': { priority: 'medium', owner: 'dan' } } },
    },
    nightly: { schedule: '0 2 * * *', timezone: 'Europe/Berlin', channel: 'C_NIGHT', nights: 5 },
    testing: { command: `node ${RUNNER} {tests} {junit} ${behaviour}`, agents: 2, shards: 2, timeoutSeconds: 30, reportDir: 'reports' },
    archive: { dir: 'cold' },
  });
  // master as promotion leaves it: users partitioned by release, R0 promoted three years ago
  await env.sql(`drop table master.transactions, master.accounts, master.users`);
  await env.sql(`create table master.users (id int not null, email text, name text, balance numeric(12,2), seen timestamptz, tags jsonb, release text not null, feature text,
                   primary key (id, release)) partition by list (release)`);
  await env.sql(`create table master.accounts (id int not null, number text, user_id int, release text not null, primary key (id, release)) partition by list (release)`);
  for (const [r, n] of [['R0', 300], ['R1', 120], ['R2', 50]] as const) {
    const slug = r.toLowerCase();
    await env.sql(`create table master.users__${slug} partition of master.users for values in ('${r}')`);
    await env.sql(`create table master.accounts__${slug} partition of master.accounts for values in ('${r}')`);
    await env.sql(
      `insert into master.users select i, 'u' || i || '@x.io', case when i % 7 = 0 then null else 'Tab\t"quoted" \\ back' || i end, (i * 1.25)::numeric(12,2),
              timestamptz '2024-03-31 01:30:00+00' + i * interval '1 hour', jsonb_build_object('n', i), '${r}', 'F' from generate_series(1, ${n}) i`,
    );
    await env.sql(`insert into master.accounts select i, 'AC-' || i, i, '${r}' from generate_series(1, ${Math.floor(n / 2)}) i`);
    const ago = r === 'R0' ? `interval '3 years'` : r === 'R1' ? `interval '1 year'` : `interval '1 day'`;
    for (const t of ['users', 'accounts']) {
      await env.db.control('promotions').insert({ release: r, env: 'master', entity: t, table_name: t, partition_name: `${t}__${slug}`, row_count: 0, checksum: '0', promoted_by: 'cli:test', promoted_at: env.db.control.raw(`now() - ${ago}`) });
    }
  }
});

afterAll(async () => {
  await env?.close();
});

const actor = 'cli:qa';

describe('the nightly run', () => {
  it('compares each night with the previous scheduled night (never a manual run), agreeing with the run\'s classes; trend and flaky per night', async () => {
    const night = async (day: number) => {
      const slot = { key: `2025-12-0${day}T02:00:00[Europe/Berlin]`, at: new Date(`2025-12-0${day}T01:00:00Z`) };
      const row = await claimSlot(env.ctx, 'nightly', slot, 'schedule');
      const o = await executeNightly(env.ctx, row!, actor);
      expect(o.row.status).toBe('done');
      return o;
    };
    // the post and the run's classes and gate say the same: same baseline, same new regressions
    const agrees = async (s: NightlySummary) => {
      const run = await env.db.control('test_runs').where({ id: s.runId }).first();
      expect(run.baseline_run_id).toBe(s.previousRunId);
      const classes = await env.db.control('test_results').where({ run_id: s.runId }).whereIn('class', ['new-regression', 'fixed']).orderBy('name').select('name', 'class');
      expect(classes.filter((c) => c.class === 'new-regression').map((c) => c.name)).toEqual(s.newRegressions.items.map((r) => r.name));
      expect(classes.filter((c) => c.class === 'fixed').map((c) => c.name)).toEqual(s.fixed.items.map((r) => r.name));
      expect(s.reasons.some((r) => r.includes('new regression'))).toBe(s.newRegressions.count > 0);
    };

    behave({ 'R1 export @FEAT-OLD': 'fail' });
    const n1 = await night(1);
    expect(n1.row.release).toBe('R2');
    const s1 = n1.summary!;
    // the deprecated feature's tests are left out of the nightly run
    expect(s1.totals).toMatchObject({ total: 5, passed: 4, passRate: 80 });
    expect(s1.previousRunId).toBeNull();
    expect(s1.newRegressions.count).toBe(0);
    await agrees(s1);

    // a manual run in between: compared with the last scheduled night, but never anyone's previous night
    behave({ 'R1 export @FEAT-OLD': 'fail', 'profile edit @FEAT-M': 'fail' });
    const m = (await runNightlyNow(env.ctx, actor)).summary!;
    expect(m.previousRunId).toBe(s1.runId);
    expect(m.newRegressions.items.map((r) => r.name)).toEqual(['profile edit @FEAT-M']);
    expect(m.trend.points.map((p) => p.runId)).toEqual([s1.runId, m.runId]);
    await agrees(m);

    behave({ 'R1 statements @FEAT-OLD': 'fail', 'login works @FEAT-C': 'fail', 'R1 export @FEAT-OLD': 'fail' });
    const s2 = (await night(2)).summary!;
    expect(s2.previousRunId).toBe(s1.runId);
    expect(s2.totals).toMatchObject({ total: 5, passed: 2, failed: 3, passRate: 40 });
    expect(s2.newRegressions.count).toBe(2);
    expect(s2.newRegressions.items.map((r) => [r.name, r.releases])).toEqual([
      ['R1 statements @FEAT-OLD', ['R1']],
      ['login works @FEAT-C', ['R2']],
    ]);
    // profile edit failed only in the manual run: not "fixed" since the previous night
    expect(s2.fixed.count).toBe(0);
    expect(s2.perRelease).toEqual([
      { release: 'R1', total: 2, passed: 0, failed: 2, skipped: 0, passRate: 0, newRegressions: 1 },
      { release: 'R2', total: 2, passed: 1, failed: 1, skipped: 0, passRate: 50, newRegressions: 1 },
      { release: NO_RELEASE, total: 1, passed: 1, failed: 0, skipped: 0, passRate: 100, newRegressions: 0 },
    ]);
    expect(s2.trend.points.map((p) => p.runId)).toEqual([s1.runId, s2.runId]);
    expect(renderNightly(s2)).toContain('new regression: login works @FEAT-C [R2]');
    await agrees(s2);

    behave({ 'R1 statements @FEAT-OLD': 'fail' });
    const s3 = (await night(3)).summary!;
    expect(s3.previousRunId).toBe(s2.runId);
    expect(s3.newRegressions.count).toBe(0);
    // login: pass, fail, pass is a regression then a fix, not flakiness (that takes three flips)
    expect(s3.fixed.items.map((r) => r.name)).toEqual(['R1 export @FEAT-OLD', 'login works @FEAT-C']);
    await agrees(s3);

    behave({ 'login works @FEAT-C': 'fail' });
    const s4 = (await night(4)).summary!;
    expect(s4.previousRunId).toBe(s3.runId);
    // login: pass, fail, pass, fail over the nights: flaky (as its class says), not a new regression
    expect(s4.newRegressions.count).toBe(0);
    expect(await env.db.control('test_results').where({ run_id: s4.runId, name: 'login works @FEAT-C' }).first('class')).toEqual({ class: 'flaky' });
    // the leaderboard over the nights (the manual run is not one): login 3 flips; statements' 2 (a
    // regression, then a fix) do not make it flaky
    expect(s4.flaky.nights).toBe(4);
    expect(s4.flaky.items.map((f) => [f.name, f.flips, f.failures])).toEqual([['login works @FEAT-C', 3, 2]]);
    // one point per night: 80, 40, 80, 80 (the manual run's 60 is not a night)
    expect(s4.trend.points.map((p) => p.passRate)).toEqual([80, 40, 80, 80]);
    expect(s4.trend.avg7).toBe(70);
    expect(s4.trend.avg30).toBe(70);
    expect(s4.trend.nights30).toBe(4);
    await agrees(s4);
    const text = renderNightly(s4);
    expect(text).toContain('pass rate 80%');
    expect(text).toContain('1. login works @FEAT-C: 3 flip(s)');
    const audit = await env.db.control('audit_events').where({ action: 'nightly.finish' });
    expect(audit).toHaveLength(5);
  });

  it('never overlaps: refused while another process holds the nightly lock; a slot is claimed once', async () => {
    const other = new pg.Client(paramsFromUrl(urlFor(env.database)));
    await other.connect();
    try {
      await other.query('select pg_advisory_lock(hashtext($1))', [NIGHTLY_LOCK]);
      await expect(runNightlyNow(env.ctx, actor)).rejects.toThrow(/a nightly run is in progress.*runs never overlap/);
    } finally {
      await other.end();
    }
    // a night whose process died two nights ago is not caught up: the newer slot claimed supersedes it
    const [dead] = await env.db.control('nightly_runs').insert({ kind: 'nightly', slot: '2025-12-30T02:00:00[Europe/Berlin]', scheduled_for: new Date('2025-12-30T01:00:00Z'), trigger: 'schedule', claimed_by: 'gone:1' }).returning('*');
    const slot = { key: '2026-01-01T02:00:00[Europe/Berlin]', at: new Date('2026-01-01T01:00:00Z') };
    const first = await claimSlot(env.ctx, 'nightly', slot, 'schedule');
    expect(await env.db.control('nightly_runs').where({ id: dead.id }).first()).toMatchObject({ status: 'failed', error: `interrupted: the process running it stopped; superseded by ${slot.key}` });
    expect(first).not.toBeNull();
    await env.db.control('nightly_runs').where({ id: first!.id }).update({ status: 'done' });
    expect(await claimSlot(env.ctx, 'nightly', slot, 'catch-up')).toBeNull();
    expect(await env.db.control('nightly_runs').where({ slot: slot.key })).toHaveLength(1);
  });
});

describe('coverage growth', () => {
  it('cumulates tests (feature → release by the plan) and master records per release, and draws a real PNG', async () => {
    const c = await coverageGrowth(env.ctx);
    expect(c.rows.map((r) => [r.release, r.tests, r.cumulativeTests, r.records, r.cumulativeRecords])).toEqual([
      ['R0', 0, 0, 450, 450],
      ['R1', 4, 4, 180, 630],
      ['R2', 2, 6, 75, 705],
    ]);
    const png = coverageChartPng(c, { width: 800, height: 400 });
    expect([...png.subarray(0, 8)]).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    expect(png.subarray(12, 16).toString('latin1')).toBe('IHDR');
    expect(png.readUInt32BE(16)).toBe(800);
    expect(png.readUInt32BE(20)).toBe(400);
    expect(png.length).toBeGreaterThan(5000);
  });
});

describe('the CLI', () => {
  it('tributary coverage writes the chart; bad options are usage errors naming the option', async () => {
    const chart = path.join(env.dir, 'coverage.png');
    const [cov, age, now] = await Promise.all([
      cli(['-c', env.configFile, 'coverage', '--chart', chart]),
      cli(['-c', env.configFile, 'archive', '--older-than', 'soon']),
      cli(['-c', env.configFile, 'nightly']),
    ]);
    expect(cov.code, output(cov)).toBe(0);
    expect(cov.stdout).toMatch(/release\s+tests\s+cumulative tests\s+records\s+cumulative records\nR0\s+0\s+0\s+450\s+450/);
    expect(fs.readFileSync(chart).subarray(1, 4).toString('latin1')).toBe('PNG');
    expect(age.code, output(age)).toBe(2);
    expect(age.stderr).toContain('--older-than takes an age such as 2y, 18mo, 8w, 90d or 12h (got "soon")');
    expect(now.code, output(now)).toBe(2);
    expect(now.stderr).toContain('tributary nightly --now');
  });
});

describe('archive and restore', () => {
  it('parses ages and names the option', () => {
    expect(parseAge('2y')).toBe(2 * 365.25 * 86_400_000);
    expect(parseAge('18mo')).toBe(18 * 30 * 86_400_000);
    expect(() => parseAge('two years')).toThrow('--older-than takes an age such as 2y');
  });

  it('moves R0 to cold storage with a manifest and brings it back with equal checksums', async () => {
    const master = env.config.envs.get('master')!;
    const before = {
      users: await tableChecksum(env.db.env(master), 'master', 'users__r0'),
      accounts: await tableChecksum(env.db.env(master), 'master', 'accounts__r0'),
    };
    expect(before.users.rows).toBe(300);

    const dry = await archiveReleases(env.ctx, { olderThan: '2y', actor, dryRun: true });
    expect(dry.archived.map((a) => [a.release, a.rows, a.tables.map((t) => t.rows)])).toEqual([['R0', 450, [300, 150]]]);
    expect((await env.sql(`select to_regclass('master.users__r0') as t`)).rows[0].t).not.toBeNull();
    // the CLI says what it would archive and drop, and does nothing without --yes
    const unconfirmed = await cli(['-c', env.configFile, 'archive', '--older-than', '2y']);
    expect(unconfirmed.code, output(unconfirmed)).toBe(2);
    expect(unconfirmed.stderr).toContain('R0 (promoted');
    expect(unconfirmed.stderr).toContain('would be archived, then dropped from master (450 rows)');
    expect(unconfirmed.stderr).toMatch(/master\.users__r0: 300 rows/);
    expect(unconfirmed.stderr).toContain('Nothing was done: add --yes');
    expect((await env.sql(`select to_regclass('master.users__r0') as t`)).rows[0].t).not.toBeNull();

    const r = await archiveReleases(env.ctx, { olderThan: '2y', actor });
    expect(r.archived.map((a) => a.release)).toEqual(['R0']);
    expect(r.kept.map((k) => k.release)).toEqual(['R1', 'R2']);
    const a = r.archived[0]!;
    expect(a.manifest.startsWith(path.join(env.dir, 'cold'))).toBe(true);
    const manifest = JSON.parse(fs.readFileSync(a.manifest, 'utf8'));
    expect(manifest.tables.map((t: { table: string; rows: number; checksum: string }) => [t.table, t.rows, t.checksum])).toEqual([
      ['users', 300, before.users.checksum],
      ['accounts', 150, before.accounts.checksum],
    ]);
    const gz = fs.readFileSync(path.join(path.dirname(a.manifest), 'users.copy.gz'));
    expect([gz[0], gz[1]]).toEqual([0x1f, 0x8b]);
    expect((await env.sql(`select to_regclass('master.users__r0') as t`)).rows[0].t).toBeNull();
    expect((await env.sql(`select count(*)::int as n from master.users`)).rows[0].n).toBe(170);
    // coverage still counts the archived records
    const c = await coverageGrowth(env.ctx);
    expect(c.rows[0]).toMatchObject({ release: 'R0', archived: true, records: 450 });

    const back = await restoreRelease(env.ctx, 'R0', { actor });
    expect(back.rows).toBe(450);
    const after = {
      users: await tableChecksum(env.db.env(master), 'master', 'users__r0'),
      accounts: await tableChecksum(env.db.env(master), 'master', 'accounts__r0'),
    };
    expect(after).toEqual(before);
    // attached again, under the primary key, and the parent sees its rows
    const bound = await env.sql(`select pg_get_expr(c.relpartbound, c.oid) as b from pg_class c where c.oid = 'master.users__r0'::regclass`);
    expect(bound.rows[0].b).toBe(`FOR VALUES IN ('R0')`);
    const idx = await env.sql(`select indexdef from pg_indexes where schemaname = 'master' and tablename = 'users__r0'`);
    expect(idx.rows.map((x) => x.indexdef).join()).toMatch(/UNIQUE INDEX .* \(id, release\)/);
    expect((await env.sql(`select count(*)::int as n from master.users where release = 'R0'`)).rows[0].n).toBe(300);
    const events = (await env.db.control('audit_events').whereIn('action', ['archive.release', 'archive.restored']).orderBy('seq')).map((e) => e.action);
    expect(events).toEqual(['archive.release', 'archive.restored']);
    await expect(restoreRelease(env.ctx, 'R0', { actor, manifest: a.manifest })).rejects.toThrow(/R0 is in master already/);
  });

  it('refuses to restore from a damaged file or manifest, touching nothing', async () => {
    const r = await archiveReleases(env.ctx, { olderThan: '2y', actor });
    const manifest = r.archived[0]!.manifest;
    const file = path.join(path.dirname(manifest), 'accounts.copy.gz');
    const good = fs.readFileSync(file);
    fs.writeFileSync(file, Buffer.concat([good, Buffer.from([0])]));
    await expect(restoreRelease(env.ctx, 'R0', { actor })).rejects.toThrow(/accounts\.copy\.gz: altered: its SHA-256 [0-9a-f]{16}… \(\d+ bytes\) is not the manifest's/);
    fs.writeFileSync(file, good);
    const m = JSON.parse(fs.readFileSync(manifest, 'utf8'));
    const original = JSON.stringify(m, null, 2);
    delete m.tables[0].checksum;
    fs.writeFileSync(manifest, JSON.stringify(m));
    await expect(restoreRelease(env.ctx, 'R0', { actor })).rejects.toThrow(`${manifest}: tables[0].checksum: missing`);
    // a checksum that does not match what comes back: rolled back
    const wrong = JSON.parse(original);
    wrong.tables[0].checksum = '12345';
    fs.writeFileSync(manifest, JSON.stringify(wrong));
    await expect(restoreRelease(env.ctx, 'R0', { actor })).rejects.toThrow(/has 300 rows, checksum \d+, but the manifest .* says 300 rows, checksum 12345: nothing restored/);
    expect((await env.sql(`select to_regclass('master.users__r0') as t`)).rows[0].t).toBeNull();
    fs.writeFileSync(manifest, original);
    expect((await restoreRelease(env.ctx, 'R0', { actor })).rows).toBe(450);
  });

  it('refuses a cell corrupted in flight (the real CLI, failpoints archive.copy / restore.copy=corrupt): names the table, never says verified, master as it was', async () => {
    const master = env.config.envs.get('master')!;
    const before = await tableChecksum(env.db.env(master), 'master', 'users__r0');
    const archives = await env.db.control('archives').count<{ count: string }[]>('* as count');
    const cold = () => (fs.existsSync(path.join(env.dir, 'cold')) ? fs.readdirSync(path.join(env.dir, 'cold')).sort() : []);
    // archives of R0 already made in the seconds the failing one runs in: the failure must not remove them
    const t0 = Date.now();
    for (let i = 0; i <= 20; i++) {
      const earlier = path.join(env.dir, 'cold', `R0-${new Date(t0 + i * 1000).toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')}`);
      fs.mkdirSync(earlier, { recursive: true });
      fs.writeFileSync(path.join(earlier, 'keep'), 'an earlier archive');
    }
    const dirs = cold();
    const a = await cli(['-c', env.configFile, 'archive', '--older-than', '2y', '--yes'], { env: { TRIBUTARY_FAILPOINTS: 'archive.copy=corrupt' } });
    expect(a.code, output(a)).not.toBe(0);
    expect(a.stderr).toMatch(/archive of R0: master env master, table master\.users__r0: the file written does not hold the rows as the source sent them \(300 line\(s\) written; the source sent 300 row\(s\) and counted 300, and their text differs\); nothing was written/);
    expect(`${a.stdout}${a.stderr}`).not.toMatch(/verified/i);
    expect(await tableChecksum(env.db.env(master), 'master', 'users__r0')).toEqual(before);
    expect(cold()).toEqual(dirs);
    expect(await env.db.control('archives').count<{ count: string }[]>('* as count')).toEqual(archives);

    const ok = await cli(['-c', env.configFile, 'archive', '--older-than', '2y', '--yes']);
    expect(ok.code, output(ok)).toBe(0);
    const r = await cli(['-c', env.configFile, 'restore', 'R0'], { env: { TRIBUTARY_FAILPOINTS: 'restore.copy=corrupt' } });
    expect(r.code, output(r)).not.toBe(0);
    expect(r.stderr).toMatch(/restore of R0: "master"\."users__r0" has 300 rows, checksum \d+, but the manifest .* says 300 rows, checksum \d+: nothing restored/);
    expect(`${r.stdout}${r.stderr}`).not.toMatch(/verified/i);
    expect((await env.sql(`select to_regclass('master.users__r0') as t`)).rows[0].t).toBeNull();
    const back = await cli(['-c', env.configFile, 'restore', 'R0']);
    expect(back.code, output(back)).toBe(0);
    expect(await tableChecksum(env.db.env(master), 'master', 'users__r0')).toEqual(before);
  });
});

describe('pruning tests of deprecated features', () => {
  it('proposes, but removes nothing until the feature owner confirms', async () => {
    const catalog = async () => (await env.db.control('test_catalog').orderBy('test_id').pluck('name')) as string[];
    const all = await catalog();
    expect(all).toContain('old fax one @FEAT-GONE');

    const [p] = await proposePruning(env.ctx, { actor: 'scheduler' });
    expect(p).toMatchObject({ feature: 'FEAT-GONE', owner: 'U0FAX', status: 'proposed' });
    expect(p!.tests.map((t) => t.name)).toEqual(['old fax one @FEAT-GONE', 'old fax two @FEAT-GONE']);
    expect(await catalog()).toEqual(all);

    await expect(decideProposal(env.ctx, p!.id, 'U0ZOE', 'prune')).rejects.toThrow('only the owner of FEAT-GONE (<@U0FAX>) can answer this proposal');
    expect(await catalog()).toEqual(all);
    expect(await env.db.control('audit_events').where({ action: 'prune.refused' })).toHaveLength(1);

    const kept = await decideProposal(env.ctx, p!.id, 'U0FAX', 'keep');
    expect(kept).toMatchObject({ removed: [], proposal: { status: 'kept', decidedBy: 'U0FAX' } });
    expect(await catalog()).toEqual(all);
    await expect(decideProposal(env.ctx, p!.id, 'U0FAX', 'prune')).rejects.toThrow(/already answered \(kept\) by U0FAX/);
    expect(await catalog()).toEqual(all);

    // next week's digest: a new proposal supersedes any unanswered one; only its confirmation prunes
    const [p2] = await proposePruning(env.ctx, { actor: 'scheduler' });
    const [p3] = await proposePruning(env.ctx, { actor: 'scheduler' });
    await expect(decideProposal(env.ctx, p2!.id, 'U0FAX', 'prune')).rejects.toThrow(/superseded/);
    expect(await catalog()).toEqual(all);
    const pruned = await decideProposal(env.ctx, p3!.id, 'U0FAX', 'prune');
    expect(pruned.removed.sort()).toEqual(p3!.tests.map((t) => t.id).sort());
    expect(await catalog()).toEqual(all.filter((n) => !n.includes('@FEAT-GONE')));
    expect(await env.db.control('audit_events').where({ action: 'tests.pruned' })).toHaveLength(1);

    // the runner keeps reporting the pruned tests (as skipped, not selected): they never come back
    fs.writeFileSync(behaviour, JSON.stringify({ suite: SUITE, reportUnselected: true }));
    const night = await runNightlyNow(env.ctx, actor);
    expect(night.row.status).toBe('done');
    const reported = (await env.db.control('test_results').where({ run_id: night.row.test_run_id }).pluck('name')) as string[];
    expect(reported).not.toContain('old fax one @FEAT-GONE');
    expect(await catalog()).toEqual(all.filter((n) => !n.includes('@FEAT-GONE')));
    expect(await learnTests(env.db.control, [{ id: p3!.tests[0]!.id, name: 'old fax one @FEAT-GONE', classname: 'test', status: 'passed', durationMs: 5, features: ['FEAT-GONE', 'FEAT-OLD'], smoke: false, properties: {} }])).toBe(0);
    expect(await catalog()).toEqual(all.filter((n) => !n.includes('@FEAT-GONE')));
    expect((await env.db.control('pruned_tests').orderBy('test_id')).map((r) => [r.name, r.feature, r.proposal_id, r.pruned_by])).toEqual([
      ['old fax one @FEAT-GONE', 'FEAT-GONE', p3!.id, 'U0FAX'],
      ['old fax two @FEAT-GONE', 'FEAT-GONE', p3!.id, 'U0FAX'],
    ]);
    // nor are they proposed again, nor selected
    expect((await proposePruning(env.ctx, { actor: 'scheduler' })).filter((x) => x.feature === 'FEAT-GONE')).toEqual([]);
    const sel = selectTests(env.config, await catalogTests(env.db.control), { tier: 'nightly', release: 'R2' });
    expect([...sel.tests, ...sel.deprecated].map((t) => t.name).filter((n) => n.includes('@FEAT-GONE'))).toEqual([]);
  });

  it('an owner that is not a Slack user id cannot confirm, so nothing is pruned', async () => {
    await env.db.control('test_catalog').insert({ test_id: 'test::m old', name: 'm old @FEAT-M', features: JSON.stringify(['FEAT-M']) });
    const ctx = { ...env.ctx, config: { ...env.config, releases: new Map(env.config.releases) } };
    const r2 = ctx.config.releases.get('R2')!;
    ctx.config.releases.set('R2', { ...r2, features: new Map([...r2.features].map(([k, f]) => [k, k === 'FEAT-M' ? { ...f, deprecated: true } : f])) });
    const [p] = await proposePruning(ctx, { actor: 'scheduler' });
    expect(p).toMatchObject({ feature: 'FEAT-M', owner: 'dan' });
    await expect(decideProposal(ctx, p!.id, 'U0ALICE', 'prune')).rejects.toThrow(/the owner of FEAT-M is "dan" .* not a Slack user id/);
    expect(await env.db.control('test_catalog').where({ test_id: 'test::m old' })).toHaveLength(1);
  });
});
