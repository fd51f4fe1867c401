import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { resolveAuditKey } from '../../../src/config/auditKey.js';
import { loadConfig } from '../../../src/config/load.js';
import { openDatabase } from '../../../src/db/connect.js';
import { eventHash, recordAudit } from '../../../src/engine/kernel/audit.js';
import { auditSummary, releaseEvents, verifyChain } from '../../../src/engine/report/auditTrail.js';
import { currentRunId } from '../../../src/engine/kernel/workArea.js';
import { consolidate } from '../../../src/engine/consolidate/run.js';
import { applyDecision } from '../../../src/engine/review/decide.js';
import { resultCounts } from '../../../src/engine/report/status.js';
import { tagRelease } from '../../../src/engine/gate/tag.js';
import { TributaryError } from '../../../src/errors.js';
import { renderAuditMarkdown, renderAuditSummary } from '../../../src/views/audit.js';
import { configDoc, insertAccounts, insertTransactions, insertUsers, ROOT, TEST_AUDIT_KEY, testEnv, type TestEnv } from '../../helpers.js';
import { cli, output } from '../../process.js';

/**
 * The audit trail: hash-chained with a key that never reaches the database, so that someone who can
 * write the table (simulated here: the superuser disables the append-only trigger) cannot alter,
 * remove or reorder events unnoticed, nor remove the newest ones once a head was witnessed.
 */
let env: TestEnv;
const by = { actor: 'U_ALICE', rationale: 'checked with the feature owner' };

async function flow(e: TestEnv): Promise<void> {
  // C-001 P1 core-conflict (dana), C-002 P1 dangling reference; plus an exact duplicate resolved by rule
  await insertUsers(e, 'st1', [{ id: 1, email: 'dana@x', role: 'Administrator', feature: 'FEAT-C' }, { id: 5, email: 'same@x' }]);
  await insertUsers(e, 'st2', [{ id: 2, email: 'dana@x', role: 'Customer' }, { id: 6, email: 'same@x' }]);
  await insertAccounts(e, 'st1', [{ id: 11, number: 'AC-1', user_id: 1 }]);
  await insertTransactions(e, 'st1', [{ id: 40, account_id: 999 }]);
  await tagRelease(e.ctx, 'R2', { actor: 'cli:test' });
  await consolidate(e.ctx, 'R2', { actor: 'cli:test' });
  await applyDecision(e.ctx, 'R2', 'C-001', { action: 'keep', version: 1 }, by);
}

/** What an attacker with write access does: the append-only trigger off, a change, the trigger on. */
async function tamper(e: TestEnv, ...statements: string[]): Promise<void> {
  await e.sql('alter table audit_events disable trigger audit_events_no_update');
  try {
    for (const s of statements) await e.sql(s);
  } finally {
    await e.sql('alter table audit_events enable trigger audit_events_no_update');
  }
}

async function rows(e: TestEnv): Promise<{ id: number; seq: number; action: string; prev_hash: string | null; hash: string }[]> {
  return e.db.control('audit_events').orderBy('seq').select('id', 'seq', 'action', 'prev_hash', 'hash');
}

beforeEach(async () => {
  env = await testEnv(2);
  await flow(env);
});
afterEach(async () => {
  await env?.close();
});

describe('audit trail', () => {
  it('a tag, consolidate and decide flow leaves one intact chain; the summary counts and times each step', async () => {
    const chain = await rows(env);
    expect(chain.map((r) => r.action)).toEqual(['gate.lock', 'consolidate.start', 'consolidate.finish', 'consolidate.auto-resolutions', 'decision']);
    chain.forEach((r, i) => {
      expect(r.seq).toBe(i + 1);
      expect(r.prev_hash).toBe(i === 0 ? null : chain[i - 1]!.hash);
      expect(r.hash).toMatch(/^[0-9a-f]{64}$/);
    });
    const report = await verifyChain(env.db.control, { release: 'R2' });
    expect(report).toMatchObject({ intact: true, events: 5, releaseEvents: 5, unchained: 0, broken: null });
    expect(report.head).toMatchObject({ seq: 5, hash: chain[4]!.hash });

    const runId = await currentRunId(env.ctx, 'R2');
    const counts = await resultCounts(env.ctx, runId);
    const s = await auditSummary(env.ctx, 'R2');
    expect(s.counts).toMatchObject({ collected: counts.collected, conflicts: counts.conflicts, autoResolved: counts.autoResolved, manual: 2, final: counts.final, merged: counts.merged, renamed: 0, deleted: 0 });
    expect(s.counts!.autoResolvedPct + s.counts!.manualPct).toBeCloseTo(100, 0);
    for (const step of ['collection', 'detection', 'resolution'] as const) expect(s.steps[step].status).toBe('done');
    expect(s.steps.review).toMatchObject({ status: 'in progress', note: '1 of 2 decided' });
    expect(s.steps.validation).toEqual({ status: 'not run yet', ms: null });
    expect(s.steps.loading).toEqual({ status: 'not run yet', ms: null });
    expect(s.head!.hash).toBe(chain[4]!.hash);

    // later steps record their time as audit events; the review ends with the last decision
    await applyDecision(env.ctx, 'R2', 'C-002', { action: 'waive' }, by);
    await recordAudit(env.db.control, { actor: 'cli:test', action: 'validate.finish', release: 'R2', details: { runId, ms: 1234 } });
    await recordAudit(env.db.control, { actor: 'cli:test', action: 'load.finish', release: 'R2', subject: 'staging', details: { runId, ms: 61_000 } });
    const after = await auditSummary(env.ctx, 'R2');
    expect(after.steps.review).toMatchObject({ status: 'done', note: '2 of 2 decided' });
    expect(after.steps.validation).toEqual({ status: 'done', ms: 1234 });
    expect(after.steps.loading).toEqual({ status: 'done', ms: 61_000 });
    expect(after.head!.seq).toBe(8);

    const text = renderAuditSummary(after);
    for (const label of ['total records collected', 'conflicts detected', 'auto-resolved', 'manual review', 'final dataset', 'merged', 'renamed', 'deleted']) expect(text).toContain(label);
    expect(text).toContain('time: validation');
    expect(text).toContain('1.23s');
    expect(text).toContain('1m 01s');
    expect(text).toContain(`chain head (witness)`);
    expect(text).toContain(after.head!.hash);
    const md = renderAuditMarkdown(s);
    expect(md).toContain('| metric | value |');
    expect(md).toContain('| time: loading | not run yet |');
    expect((await releaseEvents(env.db.control, 'R2')).map((e) => e.action)).toEqual([
      'gate.lock', 'consolidate.start', 'consolidate.finish', 'consolidate.auto-resolutions', 'decision', 'decision', 'validate.finish', 'load.finish',
    ]);
    expect(await verifyChain(env.db.control, { release: 'R2' })).toMatchObject({ intact: true, events: 8 });
  });

  it('an event rolled back with its transaction leaves no trace in the chain', async () => {
    await expect(
      env.db.control.transaction(async (trx) => {
        await recordAudit(trx, { actor: 'cli:test', action: 'doomed', release: 'R2' });
        throw new Error('rolled back');
      }),
    ).rejects.toThrow('rolled back');
    const appended = await recordAudit(env.db.control, { actor: 'cli:test', action: 'after', release: 'R2' });
    expect(appended.seq).toBe(6);
    expect(await verifyChain(env.db.control)).toMatchObject({ intact: true, events: 6 });
  });

  it('detects an updated row, even one re-hashed without the key', async () => {
    const decision = (await rows(env)).find((r) => r.action === 'decision')!;
    await tamper(env, `update audit_events set details = jsonb_set(details, '{rationale}', '"nobody checked"') where id = ${decision.id}`);
    const report = await verifyChain(env.db.control, { release: 'R2' });
    expect(report.intact).toBe(false);
    expect(report.broken).toMatchObject({ kind: 'altered', seq: decision.seq, id: decision.id });
    expect(report.broken!.message).toContain(`event #${decision.seq}`);
    expect(report.events).toBe(decision.seq - 1);

    // the attacker knows the format, not the key: a hash computed with any other key does not match
    const row = (await env.sql(`select seq, to_char(at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as at, actor, action, release, subject, details, prev_hash from audit_events where id = ${decision.id}`)).rows[0];
    const forged = eventHash('guessed-key-0123456789', { seq: row.seq, at: row.at, actor: row.actor, action: row.action, release: row.release, subject: row.subject, details: row.details, prevHash: row.prev_hash });
    await tamper(env, `update audit_events set hash = '${forged}' where id = ${decision.id}`);
    expect((await verifyChain(env.db.control)).broken).toMatchObject({ kind: 'altered', seq: decision.seq });

    // the CLI says so with exit code 3
    const r = await cli(['--config', env.configFile, 'audit', 'verify', 'R2']);
    expect(r.code, output(r)).toBe(3);
    expect(r.stdout).toContain(`Audit chain BROKEN at event #${decision.seq}`);
    expect(r.stdout).toContain('was altered');
  });

  it('detects a deleted row', async () => {
    const [, second] = await rows(env);
    await tamper(env, `delete from audit_events where id = ${second!.id}`);
    const report = await verifyChain(env.db.control);
    expect(report.intact).toBe(false);
    expect(report.broken).toMatchObject({ kind: 'missing', seq: 2 });
    expect(report.broken!.message).toMatch(/event #2 is missing/);
  });

  it('detects reordered rows: swapped ids, or swapped contents', async () => {
    const [, b, , d] = await rows(env);
    // the rows swap places (every column moves with the id)
    await tamper(env, `update audit_events set id = -1 where id = ${b!.id}`, `update audit_events set id = ${b!.id} where id = ${d!.id}`, `update audit_events set id = ${d!.id} where id = -1`);
    const report = await verifyChain(env.db.control);
    expect(report.intact).toBe(false);
    expect(report.broken).toMatchObject({ kind: 'reordered' });
    expect(report.broken!.message).toContain('out of order');

    // put them back: intact again; then swap only what the events say, leaving ids, positions and hashes
    await tamper(env, `update audit_events set id = -1 where id = ${b!.id}`, `update audit_events set id = ${b!.id} where id = ${d!.id}`, `update audit_events set id = ${d!.id} where id = -1`);
    expect((await verifyChain(env.db.control)).intact).toBe(true);
    await tamper(
      env,
      `update audit_events t set actor = s.actor, action = s.action, subject = s.subject, details = s.details, at = s.at
         from audit_events s where (t.id, s.id) in ((${b!.id}, ${d!.id}), (${d!.id}, ${b!.id}))`,
    );
    expect((await verifyChain(env.db.control)).broken).toMatchObject({ kind: 'altered', seq: 2 });
  });

  it('the chain vouches for the automatic resolutions: one changed, added or removed since is caught through the digest its event carries', async () => {
    const event = (await rows(env)).find((r) => r.action === 'consolidate.auto-resolutions')!;
    const runId = await currentRunId(env.ctx, 'R2');
    const [auto] = await env.db.control('auto_resolutions').where({ run_id: runId }).orderBy('code').select('code', 'detail');
    expect(auto!.code).toBe('A-001');
    await env.db.control('auto_resolutions').where({ run_id: runId, code: 'A-001' }).update({ detail: JSON.stringify({ ...auto!.detail, kept: { env: 'ST-2', pk: '6', key: '6', version: 1 } }) });
    const report = await verifyChain(env.db.control, { release: 'R2' });
    expect(report.intact).toBe(false);
    expect(report.broken).toMatchObject({ kind: 'altered', seq: event.seq, id: event.id });
    expect(report.broken!.message).toMatch(/automatic resolutions of R2's run #\d+ were altered/);
    await env.db.control('auto_resolutions').where({ run_id: runId, code: 'A-001' }).update({ detail: JSON.stringify(auto!.detail) });
    expect((await verifyChain(env.db.control, { release: 'R2' })).intact).toBe(true);
    await env.db.control('auto_resolutions').where({ run_id: runId, code: 'A-001' }).delete();
    expect((await verifyChain(env.db.control, { release: 'R2' })).broken!.message).toContain('0 recorded now, 1 then');
  });

  it('the newest rows deleted are caught against the witnessed head', async () => {
    const witnessed = (await auditSummary(env.ctx, 'R2')).head!;
    const older = (await rows(env))[1]!;
    await recordAudit(env.db.control, { actor: 'cli:test', action: 'note', release: 'R2' });
    // a head witnessed earlier is still in the grown chain
    expect(await verifyChain(env.db.control, { head: older.hash })).toMatchObject({ intact: true, witness: { found: true, seq: 2, since: 4 } });

    await tamper(env, `delete from audit_events where seq >= ${witnessed.seq}`);
    // what is left is a consistent chain: only the witness shows that its end was cut off
    expect((await verifyChain(env.db.control)).intact).toBe(true);
    const report = await verifyChain(env.db.control, { head: witnessed.hash });
    expect(report.intact).toBe(false);
    expect(report.broken).toMatchObject({ kind: 'witness' });
    expect(report.broken!.message).toContain('is not in the chain');

    const [cut, ok] = await Promise.all([
      cli(['--config', env.configFile, 'audit', 'verify', 'R2', '--head', witnessed.hash]),
      cli(['--config', env.configFile, 'audit', 'verify', 'R2', '--head', older.hash]),
    ]);
    expect(cut.code, output(cut)).toBe(3);
    expect(cut.stdout).toContain('witnessed head');
    expect(ok.code, output(ok)).toBe(0);
    expect(ok.stdout).toContain('Audit chain intact');
  });

  it('two writers appending at once from two processes keep one linear chain', async () => {
    const before = (await rows(env)).length;
    const writers = ['a', 'b'].map((name) => {
      const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'test/engine/kernel/audit-writer.ts'), env.configFile, name, '50'], {
        cwd: ROOT,
        env: { PATH: process.env.PATH, TRIBUTARY_AUDIT_KEY: TEST_AUDIT_KEY },
        stdio: ['pipe', 'pipe', 'pipe'],
      });
      let out = '';
      let err = '';
      const ready = new Promise<void>((resolve) => child.stdout.on('data', (d: Buffer) => ((out += d.toString()), out.startsWith('ready\n') && resolve())));
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      const done = new Promise<{ start: number; end: number }>((resolve, reject) =>
        child.on('close', (code) => (code === 0 ? resolve(JSON.parse(out.split('\n')[1]!)) : reject(new Error(`writer ${name} exited ${code}: ${out}\n${err}`)))),
      );
      return { child, ready, done };
    });
    await Promise.all(writers.map((w) => w.ready));
    for (const w of writers) w.child.stdin.write('go\n');
    const [a, b] = await Promise.all(writers.map((w) => w.done));
    expect(a!.start < b!.end && b!.start < a!.end, 'the two writers ran at the same time').toBe(true);

    const chain = await rows(env);
    expect(chain).toHaveLength(before + 100);
    expect(chain.map((r) => r.seq)).toEqual(Array.from({ length: before + 100 }, (_, i) => i + 1));
    expect(new Set(chain.map((r) => r.prev_hash)).size).toBe(chain.length);
    const appended = await env.db.control('audit_events').where({ action: 'test.append' }).orderBy('seq').select('actor');
    expect(appended.filter((r) => r.actor === 'writer:a')).toHaveLength(50);
    expect(appended.filter((r) => r.actor === 'writer:b')).toHaveLength(50);
    expect(await verifyChain(env.db.control, { release: 'R2' })).toMatchObject({ intact: true, events: before + 100, releaseEvents: before + 100 });
  });

  it('the key never appears in the table or in any output', async () => {
    await recordAudit(env.db.control, { actor: 'cli:test', action: 'note', release: 'R2', details: { error: `connection failed with key ${TEST_AUDIT_KEY}` } });
    const stored = await env.sql(`select count(*)::int as n from audit_events where audit_events::text like '%${TEST_AUDIT_KEY}%'`);
    expect(stored.rows[0].n).toBe(0);
    expect((await env.db.control('audit_events').where({ action: 'note' }).first()).details).toEqual({ error: 'connection failed with key ***' });
    expect((await verifyChain(env.db.control)).intact).toBe(true);

    const head = (await auditSummary(env.ctx, 'R2')).head!.hash;
    const runs = await Promise.all([
      cli(['--config', env.configFile, 'audit', 'R2']),
      cli(['--config', env.configFile, 'audit', 'R2', '--format', 'markdown']),
      cli(['--config', env.configFile, 'audit', 'R2', '--format', 'json']),
      cli(['--config', env.configFile, '--json', 'audit', 'verify', 'R2', '--head', head]),
      cli(['--config', env.configFile, 'audit', 'verify', 'R2'], { env: { LOG_LEVEL: 'trace' } }),
    ]);
    for (const r of runs) {
      expect(r.code, output(r)).toBe(0);
      expect(r.stdout + r.stderr).not.toContain(TEST_AUDIT_KEY);
    }
    const [text, md, json, verify] = runs;
    expect(text!.stdout).toContain('total records collected');
    expect(text!.stdout).toMatch(new RegExp(`chain head \\(witness\\) +#6 ${head}`));
    expect(md!.stdout).toContain('| manual review | 2 (');
    const exported = JSON.parse(json!.stdout);
    expect(exported.summary.head.hash).toBe(head);
    expect(exported.events).toHaveLength(6);
    expect(exported.events[5]).toMatchObject({ action: 'note', seq: 6, hash: head });
    expect(exported.events[3].action).toBe('consolidate.auto-resolutions');
    expect(exported.autoResolutions).toHaveLength(exported.events[3].details.count);
    expect(exported.autoResolutions.length).toBeGreaterThan(0);
    expect(JSON.parse(verify!.stdout)).toMatchObject({ intact: true, witness: { found: true, since: 0 } });
  });

  it('a missing key is a clear start-up error on a real server; the embedded one generates its own', async () => {
    const config = loadConfig({ file: env.configFile, env: {} });
    const err = await openDatabase(config).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(TributaryError);
    expect((err as TributaryError).code).toBe('config_invalid');
    expect((err as TributaryError).message).toMatch(/^TRIBUTARY_AUDIT_KEY is not set: .*docs\/operations\.md, "The audit trail and its key"/);
    const short = loadConfig({ file: env.configFile, env: { TRIBUTARY_AUDIT_KEY: 'short' } });
    expect(() => resolveAuditKey(short)).toThrow(/TRIBUTARY_AUDIT_KEY is too short/);

    const r = await cli(['--config', env.configFile, 'audit', 'R2'], { env: { TRIBUTARY_AUDIT_KEY: '' } });
    expect(r.code, output(r)).toBe(2);
    expect(r.stderr).toContain('TRIBUTARY_AUDIT_KEY is not set');

    // embedded (no database.url): a key generated once into the data directory, private to its owner
    const doc = configDoc(env.database, 2);
    doc.database = { dataDir: 'data/pg' };
    const file = path.join(env.dir, 'embedded.yml');
    fs.writeFileSync(file, stringify(doc));
    const embedded = loadConfig({ file, env: {} });
    const first = resolveAuditKey(embedded);
    expect(first).toMatchObject({ source: 'generated', file: path.join(env.dir, 'data/pg/audit.key') });
    expect(fs.statSync(first.file!).mode & 0o777).toBe(0o600);
    expect(first.key.length).toBeGreaterThanOrEqual(32);
    expect(resolveAuditKey(embedded)).toEqual({ ...first, source: 'file' });
    // the environment's key wins
    expect(resolveAuditKey(loadConfig({ file, env: { TRIBUTARY_AUDIT_KEY: TEST_AUDIT_KEY } }))).toEqual({ key: TEST_AUDIT_KEY, source: 'env' });
  });
});
