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
import { createDatabase, dropDatabase, insertUsers, testEnv, urlFor, type TestEnv } from '../helpers.js';
import { cellTexts, ODD, ODD_ROWS } from '../odd-values.js';

/**
 * The type matrix: one world whose users hold every odd type and value (test/odd-values.ts) and the
 * enum, domain and composite types, with staging, master and production each in a database of its own,
 * through tag → consolidate (an exact duplicate across envs) → validate → load → promote → bundle →
 * deploy → rollback → archive → restore. At each stop every cell is compared with its source cell
 * (::text under fixed settings) by this test's own queries; cells compared must be rows × columns and
 * cells different 0.
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
    for (const s of ['st1', 'st2']) await e.sql(`alter table ${s}.users ${ODD}, add column mood mood, add column n pos, add column p pair, add column moods mood[]`);
    await e.sql(ODD_ROWS);
    await e.sql(`update st1.users set mood = 'happy', n = 3, p = row(1, 'a "b", c'), moods = '{sad,NULL,ok}' where id = 1`);
    await e.sql(`update st1.users set mood = 'sad', n = 2147483647, p = row(null, ''), moods = '{}' where id = 2`);
    await insertUsers(e, 'st1', [{ id: 10, email: 'plain@x' }]);
    // an exact duplicate of an odd row in the other env (every cell the same): kept once
    await e.sql(`insert into st2.users select * from st1.users where id = 2`);
    await insertUsers(e, 'st2', [{ id: 11, email: 'other@x', city: '' }]);

    const columns = (await e.sql(`select attname from pg_attribute where attrelid = 'st1.users'::regclass and attnum > 0 and not attisdropped order by attnum`)).rows.map((r) => r.attname as string);
    const sourceDb = new pg.Client({ connectionString: urlFor(e.database) });
    await sourceDb.connect();
    const source = new Map([...(await cellTexts(sourceDb, 'st2.users', columns, 'true')), ...(await cellTexts(sourceDb, 'st1.users', columns, 'true'))]);
    await sourceDb.end();
    expect([...source.keys()].sort((a, b) => a - b)).toEqual([1, 2, 3, 10, 11]);

    /** Every cell of `table` in `db` (R2's rows) against its source cell; `rows` rows are expected there. */
    const stop = async (name: string, db: string, table: string, rows = source.size) => {
      const c = new pg.Client({ connectionString: urlFor(db) });
      await c.connect();
      try {
        const exists = (await c.query(`select to_regclass($1) is not null as ok`, [table])).rows[0].ok as boolean;
        const target = exists ? await cellTexts(c, table, columns, `release = 'R2'`) : new Map<number, (string | null)[]>();
        let compared = 0;
        let different = 0;
        for (const [id, got] of target) {
          const want = source.get(id);
          got.forEach((cell, i) => {
            compared += 1;
            if (!want || want[i] !== cell) different += 1;
          });
        }
        console.log(`type matrix, ${name}: cells compared ${compared}, cells different ${different}`);
        expect({ rows: target.size, compared, different }, name).toEqual({ rows, compared: rows * columns.length, different: 0 });
      } finally {
        await c.end();
      }
    };

    await tagRelease(e.ctx, 'R2', by);
    const consolidated = await consolidate(e.ctx, 'R2', by);
    expect(consolidated.counts.byRule).toEqual({ 'exact-duplicate': 1 });
    expect((await validateRelease(e.ctx, 'R2', by)).counts.open).toBe(0);
    await loadRelease(e.ctx, 'R2', by);
    await stop('staging', stagingDb, 'staging.users');
    await transition(e.db.control, 'R2', 'tier1');
    await promoteRelease(e.ctx, 'R2', by);
    await stop('master', masterDb, 'master.users');
    await transition(e.db.control, 'R2', 'approve');
    const bundle = await createBundle(e.ctx, 'R2', { code: 'v1', ...by });
    const backup = await backupData(e.ctx, bundle, by);
    await deployData(e.ctx, bundle, backup, by);
    await stop('production', prodDb, 'prod.users');
    // the rollback: production as it was before the deploy (it had no users table)
    await restoreData(e.ctx, backup, by);
    await stop('production after rollback', prodDb, 'prod.users', 0);
    await archiveRelease(e.ctx, 'R2', by);
    await stop('master, archived', masterDb, 'master.users', 0);
    await restoreRelease(e.ctx, 'R2', by);
    await stop('master, restored', masterDb, 'master.users');
  });
});
