import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { loadConfig } from '../../src/config/load.js';
import { openDatabase, type Db } from '../../src/db/connect.js';
import { seedDemo } from '../../src/demo/seed.js';
import { createDatabase, dropDatabase, ROOT, TEST_AUDIT_KEY, urlFor } from '../helpers.js';
import { cli, output, startCli, type CliResult } from '../process.js';

/**
 * The CLI end to end, as real processes, on the demo's data (five ST envs as schemas of one test
 * database, which is also the control database).
 */
const SECRET = 'S3cretPassw0rd';

let database: string;
let dir: string;
let configFile: string;
let secretConfigFile: string;
let db: Db;

function demoDoc(): Record<string, unknown> {
  const doc = parse(fs.readFileSync(path.join(ROOT, 'tributary.yml'), 'utf8')) as { database: unknown; environments: Record<string, Record<string, unknown>> };
  doc.database = { url: urlFor(database) };
  for (const e of Object.values(doc.environments)) delete e.database;
  return doc as unknown as Record<string, unknown>;
}

const run = (...args: string[]) => cli(['--config', configFile, ...args]);
/** The parsed --json output (any: the tests read it as the user's scripts would). */
const json = (r: CliResult) => JSON.parse(r.stdout);

beforeAll(async () => {
  database = await createDatabase();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tributary-cli-'));
  configFile = path.join(dir, 'tributary.yml');
  fs.writeFileSync(configFile, stringify(demoDoc()));
  const withSecret = demoDoc() as { environments: Record<string, unknown> };
  withSecret.environments['ST-9'] = { role: 'source', precedence: 9, url: '${ST9_DATABASE_URL}', schema: 'st9' };
  secretConfigFile = path.join(dir, 'secret.yml');
  fs.writeFileSync(secretConfigFile, stringify(withSecret));
  const config = loadConfig({ file: configFile, env: { TRIBUTARY_AUDIT_KEY: TEST_AUDIT_KEY } });
  db = await openDatabase(config);
  await seedDemo(config, db);
});

afterAll(async () => {
  await db?.close();
  if (database) await dropDatabase(database);
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe('tributary CLI', () => {
  it('exits 0 for help, 2 for usage and config errors', async () => {
    const [help, unknownRelease, typo, missingConfig, unknownCommand, unknownEnv, badConfig] = await Promise.all([
      cli(['--help']),
      run('status', 'R9'),
      run('rollback', 'r2', '--rationale', 'typo'),
      cli(['--config', path.join(dir, 'nope.yml'), 'status']),
      run('frobnicate'),
      run('tag', 'R2', '--env', 'ST-7'),
      (async () => {
        const file = path.join(dir, 'bad.yml');
        const doc = demoDoc() as { releases: { R2: { features: Record<string, { priority: string }> } } };
        doc.releases.R2.features['FEAT-101']!.priority = 'urgent';
        fs.writeFileSync(file, stringify(doc));
        return cli(['--config', file, '--json', 'status']);
      })(),
    ]);
    expect(help.code, output(help)).toBe(0);
    expect(help.stdout).toContain('consolidate');
    expect(help.stdout).toContain('decide');

    expect(unknownRelease.code, output(unknownRelease)).toBe(2);
    expect(unknownRelease.stderr).toBe('tributary: unknown release "R9": did you mean R1 or R2?\n');
    // a typo'd release is refused before anything is done, with the release meant
    expect(typo.code, output(typo)).toBe(2);
    expect(typo.stderr).toBe('tributary: unknown release "r2": did you mean R2?\n');
    expect(missingConfig.code, output(missingConfig)).toBe(2);
    expect(missingConfig.stderr).toContain('config file not found');
    expect(unknownCommand.code, output(unknownCommand)).toBe(2);
    expect(unknownCommand.stderr).toContain('frobnicate');
    expect(unknownEnv.code, output(unknownEnv)).toBe(2);
    expect(unknownEnv.stderr).toContain('unknown env "ST-7": did you mean ST-1 or ST-2 or ST-3 or ST-4 or ST-5?');
    expect(badConfig.code, output(badConfig)).toBe(2);
    expect(json(badConfig)).toMatchObject({ error: 'config_invalid', message: expect.stringContaining('releases.R2.features.FEAT-101.priority') });
  });

  it('walks a release through status, tag, consolidate and the review queue', async () => {
    // before the lock
    const planned = await run('status', 'R2');
    expect(planned.code, output(planned)).toBe(0);
    expect(planned.stdout).toContain('Release R2: planned');
    expect(planned.stdout).toContain('not locked yet: tributary tag R2');
    const all = await run('--json', 'status');
    expect(all.code, output(all)).toBe(0);
    expect(json(all).map((s: { release: string; state: string }) => `${s.release}:${s.state}`)).toEqual(['R1:planned', 'R2:planned']);

    const early = await run('consolidate', 'R2');
    expect(early.code, output(early)).toBe(3);
    expect(early.stderr).toContain('not locked');
    expect(early.stderr).toContain('tributary tag R2');

    // a row without its feature: tag refuses with exit 3 and lists it
    await db.control.raw(`insert into st1.users (id, email, username, full_name, role, permissions, release, feature, created_by, created_at)
                          values (1999, 'nofeature@corp.example', 'nofeature', 'No Feature', 'Customer', 'read', 'R2', null, 'qa', now())`);
    const [refusedJson, refusedText] = await Promise.all([run('--json', 'tag', 'R2'), run('tag', 'R2')]);
    expect(refusedJson.code, output(refusedJson)).toBe(3);
    expect(json(refusedJson)).toMatchObject({
      error: 'gate_untagged',
      offenderCount: 1,
      locks: [],
      offenders: [{ env: 'ST-1', entity: 'users', table: 'users', key: '1999', missing: ['feature tag'] }],
    });
    expect(refusedText.code, output(refusedText)).toBe(3);
    expect(refusedText.stdout).toContain('1 row(s) of R2 lack their tags; nothing was locked');
    expect(refusedText.stdout).toMatch(/ST-1\s+users\s+key 1999: missing feature tag/);
    await db.control.raw(`delete from st1.users where id = 1999`);

    const tag = await run('--json', 'tag', 'R2');
    expect(tag.code, output(tag)).toBe(0);
    const tagged = json(tag);
    expect(tagged).toMatchObject({ release: 'R2', envs: ['ST-1', 'ST-2', 'ST-3', 'ST-4', 'ST-5'], offenderCount: 0 });
    expect(tagged.locks).toHaveLength(15);
    expect(tagged.locks.reduce((n: number, l: { rows: number }) => n + l.rows, 0)).toBe(385);

    const cons = await run('--json', 'consolidate', 'R2');
    expect(cons.code, output(cons)).toBe(0);
    const result = json(cons);
    expect(result).toMatchObject({ release: 'R2', runId: expect.any(Number), counts: { collected: 385, conflicts: 14, autoResolved: 8, manual: 6, final: 366, pending: 6 } });
    expect(result.counts.byPriority).toEqual({ P1: 4, P2: 1, P3: 1 });

    const status = await run('status', 'R2');
    expect(status.code, output(status)).toBe(0);
    expect(status.stdout).toContain('Release R2: consolidated');
    expect(status.stdout).toContain('records collected     385');
    expect(status.stdout).toContain('queue: open P1 4 · P2 1 · P3 1; decided 0 of 6');

    const queue = await run('--json', 'conflicts', 'R2');
    expect(queue.code, output(queue)).toBe(0);
    const rows = json(queue) as unknown as { code: string; priority: string; kind: string; status: string }[];
    expect(rows.map((r) => `${r.code} ${r.priority} ${r.kind}`)).toEqual([
      'C-001 P1 inconsistent-identity',
      'C-002 P1 core-conflict',
      'C-003 P1 mismatched-parent',
      'C-004 P1 dangling-reference',
      'C-005 P2 core-conflict',
      'C-006 P3 equal-priority',
    ]);
    const [p1, text] = await Promise.all([run('--json', 'conflicts', 'R2', '--priority', 'P1'), run('conflicts', 'R2')]);
    expect((json(p1) as unknown as unknown[]).length).toBe(4);
    expect(text.stdout).toContain('Review queue of R2 (6):');
    expect(text.stdout).toMatch(/C-002\s+P1\s+core-conflict\s+users email=dana@corp.example/);
  });

  it('ends quietly when its reader goes away (tributary result R2 | head -1); LOG_LEVEL=bogus is a config error (exit 2)', async () => {
    const piped = spawnSync('/bin/sh', ['-c', `node ${path.join(ROOT, 'bin/tributary.js')} --config ${configFile} result R2 --all | head -1`], {
      cwd: ROOT,
      env: { ...process.env, TRIBUTARY_AUDIT_KEY: TEST_AUDIT_KEY, DATABASE_URL: '' },
      encoding: 'utf8',
    });
    expect(piped.status, piped.stderr).toBe(0);
    expect(piped.stdout.split('\n').filter(Boolean)).toHaveLength(1);
    expect(JSON.parse(piped.stdout)).toHaveProperty('entity');
    expect(piped.stderr).toBe('');
    const bogus = await cli(['--config', configFile, 'status', 'R2'], { env: { LOG_LEVEL: 'bogus' } });
    expect(bogus.code).toBe(2);
    expect(bogus.stderr).toBe('tributary: environment variable LOG_LEVEL: "bogus" is not a log level; use one of fatal, error, warn, info, debug, trace, silent\n');
  });

  it('hands two reviewers different conflicts, shows one, and plans a decision without applying it', async () => {
    const alice = startCli(['--config', configFile, '--as', 'alice', '--json', 'conflicts', 'next', 'R2']);
    const bob = startCli(['--config', configFile, '--as', 'bob', '--json', 'conflicts', 'next', 'R2']);
    const [ra, rb] = await Promise.all([alice.done, bob.done]);
    expect(ra.code, output(ra)).toBe(0);
    expect(rb.code, output(rb)).toBe(0);
    const a = json(ra);
    const b = json(rb);
    expect(a.code).not.toBe(b.code);
    expect([a.code, b.code].sort()).toEqual(['C-001', 'C-002']);
    expect(a.assigned_to).toBe('cli:alice');
    expect(b.assigned_to).toBe('cli:bob');
    // asking again gives each their own conflict back
    const again = await cli(['--config', configFile, '--as', 'alice', '--json', 'conflicts', 'next', 'R2']);
    expect(json(again).code).toBe(a.code);
    const assigned = await db.control('conflicts').whereNotNull('assigned_to').orderBy('code').select('code', 'assigned_to');
    expect(assigned).toHaveLength(2);

    const [shown, shownText] = await Promise.all([run('--json', 'conflicts', 'show', 'R2', 'C-002'), run('conflicts', 'show', 'R2', 'c-002')]);
    expect(shown.code, output(shown)).toBe(0);
    const c = json(shown);
    expect(c).toMatchObject({ code: 'C-002', kind: 'core-conflict', entity: 'users', key_label: 'email=dana@corp.example', status: 'open' });
    expect(c.detail.versions.map((v: { no: number; envs: string[]; children: number }) => [v.no, v.envs, v.children])).toEqual([
      [1, ['ST-1'], 1],
      [2, ['ST-3'], 1],
    ]);
    expect(c.detail.differing).toEqual(['permissions', 'role']);
    expect(shownText.code, output(shownText)).toBe(0);
    expect(shownText.stdout).toContain('C-002  P1  core-conflict  users email=dana@corp.example');
    expect(shownText.stdout).toContain('version 1: ST-1');
    expect(shownText.stdout).toContain('* role: Administrator');
    expect(shownText.stdout).toContain('tributary decide C-002');

    const runId = (await db.control('release_states').where({ release: 'R2' }).first()).current_run_id as number;
    const snapshot = async () =>
      (await db.control.raw(`select md5(string_agg(r::text, '|' order by entity, identity)) as h from work."r${runId}_result" r`)).rows[0].h as string;
    const before = await snapshot();

    const [dry, dryText] = await Promise.all([
      run('--json', 'decide', 'C-002', '--keep', '1', '--dry-run'),
      run('decide', 'C-002', '--keep', '1', '--dry-run'),
    ]);
    expect(dry.code, output(dry)).toBe(0);
    const plan = json(dry);
    expect(plan).toMatchObject({ applied: false, decision: { action: 'keep', version: 1 }, conflict: { code: 'C-002', status: 'open' } });
    // keeping ST-1's Dana re-points ST-3's account to her
    expect(plan.blast).toEqual({ rewritten: 1, removed: 0, renamed: [], dependents: [], dependentCount: 0 });
    expect(dryText.code, output(dryText)).toBe(0);
    expect(dryText.stdout).toContain('C-002: plan for keep (not applied)');
    expect(dryText.stdout).toContain('blast radius: 1 child row(s) re-pointed, 0 row(s) removed');

    const deleteDry = await run('--json', 'decide', 'C-002', '--delete', '--dry-run');
    expect(deleteDry.code, output(deleteDry)).toBe(0);
    // deleting Dana would orphan both her accounts and ST-3's two transactions
    const deleteBlast = json(deleteDry).blast as { removed: number; dependentCount: number; dependents: { entity: string; pk: string }[] };
    expect(deleteBlast).toMatchObject({ removed: 1, dependentCount: 4 });
    expect(deleteBlast.dependents.map((d) => `${d.entity} ${d.pk}`).sort()).toEqual(['accounts 1951', 'accounts 3951', 'transactions 3951', 'transactions 3952']);

    expect(await snapshot()).toBe(before);
    expect(await db.control('decisions').select('id')).toEqual([]);
    expect((await db.control('conflicts').where({ run_id: runId, code: 'C-002' }).first()).status).toBe('open');
  });

  it('applies a decision once, with a rationale, and refuses bad ones with exit 2 or 3', async () => {
    const [noRationale, noVersion, unknown, twoActions] = await Promise.all([
      run('decide', 'C-005', '--keep', '1'),
      run('decide', 'C-005', '--keep', '9', '--rationale', 'checked'),
      run('decide', 'C-099', '--keep', '1', '--rationale', 'checked'),
      run('decide', 'C-005', '--keep', '1', '--waive', '--rationale', 'checked'),
    ]);
    for (const r of [noRationale, noVersion, unknown, twoActions]) expect(r.code, output(r)).toBe(2);
    expect(noRationale.stderr).toContain('rationale');
    expect(noVersion.stderr).toContain('there is no version 9');
    expect(unknown.stderr).toContain('no conflict C-099');
    expect(twoActions.stderr).toContain('choose exactly one');

    const ok = await cli(['--config', configFile, '--as', 'alice', '--json', 'decide', 'C-005', '--keep', '2', '--rationale', 'ST-4 has the right role']);
    expect(ok.code, output(ok)).toBe(0);
    expect(json(ok)).toMatchObject({ applied: true, decidedBy: 'cli:alice', rationale: 'ST-4 has the right role', conflict: { code: 'C-005', status: 'decided' } });

    const twice = await cli(['--config', configFile, '--as', 'bob', 'decide', 'C-005', '--keep', '1', '--rationale', 'no, ST-2']);
    expect(twice.code, output(twice)).toBe(3);
    expect(twice.stderr).toContain('C-005 was already decided by cli:alice');
    expect(await db.control('decisions').select('decided_by')).toEqual([{ decided_by: 'cli:alice' }]);

    const decided = await run('--json', 'conflicts', 'R2', '--status', 'decided');
    expect((json(decided) as unknown as { code: string }[]).map((c) => c.code)).toEqual(['C-005']);
  });

  it('lists the automatic resolutions (streamed, filtered), shows one side by side, overrules it, and has them in the audit and the result', async () => {
    const [list, text, newest, accounts, badRule] = await Promise.all([
      run('--json', 'conflicts', 'R2', '--status', 'auto-resolved'),
      run('conflicts', 'R2', '--status', 'auto-resolved'),
      run('--json', 'conflicts', 'R2', '--status', 'auto-resolved', '--rule', 'newest-wins'),
      run('--json', 'conflicts', 'R2', '--status', 'auto-resolved', '--entity', 'accounts'),
      run('conflicts', 'R2', '--status', 'auto-resolved', '--rule', 'oldest-wins'),
    ]);
    for (const r of [list, text, newest, accounts]) expect(r.code, output(r)).toBe(0);
    const all = json(list) as { code: string; rule: string; entity: string; keyLabel: string }[];
    expect(all.map((a) => a.code)).toEqual(['A-001', 'A-002', 'A-003', 'A-004', 'A-005', 'A-006', 'A-007', 'A-008']);
    expect(text.stdout.split('\n')[0]).toMatch(/^Automatic resolutions of R2 \(run #\d+\): 8 — /);
    for (const a of all) expect(text.stdout).toContain(`${a.code}  ${a.rule}`);
    const ivan = (json(newest) as typeof all).find((a) => a.keyLabel === 'email=ivan@corp.example')!;
    expect((json(newest) as typeof all).every((a) => a.rule === 'newest-wins')).toBe(true);
    expect((json(accounts) as typeof all).every((a) => a.entity === 'accounts')).toBe(true);
    expect(badRule.code, output(badRule)).toBe(2);
    expect(badRule.stderr).toContain('unknown rule "oldest-wins"');

    const show = await run('conflicts', 'show', 'R2', ivan.code);
    expect(show.code, output(show)).toBe(0);
    expect(show.stdout).toContain(`${ivan.code}  newest-wins  users email=ivan@corp.example`);
    expect(show.stdout).toMatch(/v1 ST-1 key 1902 +│ v2 ST-4 key 4902 \(kept\)/);

    const over = await cli(['--config', configFile, '--as', 'alice', '--json', 'decide', ivan.code, '--keep', '1', '--rationale', "ST-1's Ivan is the reference"]);
    expect(over.code, output(over)).toBe(0);
    expect(json(over)).toMatchObject({ applied: true, decidedBy: 'cli:alice', conflict: { code: ivan.code, kind: 'newest-wins', status: 'decided' } });
    const shown = json(await run('--json', 'conflicts', 'show', 'R2', ivan.code));
    expect(shown.overrule).toMatchObject({ status: 'decided', decidedBy: 'cli:alice', decision: { action: 'keep', version: 1 } });

    const [audit, result] = await Promise.all([run('audit', 'R2', '--format', 'json'), run('result', 'R2', '--entity', 'users')]);
    expect(audit.code, output(audit)).toBe(0);
    const exported = json(audit);
    expect(exported.autoResolutions).toHaveLength(8);
    expect(exported.summary.counts.autoByRule).toMatchObject({ 'newest-wins': expect.any(Number) });
    expect(exported.events.filter((e: { action: string }) => e.action === 'consolidate.auto-resolutions')).toHaveLength(1);
    const rows = result.stdout.trim().split('\n').map((l) => JSON.parse(l) as { pk: string; data: { email: string }; from: unknown });
    expect(rows.find((r) => r.data.email === 'ivan@corp.example')).toMatchObject({ pk: '1902', from: { versions: [1], envs: ['ST-1'], resolution: ivan.code } });
  });

  it('never prints a secret, while naming the env that failed', async () => {
    const env = { ST9_DATABASE_URL: `postgres://postgres:${SECRET}@127.0.0.1:1/x` };
    const withSecret = (...args: string[]) => cli(['--config', secretConfigFile, ...args], { env });
    const results = await Promise.all([
      withSecret('tag', 'R2'),
      withSecret('--json', 'tag', 'R2'),
      withSecret('tag', 'R2', '--env', 'ST-9'),
      withSecret('consolidate', 'R2'),
      withSecret('--json', 'status', 'R2'),
      cli(['--config', secretConfigFile, 'tag', 'R2'], { env: { ...env, LOG_LEVEL: 'trace' } }),
      cli(['--config', secretConfigFile, '--json', 'tag', 'R2', '--env', 'ST-9'], { env: { ...env, LOG_LEVEL: 'trace' } }),
    ]);
    for (const r of results) {
      expect(r.stdout).not.toContain(SECRET);
      expect(r.stderr).not.toContain(SECRET);
    }
    const [tag, tagJson, tagOne, cons, status, traced, tracedJson] = results;
    for (const r of [tag!, tagOne!, traced!]) {
      expect(r.code, output(r)).toBe(1);
      expect(r.stderr).toContain('env ST-9 (127.0.0.1:1/x, schema st9) is unreachable');
    }
    expect(tagJson!.code, output(tagJson!)).toBe(1);
    expect(json(tagJson!)).toMatchObject({ error: 'env_unreachable', message: expect.stringContaining('ST-9') });
    expect(tracedJson!.code, output(tracedJson!)).toBe(1);
    expect(json(tracedJson!)).toMatchObject({ error: 'env_unreachable', message: expect.stringContaining('ST-9') });
    expect(cons!.code, output(cons!)).toBe(3);
    expect(cons!.stderr).toContain('ST-9');
    expect(status!.code, output(status!)).toBe(0);
    expect(json(status!).release).toBe('R2');

    // nothing the failed commands did reached the audit trail with the secret either
    const audit = await db.control.raw(`select count(*)::int as n from audit_events where details::text like ?`, [`%${SECRET}%`]);
    expect(audit.rows[0].n).toBe(0);
  });

  it('where roles are configured, the identity of --as must hold the role (approve, promote, test, deploy, rollback, unlock), audited', async () => {
    const doc = demoDoc() as Record<string, unknown>;
    doc.roles = { reviewer: [], qa_lead: ['U0LEAD'], release_manager: ['U0RM'] };
    const withRoles = path.join(dir, 'roles.yml');
    fs.writeFileSync(withRoles, stringify(doc));
    const as = (who: string, ...args: string[]) => cli(['--config', withRoles, '--as', who, ...args]);
    const refused = await Promise.all([
      as('U0RM', 'approve', 'R2', '--rationale', 'looks fine'),
      as('U0RM', 'promote', 'R2'),
      as('U0RM', 'test', 'R2', '--tier', '1'),
      as('U0LEAD', 'deploy', 'R2'),
      as('U0LEAD', 'rollback', 'R2', '--rationale', 'broken'),
      as('U0LEAD', 'unlock', 'production'),
    ]);
    const needs = ['approve needs the qa_lead role', 'promote needs the qa_lead role', 'test needs the qa_lead role', 'deploy needs the release_manager role', 'rollback needs the release_manager role', 'unlock needs the release_manager role'];
    refused.forEach((r, i) => {
      expect(r.code, output(r)).toBe(3);
      expect(r.stderr).toContain(needs[i]);
    });
    const audit = await db.control('audit_events').where({ action: 'auth.refused' }).whereIn('actor', ['U0RM', 'U0LEAD']).count<{ n: number }[]>('* as n');
    expect(Number(audit[0]!.n)).toBeGreaterThanOrEqual(6);
  });
});
