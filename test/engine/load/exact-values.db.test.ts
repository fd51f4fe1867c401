import { afterEach, describe, expect, it } from 'vitest';
import { consolidate } from '../../../src/engine/consolidate/run.js';
import { tagRelease } from '../../../src/engine/gate/tag.js';
import { loadRelease } from '../../../src/engine/load/load.js';
import { transition } from '../../../src/engine/kernel/lifecycle.js';
import { promoteRelease } from '../../../src/engine/promote/promote.js';
import { validateRelease } from '../../../src/engine/validate/validate.js';
import pg from 'pg';
import { cli, output } from '../../process.js';
import { cellTexts, ODD, ODD_ROWS } from '../../odd-values.js';
import { createDatabase, dropDatabase, finalRows, insertUsers, testEnv, urlFor, type TestEnv } from '../../helpers.js';

/**
 * Every value arrives exactly as it left: odd values collected from an ST env, consolidated, validated
 * and loaded into staging are compared cell by cell with their source (each cell's ::text under fixed
 * settings), by queries of this test's own, not the carrier's or the checksums' code.
 */
let env: TestEnv | undefined;
let other: string | undefined;
afterEach(async () => {
  await env?.close();
  env = undefined;
  if (other) await dropDatabase(other);
  other = undefined;
});

const by = { actor: 'cli:test' };

/** Cells compared and cells different between two tables with the same columns, joined on id. */
async function compareCells(e: TestEnv, source: string, target: string, where: string): Promise<{ compared: number; different: number; rows: number }> {
  const cols = (await e.sql(`select attname from pg_attribute where attrelid = $1::regclass and attnum > 0 and not attisdropped`, [source])).rows.map((r) => r.attname as string);
  const q = (c: string) => `"${c.replace(/"/g, '""')}"`;
  const cells = cols.map((c) => `(s.${q(c)}::text is distinct from t.${q(c)}::text)::int`).join(' + ');
  const res = await e.sql(`begin; set local timezone = 'UTC'; set local datestyle = 'ISO, YMD'; set local intervalstyle = 'postgres'; set local extra_float_digits = 3; set local lc_monetary = 'C';
    select count(*)::int as rows, (count(*) * ${cols.length})::int as compared, coalesce(sum(${cells}), 0)::int as different
      from ${source} s full join ${target} t on t.id = s.id where ${where}; commit`);
  const row = (res as unknown as { rows: { rows: number; compared: number; different: number }[] }[])[6]!.rows[0]!;
  return row;
}

describe('exact values', () => {
  it('json null, duplicate keys, -0, NaN, ±infinity, arrays, bytea, intervals, money, escapes: every cell arrives ::text-equal in staging and master', async () => {
    const e = await testEnv(2);
    env = e;
    for (const s of ['st1', 'st2', 'master']) await e.sql(`alter table ${s}.users ${ODD}`);
    await e.sql(ODD_ROWS);
    await insertUsers(e, 'st2', [{ id: 7, email: 'plain@x' }]);
    await tagRelease(e.ctx, 'R2', by);
    await consolidate(e.ctx, 'R2', by);
    const report = await validateRelease(e.ctx, 'R2', by);
    expect(report.counts.open).toBe(0);
    // the work area keeps each cell's text: JSON null is the text 'null', SQL NULL is null
    const users = (await finalRows(e, 'users')) as { pk: string; data: Record<string, unknown> }[];
    expect(users.find((u) => u.pk === '1')!.data.prefs).toBe('null');
    expect(users.find((u) => u.pk === '3')!.data.doc).toBeNull();
    const loaded = await loadRelease(e.ctx, 'R2', by);
    expect(loaded.tables.find((t) => t.table === 'users')!.rows).toBe(4);
    const cmp = await compareCells(e, 'st1.users', 'staging.users', `s.id is not null or t.id in (1, 2, 3)`);
    const columns = (await e.sql(`select count(*)::int as n from pg_attribute where attrelid = 'st1.users'::regclass and attnum > 0 and not attisdropped`)).rows[0].n as number;
    console.log(`exact values, staging: cells compared ${cmp.compared}, cells different ${cmp.different}`);
    expect(cmp).toEqual({ rows: 3, compared: 3 * columns, different: 0 });
    // promoted into master: the same cells again
    await transition(e.db.control, 'R2', 'tier1');
    await promoteRelease(e.ctx, 'R2', by);
    const master = await compareCells(e, 'st1.users', 'master.users', `s.id is not null or t.id in (1, 2, 3)`);
    console.log(`exact values, master: cells compared ${master.compared}, cells different ${master.different}`);
    expect(master).toEqual({ rows: 3, compared: 3 * columns, different: 0 });
    const nulls = await e.sql(`select id, prefs is null as sql_null, prefs::text as prefs from staging.users where id in (1, 3) order by id`);
    expect(nulls.rows).toEqual([
      { id: 1, sql_null: false, prefs: 'null' },
      { id: 3, sql_null: false, prefs: '{"z": "\\u0000"}' },
    ]);
  });

  it('the work area holds the sources\' own texts: a cell altered on its way in (the real CLI, consolidate.collect.copy=corrupt) is refused at collection, naming env and table', async () => {
    const e = await testEnv(2);
    env = e;
    await insertUsers(e, 'st1', [{ id: 1, email: 'a@x' }]);
    await tagRelease(e.ctx, 'R2', by);
    const r = await cli(['--config', e.configFile, 'consolidate', 'R2'], { env: { TRIBUTARY_FAILPOINTS: 'consolidate.collect.copy=corrupt' } });
    expect(r.code, output(r)).not.toBe(0);
    expect(r.stderr).toMatch(/collecting R2 from ST-1, table users: 1 row\(s\) arrived with cells other than the texts the source hashed; nothing was consolidated/);
    expect((await e.db.control('release_states').where({ release: 'R2' }).first()).state).toBe('locked');
    const ok = await cli(['--config', e.configFile, 'consolidate', 'R2']);
    expect(ok.code, output(ok)).toBe(0);
  });

  it('JSON null is not SQL NULL: two versions differing only there are not duplicates; complementary-merge fills the SQL NULL with the JSON null', async () => {
    const e = await testEnv(2);
    env = e;
    for (const s of ['st1', 'st2', 'master']) await e.sql(`alter table ${s}.users add column prefs json`);
    await insertUsers(e, 'st1', [{ id: 1, email: 'jn@x' }]);
    await insertUsers(e, 'st2', [{ id: 2, email: 'jn@x' }]);
    await e.sql(`update st2.users set prefs = 'null'`);
    await tagRelease(e.ctx, 'R2', by);
    const result = await consolidate(e.ctx, 'R2', by);
    expect(result.counts.byRule).toEqual({ 'complementary-merge': 1 });
    const users = (await finalRows(e, 'users')) as { pk: string; data: Record<string, unknown> }[];
    expect(users.map((u) => [u.pk, u.data.prefs])).toEqual([['1', 'null']]);
  });

  it('staging in another database gets the enum, domain and composite types the ST table uses, and their values as they were', async () => {
    other = await createDatabase();
    const e = await testEnv(2, {
      environments: {
        'ST-1': { role: 'source', precedence: 1, schema: 'st1' },
        'ST-2': { role: 'source', precedence: 2, schema: 'st2' },
        master: { role: 'master', schema: 'master' },
        staging: { role: 'staging', url: urlFor(other), schema: 'staging' },
      },
    });
    env = e;
    await e.sql(`create type public.mood as enum ('sad', 'ok', 'happy'); create domain public.pos as int check (value > 0); create type public.pair as (a int, b text)`);
    for (const s of ['st1', 'st2', 'master']) await e.sql(`alter table ${s}.users add column mood mood, add column n pos, add column p pair, add column moods mood[]`);
    await insertUsers(e, 'st1', [{ id: 1, email: 'ty@x' }, { id: 2, email: 'tz@x' }]);
    await e.sql(`update st1.users set mood = 'happy', n = 3, p = row(1, 'a "b", c'), moods = '{sad,ok}' where id = 1`);
    await tagRelease(e.ctx, 'R2', by);
    await consolidate(e.ctx, 'R2', by);
    expect((await validateRelease(e.ctx, 'R2', by)).counts.open).toBe(0);
    await loadRelease(e.ctx, 'R2', by);
    const stagingDb = new pg.Client({ connectionString: urlFor(other) });
    await stagingDb.connect();
    try {
      const types = await stagingDb.query(`select typname, typtype from pg_type where typname in ('mood', 'pos', 'pair') order by typname`);
      expect(types.rows).toEqual([
        { typname: 'mood', typtype: 'e' },
        { typname: 'pair', typtype: 'c' },
        { typname: 'pos', typtype: 'd' },
      ]);
      const columns = (await e.sql(`select attname from pg_attribute where attrelid = 'st1.users'::regclass and attnum > 0 and not attisdropped order by attnum`)).rows.map((r) => r.attname as string);
      const source = await cellTexts(await sourceClient(e), 'st1.users', columns, 'true');
      const target = await cellTexts(stagingDb, 'staging.users', columns, 'true');
      let compared = 0;
      let different = 0;
      for (const [id, cells] of source) {
        const got = target.get(id);
        cells.forEach((cell, i) => {
          compared += 1;
          if (!got || got[i] !== cell) different += 1;
        });
      }
      console.log(`user-defined types, staging: cells compared ${compared}, cells different ${different}`);
      expect([compared, different, target.size]).toEqual([2 * columns.length, 0, 2]);
    } finally {
      await stagingDb.end();
    }
  });

});

/** A client on the test database (the ST envs' schemas), closed with the env. */
async function sourceClient(e: TestEnv): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: urlFor(e.database) });
  await c.connect();
  const close = e.close;
  e.close = async () => {
    await c.end();
    await close();
  };
  return c;
}
