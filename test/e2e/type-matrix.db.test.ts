import { afterAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { consolidate } from '../../src/engine/consolidate/run.js';
import { createBundle } from '../../src/engine/deploy/bundle.js';
import { backupData, deployData, restoreData } from '../../src/engine/deploy/dataDeployer.js';
import { tagRelease } from '../../src/engine/gate/tag.js';
import { transition } from '../../src/engine/kernel/lifecycle.js';
import { loadRelease } from '../../src/engine/load/load.js';
import { archiveRelease, restoreRelease } from '../../src/engine/nightly/archive.js';
import { promoteRelease } from '../../src/engine/promote/promote.js';
import { validateRelease } from '../../src/engine/validate/validate.js';
import { applyDecision } from '../../src/engine/review/decide.js';
import type { ConflictRow, Decision } from '../../src/engine/review/types.js';
import { createDatabase, dropDatabase, insertAccounts, insertUsers, testEnv, urlFor, type TestEnv } from '../helpers.js';
import { cellTexts, cellTextsBy, ODD, ODD_ROWS } from '../odd-values.js';

/**
 * The type matrix: one world whose users hold every odd type and value (test/odd-values.ts) and the
 * enum, domain and composite types (and accounts holding them too), with staging, master and production
 * each in a database of its own, through every rule (exact duplicate, newest-wins, re-key, complementary
 * merge, env precedence, feature priority) and every decision kind (keep, merge, keep both renamed,
 * re-point, delete), then tag → consolidate → validate → load → promote → bundle → deploy → rollback →
 * archive → restore. At each stop every cell is compared with what it must hold (its source cell, or
 * where a rule or a person said so another source's cell or a typed value; ::text under fixed settings)
 * by this test's own queries; cells compared must be rows × columns and cells different 0.
 */
let env: TestEnv | undefined;
const databases: string[] = [];
afterAll(async () => {
  await env?.close();
  for (const d of databases) await dropDatabase(d);
});

const by = { actor: 'cli:test' };

describe('the type matrix', () => {
  it('every cell arrives ::text-equal at every stop from staging to restore', async () => {
    const [stagingDb, masterDb, prodDb] = [await createDatabase(), await createDatabase(), await createDatabase()];
    databases.push(stagingDb, masterDb, prodDb);
    const e = (env = await testEnv(2, {
      environments: {
        'ST-1': { role: 'source', precedence: 1, schema: 'st1' },
        'ST-2': { role: 'source', precedence: 2, schema: 'st2' },
        master: { role: 'master', url: urlFor(masterDb), schema: 'master' },
        staging: { role: 'staging', url: urlFor(stagingDb), schema: 'staging' },
        production: { role: 'production', url: urlFor(prodDb), schema: 'prod' },
      },
      archive: { dir: 'cold' },
    }));
    await e.sql(`create type public.mood as enum ('sad', 'ok', 'happy'); create domain public.pos as int check (value > 0); create type public.pair as (a int, b text)`);
    const MATRIX = `${ODD}, add column mood mood, add column n pos, add column p pair, add column moods mood[]`;
    for (const s of ['st1', 'st2']) await e.sql(`alter table ${s}.users ${MATRIX}; alter table ${s}.accounts ${MATRIX}`);
    await e.sql(ODD_ROWS);
    await e.sql(`update st1.users set mood = 'happy', n = 3, p = row(1, 'a "b", c'), moods = '{sad,NULL,ok}' where id = 1`);
    await e.sql(`update st1.users set mood = 'sad', n = 2147483647, p = row(null, ''), moods = '{}' where id = 2`);
    const matrixColumns = (await e.sql(`select quote_ident(attname) as c from pg_attribute where attrelid = 'st1.users'::regclass and attnum > 0 and not attisdropped
      and attname <> all (array['id', 'email', 'username', 'name', 'role', 'phone', 'city', 'updated_at', 'release', 'feature', 'created_by', 'created_at']) order by attnum`)).rows.map((r) => r.c as string);
    /** Gives rows the odd values of template user `from` (1, 2 or 3), so every rule and decision carries them. */
    const oddValues = (table: string, ids: number[], from: number) =>
      e.sql(`update ${table} t set (${matrixColumns.join(', ')}) = (select ${matrixColumns.join(', ')} from st1.users s where s.id = ${from}) where t.id = any($1::int[])`, [ids]);
    await insertUsers(e, 'st1', [{ id: 10, email: 'plain@x' }]);
    await insertUsers(e, 'st2', [{ id: 11, email: 'other@x', city: '' }]);
    // exact duplicate: every cell the same in both envs
    await e.sql(`insert into st2.users select * from st1.users where id = 2`);
    // newest-wins: the same values, ST-2's record newer
    await insertUsers(e, 'st1', [{ id: 20, email: 'nw@x', created_at: '2024-01-01T00:00:00Z' }]);
    await insertUsers(e, 'st2', [{ id: 20, email: 'nw@x', created_at: '2024-02-01T00:00:00Z' }]);
    // re-key: two identities under one key
    await insertUsers(e, 'st1', [{ id: 30, email: 'rk1@x' }]);
    await insertUsers(e, 'st2', [{ id: 30, email: 'rk2@x' }]);
    // complementary merge: each env has what the other lacks
    await insertUsers(e, 'st1', [{ id: 40, email: 'cm@x', phone: null }]);
    await insertUsers(e, 'st2', [{ id: 40, email: 'cm@x', phone: '+47 22', city: null }]);
    // env precedence (one feature), feature priority (critical over low)
    await insertUsers(e, 'st1', [{ id: 90, email: 'ep@x', name: 'EP one' }, { id: 95, email: 'fp@x', name: 'FP low', feature: 'FEAT-L' }]);
    await insertUsers(e, 'st2', [{ id: 90, email: 'ep@x', name: 'EP two' }, { id: 95, email: 'fp@x', name: 'FP critical', feature: 'FEAT-C' }]);
    // core conflicts, for a person: keep, merge, keep both (renamed)
    await insertUsers(e, 'st1', [{ id: 50, email: 'cc@x', role: 'Admin' }, { id: 60, email: 'mg@x', role: 'Admin', name: 'MG one' }, { id: 70, email: 'kb@x', role: 'Admin' }]);
    await insertUsers(e, 'st2', [{ id: 50, email: 'cc@x', role: 'Customer' }, { id: 60, email: 'mg@x', role: 'Customer', name: 'MG two' }, { id: 71, email: 'kb@x', role: 'Customer' }]);
    // dangling references, for a person: re-point, delete
    await insertAccounts(e, 'st1', [{ id: 100, number: 'AC-100', user_id: 10 }, { id: 101, number: 'AC-101', user_id: 999 }, { id: 102, number: 'AC-102', user_id: 998 }]);
    for (const s of ['st1', 'st2']) {
      await oddValues(`${s}.users`, [20, 30, 50, 60, 70, 71], 1);
      await oddValues(`${s}.users`, [40, 90, 95], 2);
      await oddValues(`${s}.users`, [10, 11], 3);
    }
    await oddValues('st1.accounts', [100, 101, 102], 1);

    const cols = async (table: string) =>
      (await e.sql(`select attname from pg_attribute where attrelid = $1::regclass and attnum > 0 and not attisdropped order by attnum`, [table])).rows.map((r) => r.attname as string);
    const userColumns = await cols('st1.users');
    const accountColumns = await cols('st1.accounts');
    const sourceDb = new pg.Client({ connectionString: urlFor(e.database) });
    await sourceDb.connect();
    const src = {
      users: { st1: await cellTexts(sourceDb, 'st1.users', userColumns, 'true'), st2: await cellTexts(sourceDb, 'st2.users', userColumns, 'true') },
      accounts: { st1: await cellTexts(sourceDb, 'st1.accounts', accountColumns, 'true'), st2: await cellTexts(sourceDb, 'st2.accounts', accountColumns, 'true') },
    };
    await sourceDb.end();

    await tagRelease(e.ctx, 'R2', by);
    const consolidated = await consolidate(e.ctx, 'R2', by);
    expect(consolidated.counts.byRule).toMatchObject({ 'exact-duplicate': 1, 'newest-wins': 1, 're-key': 1, 'complementary-merge': 1, 'env-precedence': 1, 'feature-priority': 1 });
    // the decisions: each kind once
    const open = (await e.db.control('conflicts').where({ release: 'R2', status: 'open' }).orderBy('code')) as ConflictRow[];
    const versionOf = (c: ConflictRow, env: string) => c.detail.versions!.find((v) => v.envs.includes(env))!.no;
    const conflict = (email: string) => open.find((c) => c.detail.versions?.some((v) => v.data.email === email))!;
    const dangling = (value: string) => open.find((c) => c.kind === 'dangling-reference' && c.detail.value === value)!;
    const decide = (c: ConflictRow, d: Decision) => applyDecision(e.ctx, 'R2', c.code, d, { actor: 'U0ALICE', rationale: `matrix ${d.action}` });
    await decide(conflict('cc@x'), { action: 'keep', version: versionOf(conflict('cc@x'), 'ST-2') });
    const mg = conflict('mg@x');
    await decide(mg, { action: 'merge', picks: { role: versionOf(mg, 'ST-1'), name: versionOf(mg, 'ST-2') } });
    const kb = conflict('kb@x');
    await decide(kb, { action: 'keep-both', rename: { [versionOf(kb, 'ST-2')]: { email: 'kb-typed@x', username: 'kb typed' } } });
    await decide(dangling('999'), { action: 'repoint', to: '10' });
    await decide(dangling('998'), { action: 'delete' });
    expect((await validateRelease(e.ctx, 'R2', by)).counts.open).toBe(0);

    // what each final row must hold: its source row's cells, and where a rule or a person said so, another
    // source's cell or a typed value (column → text)
    type Want = { from: 'st1' | 'st2'; id: number; set?: Record<string, string | null> };
    const mgBase = mg.detail.versions![0]!.envs.includes('ST-1') ? 'st1' : 'st2';
    const users: Record<string, Want> = {
      'nul@x': { from: 'st1', id: 1 },
      'dup@x': { from: 'st1', id: 2 },
      'esc@x': { from: 'st1', id: 3 },
      'plain@x': { from: 'st1', id: 10 },
      'other@x': { from: 'st2', id: 11 },
      'nw@x': { from: 'st2', id: 20 },
      'rk1@x': { from: 'st1', id: 30 },
      'rk2@x': { from: 'st2', id: 30 },
      'cm@x': { from: 'st1', id: 40, set: { phone: '+47 22' } },
      'ep@x': { from: 'st1', id: 90 },
      'fp@x': { from: 'st2', id: 95 },
      'cc@x': { from: 'st2', id: 50 },
      'mg@x': mgBase === 'st1' ? { from: 'st1', id: 60, set: { name: 'MG two' } } : { from: 'st2', id: 60, set: { role: 'Admin' } },
      'kb@x': { from: 'st1', id: 70 },
      'kb-typed@x': { from: 'st2', id: 71, set: { email: 'kb-typed@x', username: 'kb typed' } },
    };
    const accounts: Record<string, Want> = {
      'AC-100': { from: 'st1', id: 100 },
      'AC-101': { from: 'st1', id: 101, set: { user_id: '10' } },
    };
    // the re-keyed record's new key, as staging first shows it (then the same at every stop)
    let rekeyed: { email: string; id: string } | undefined;

    /** Every cell of R2's rows in `db` against what it must hold; `empty`: no R2 rows are expected there. */
    const stop = async (name: string, db: string, schema: string, empty = false) => {
      const c = new pg.Client({ connectionString: urlFor(db) });
      await c.connect();
      let compared = 0;
      let different = 0;
      let rows = 0;
      let expectedCells = 0;
      try {
        for (const [table, columns, wants, key] of [['users', userColumns, users, 'email'], ['accounts', accountColumns, accounts, 'number']] as const) {
          const exists = (await c.query(`select to_regclass($1) is not null as ok`, [`${schema}.${table}`])).rows[0].ok as boolean;
          const got = exists ? await cellTextsBy(c, `${schema}.${table}`, [...columns], `release = 'R2'`, key) : new Map<string, (string | null)[]>();
          if (table === 'users' && !rekeyed && got.size > 0) {
            const moved = ['rk1@x', 'rk2@x'].filter((k) => got.get(k)?.[columns.indexOf('id')] !== '30');
            expect(moved, 'exactly one record is re-keyed').toHaveLength(1);
            rekeyed = { email: moved[0]!, id: got.get(moved[0]!)![columns.indexOf('id')]! };
            expect(src.users.st1.has(Number(rekeyed.id)) || src.users.st2.has(Number(rekeyed.id)), 'a fresh key').toBe(false);
          }
          rows += got.size;
          if (!empty) expectedCells += Object.keys(wants).length * columns.length;
          for (const [k, cells] of got) {
            const w = (wants as Record<string, Want>)[k];
            const base = w ? src[table][w.from].get(w.id) : undefined;
            const want = base?.map((v, i) => {
              const col = columns[i]!;
              if (table === 'users' && col === 'id' && rekeyed?.email === k) return rekeyed.id;
              return w!.set && col in w!.set ? w!.set[col]! : v;
            });
            cells.forEach((cell, i) => {
              compared += 1;
              if (!want || want[i] !== cell) different += 1;
            });
          }
        }
      } finally {
        await c.end();
      }
      console.log(`type matrix, ${name}: cells compared ${compared}, cells different ${different}`);
      expect({ rows, compared, different }, name).toEqual({ rows: empty ? 0 : Object.keys(users).length + Object.keys(accounts).length, compared: expectedCells, different: 0 });
    };

    await loadRelease(e.ctx, 'R2', by);
    await stop('staging', stagingDb, 'staging');
    await transition(e.db.control, 'R2', 'tier1');
    await promoteRelease(e.ctx, 'R2', by);
    await stop('master', masterDb, 'master');
    await transition(e.db.control, 'R2', 'approve');
    const bundle = await createBundle(e.ctx, 'R2', { code: 'v1', ...by });
    const backup = await backupData(e.ctx, bundle, by);
    await deployData(e.ctx, bundle, backup, by);
    await stop('production', prodDb, 'prod');
    // the rollback: production as it was before the deploy (it had none of these tables)
    await restoreData(e.ctx, backup, by);
    await stop('production after rollback', prodDb, 'prod', true);
    await archiveRelease(e.ctx, 'R2', by);
    await stop('master, archived', masterDb, 'master', true);
    await restoreRelease(e.ctx, 'R2', by);
    await stop('master, restored', masterDb, 'master');
  });
});
