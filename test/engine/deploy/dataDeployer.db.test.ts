import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { afterEach, describe, expect, it } from 'vitest';
import { createBundle, getBundle, listBundles, requireBundle } from '../../../src/engine/deploy/bundle.js';
import { backupData, BACKUP_SCHEMA, dataChecksums, deployData, dropBackup, getBackup, restoreData } from '../../../src/engine/deploy/dataDeployer.js';
import { decideGo, requestDeployment } from '../../../src/engine/deploy/deployment.js';
import { exitCodeFor, TributaryError } from '../../../src/errors.js';
import type { TestEnv } from '../../helpers.js';
import { approvedRelease, dumpProduction, readyToDeploy, seedProduction } from '../../deploy-setup.js';
import { cli, output } from '../../process.js';

/**
 * The data side of synchronized deployment: the approved release's immutable bundle (files exported
 * from master with counts and checksums; idempotent; a new version on a change), the built-in data
 * deployer into production (backup, one transaction, verified), and the restore (byte-identical).
 */
let env: TestEnv | undefined;
afterEach(async () => {
  await env?.close();
  env = undefined;
});

const by = { actor: 'cli:test' };
const TABLES = ['users', 'accounts', 'transactions'];

/** R2 approved with data in master (the real chain), and production as earlier deployments left it. */
async function approved(): Promise<TestEnv> {
  env = await approvedRelease();
  return env;
}

const production = seedProduction;

const rowsOf = async (e: TestEnv, table: string) => (await e.sql(`select t::text as row from ${table} t order by 1`)).rows.map((r) => r.row as string);

describe('release bundle', () => {
  it('is refused before approval, saying to approve first', async () => {
    const e = await approved();
    await e.db.control('release_states').where({ release: 'R2' }).update({ state: 'tier2-passed' });
    const err = (await createBundle(e.ctx, 'R2', { code: 'v1', ...by }).catch((x: unknown) => x)) as TributaryError;
    expect(err).toBeInstanceOf(TributaryError);
    expect(err.code).toBe('gate_state');
    expect(exitCodeFor(err)).toBe(3);
    expect(err.message).toBe('release R2 is tier2-passed: cannot bundle it for production; approve it first: tributary approve R2');
    expect(await e.db.control('bundles')).toEqual([]);
    expect(await e.db.control('audit_events').where({ action: 'gate.bundle.refused', release: 'R2' })).toHaveLength(1);
    await expect(requireBundle(e.ctx, 'R2')).rejects.toThrow('release R2 has no bundle: make one first: tributary bundle R2 --code <version>');
  });

  it('exports the release from master with counts and checksums; idempotent; a new version on a change of code or data; immutable', async () => {
    const e = await approved();
    const b1 = await createBundle(e.ctx, 'R2', { code: 'git:abc123', ...by });
    expect([b1.version, b1.codeVersion, b1.created, b1.migration]).toEqual([1, 'git:abc123', true, null]);
    expect(b1.tables.map((t) => [t.entity, t.table, t.rows, t.file])).toEqual([
      ['users', 'users', 4, '01-users.copy.gz'],
      ['accounts', 'accounts', 2, '02-accounts.copy.gz'],
      ['transactions', 'transactions', 1, '03-transactions.copy.gz'],
    ]);
    expect(b1.dataFingerprint).toMatch(/^[0-9a-f]{64}$/);
    // the same checksums the promotion verified on master (exactly R2's rows, not R1's)
    const promoted = await e.db.control('promotions').where({ release: 'R2' });
    for (const t of b1.tables) expect(t.checksum).toBe(promoted.find((p) => p.entity === t.entity)!.checksum);
    expect(b1.dir).toBe(path.join(e.dir, '.tributary/bundles/R2/v1'));
    const text = zlib.gunzipSync(fs.readFileSync(path.join(b1.dir, '01-users.copy.gz'))).toString();
    expect(text.trim().split('\n')).toHaveLength(4);
    expect(text).toContain("O'Hare \\\\ \\t tab");
    expect(text).not.toContain('old@x');
    expect(fs.readdirSync(path.dirname(b1.dir))).toEqual(['v1']);

    // the same code version and data: the same bundle
    const again = await createBundle(e.ctx, 'R2', { code: 'git:abc123', ...by });
    expect([again.id, again.version, again.created, again.dataFingerprint]).toEqual([b1.id, 1, false, b1.dataFingerprint]);
    // another code version: v2, same data
    const b2 = await createBundle(e.ctx, 'R2', { code: 'git:def456', ...by });
    expect([b2.version, b2.created, b2.dataFingerprint]).toEqual([2, true, b1.dataFingerprint]);
    // the data changes in master: v3
    await e.sql(`update master.accounts set balance = 99.99 where id = 11 and release = 'R2'`);
    const b3 = await createBundle(e.ctx, 'R2', { code: 'git:def456', ...by });
    expect([b3.version, b3.created]).toEqual([3, true]);
    expect(b3.dataFingerprint).not.toBe(b1.dataFingerprint);
    expect(b3.tables.map((t) => t.checksum)).toEqual([b1.tables[0]!.checksum, expect.not.stringMatching(b1.tables[1]!.checksum), b1.tables[2]!.checksum]);
    expect((await listBundles(e.ctx, 'R2')).map((b) => [b.version, b.codeVersion])).toEqual([[1, 'git:abc123'], [2, 'git:def456'], [3, 'git:def456']]);
    expect((await getBundle(e.ctx, 'R2'))!.version).toBe(3);
    expect((await getBundle(e.ctx, 'R2', 1))!.codeVersion).toBe('git:abc123');
    expect(await getBundle(e.ctx, 'R2', 9)).toBeNull();
    expect(fs.readdirSync(path.join(e.dir, '.tributary/bundles/R2')).sort()).toEqual(['v1', 'v2', 'v3']);
    const audit = await e.db.control('audit_events').where({ action: 'bundle.create', release: 'R2' }).orderBy('id');
    expect(audit.map((a) => [a.subject, a.details.codeVersion])).toEqual([['v1', 'git:abc123'], ['v2', 'git:def456'], ['v3', 'git:def456']]);

    // a bundle row is never updated
    await expect(e.db.control('bundles').where({ id: b1.id }).update({ code_version: 'git:evil' })).rejects.toThrow(/bundles are immutable \(UPDATE refused\)/);
    expect((await getBundle(e.ctx, 'R2', 1))!.codeVersion).toBe('git:abc123');

    // the CLI: version, code version, per table rows and checksum
    const res = await cli(['--config', e.configFile, 'bundle', 'R2', '--code', 'git:def456']);
    expect(res.code, output(res)).toBe(0);
    expect(res.stdout).toContain('Bundle R2 v3 (unchanged');
    expect(res.stdout).toContain('code version:  git:def456');
    expect(res.stdout).toMatch(new RegExp(`accounts\\s+2\\s+${b3.tables[1]!.checksum}`));
    const list = await cli(['--config', e.configFile, '--json', 'bundle', 'R2', '--list']);
    expect(list.code, output(list)).toBe(0);
    expect((JSON.parse(list.stdout) as { version: number }[]).map((b) => b.version)).toEqual([1, 2, 3]);
    const one = await cli(['--config', e.configFile, 'bundle', 'R2', '--version', '1']);
    expect(one.code, output(one)).toBe(0);
    expect(one.stdout).toContain('Bundle R2 v1\n  code version:  git:abc123');
  });

  it('refuses a cell corrupted on its way into the file (the real CLI, failpoint bundle.copy=corrupt): names the table, never says verified, makes no bundle', async () => {
    const e = await approved();
    const r = await cli(['--config', e.configFile, 'bundle', 'R2', '--code', 'v1'], { env: { TRIBUTARY_FAILPOINTS: 'bundle.copy=corrupt' } });
    expect(r.code, output(r)).not.toBe(0);
    expect(r.stderr).toMatch(/bundling R2: master env master, table "master"\."users": the file written does not hold the rows as the source sent them \(4 line\(s\) written; the source sent 4 row\(s\) and counted 4, and their text differs\); nothing was written/);
    expect(`${r.stdout}${r.stderr}`).not.toMatch(/verified/i);
    expect(await e.db.control('bundles')).toEqual([]);
    expect(fs.readdirSync(path.join(e.dir, '.tributary/bundles/R2'))).toEqual([]);
    // the same bundle without the fault is made
    const ok = await cli(['--config', e.configFile, 'bundle', 'R2', '--code', 'v1']);
    expect(ok.code, output(ok)).toBe(0);
    expect((await e.db.control('bundles')).map((b) => b.version)).toEqual([1]);
  });
});

describe('data deployer', () => {
  it("replaces the release's rows in one verified transaction; the restore gives byte-identical tables", async () => {
    const e = await approved();
    await production(e);
    const bundle = await createBundle(e.ctx, 'R2', { code: 'v1', ...by });
    const before = await dataChecksums(e.ctx, 'production', TABLES);
    expect(before.map((t) => [t.table, t.exists, t.rows])).toEqual([['users', true, 3], ['accounts', true, 2], ['transactions', false, 0]]);
    const rowsBefore = { users: await rowsOf(e, 'prod.users'), accounts: await rowsOf(e, 'prod.accounts') };

    const backup = await backupData(e.ctx, bundle, { deploymentId: 42, ...by });
    expect(backup.tables.map((t) => [t.table, t.existed, t.backup, t.rows, t.checksum])).toEqual([
      ['users', true, `users_${backup.id}`, 3, before[0]!.checksum],
      ['accounts', true, `accounts_${backup.id}`, 2, before[1]!.checksum],
      ['transactions', false, null, 0, '0'],
    ]);
    expect(await rowsOf(e, `${BACKUP_SCHEMA}.users_${backup.id}`)).toEqual(rowsBefore.users);
    const stored = (await getBackup(e.ctx, backup.id))!;
    expect([stored.deploymentId, stored.bundleId, stored.env, stored.release, stored.restoredAt]).toEqual([42, bundle.id, 'production', 'R2', null]);

    const res = await deployData(e.ctx, bundle, stored, by);
    expect(res.tables.map((t) => [t.table, t.deleted, t.rows, t.checksum, t.created])).toEqual([
      ['users', 1, 4, bundle.tables[0]!.checksum, false],
      ['accounts', 1, 2, bundle.tables[1]!.checksum, false],
      ['transactions', 0, 1, bundle.tables[2]!.checksum, true],
    ]);
    // production now holds R1 untouched and master's R2 rows, exactly
    expect((await e.sql(`select id, release from prod.users order by id`)).rows).toEqual([
      { id: 1, release: 'R2' }, { id: 2, release: 'R2' }, { id: 20, release: 'R2' }, { id: 100, release: 'R1' }, { id: 101, release: 'R1' }, { id: 1500, release: 'R2' },
    ]);
    for (const t of TABLES) {
      expect(await rowsOf(e, `(select * from prod.${t} where release = 'R2')`)).toEqual(await rowsOf(e, `(select * from master.${t} where release = 'R2')`));
    }
    // the table the deploy created has staging's shape (not partitioned, primary key id)
    expect((await e.sql(`select relkind, (select pg_get_constraintdef(oid) from pg_constraint where conrelid = 'prod.transactions'::regclass and contype = 'p') as pk from pg_class where oid = 'prod.transactions'::regclass`)).rows).toEqual([{ relkind: 'r', pk: 'PRIMARY KEY (id)' }]);
    const during = await dataChecksums(e.ctx, 'production', TABLES);
    expect(during[0]!.checksum).not.toBe(before[0]!.checksum);
    const r2 = await dataChecksums(e.ctx, 'production', TABLES, { release: 'R2' });
    expect(r2.map((t) => t.checksum)).toEqual(bundle.tables.map((t) => t.checksum));

    const restored = await restoreData(e.ctx, stored, by);
    expect(restored.tables.map((t) => [t.table, t.rows, t.checksum, t.before.checksum === t.after.checksum, t.dropped])).toEqual([
      ['users', 3, before[0]!.checksum, true, false],
      ['accounts', 2, before[1]!.checksum, true, false],
      ['transactions', 0, '0', true, true],
    ]);
    const after = await dataChecksums(e.ctx, 'production', TABLES);
    expect(after).toEqual(before);
    // byte-identical: every row's text, timestamps to the microsecond, nulls and escapes included
    expect(await rowsOf(e, 'prod.users')).toEqual(rowsBefore.users);
    expect(await rowsOf(e, 'prod.accounts')).toEqual(rowsBefore.accounts);
    expect((await e.sql(`select to_regclass('prod.transactions') as t`)).rows).toEqual([{ t: null }]);
    expect((await getBackup(e.ctx, backup.id))!.restoredAt).not.toBeNull();
    const actions = (await e.db.control('audit_events').where({ release: 'R2' }).where('action', 'like', 'deploy.data%').orderBy('id')).map((a) => a.action);
    expect(actions).toEqual(['deploy.data.backup', 'deploy.data', 'deploy.data.restore']);
    // a restored backup is not deployed against again
    await expect(deployData(e.ctx, bundle, (await getBackup(e.ctx, backup.id))!, by)).rejects.toThrow(/backup #\d+ was restored at .*; take a new one/);

    // again, with production's accounts referencing users and a table the package does not touch
    // referencing R1's user (TRUNCATE is refused there: only the rows that differ are replaced)
    await e.sql(`alter table prod.accounts add foreign key (user_id) references prod.users (id);
      create table prod.notes (id int primary key, user_id int references prod.users (id), body text);
      insert into prod.notes values (1, 100, 'keep me')`);
    const second = await backupData(e.ctx, bundle, by);
    expect(second.id).not.toBe(backup.id);
    await deployData(e.ctx, bundle, second, by);
    expect((await dataChecksums(e.ctx, 'production', ['users'], { release: 'R2' }))[0]!.checksum).toBe(bundle.tables[0]!.checksum);
    const back = await restoreData(e.ctx, second, by);
    expect(back.tables.every((t) => t.before.checksum === t.after.checksum && t.before.rows === t.after.rows)).toBe(true);
    expect(await dataChecksums(e.ctx, 'production', TABLES)).toEqual(before);
    expect(await rowsOf(e, 'prod.users')).toEqual(rowsBefore.users);
    expect(await rowsOf(e, 'prod.accounts')).toEqual(rowsBefore.accounts);
    expect(await rowsOf(e, 'prod.notes')).toEqual(['(1,100,"keep me")']);

    // retention: the copies dropped, a restore says why it cannot be done
    await dropBackup(e.ctx, second, by);
    expect((await e.sql(`select count(*)::int as n from pg_tables where schemaname = $1`, [BACKUP_SCHEMA])).rows[0].n).toBe(2);
    await expect(restoreData(e.ctx, second, by)).rejects.toThrow(`restoring backup #${second.id} into env production, table prod.users: its copy ${BACKUP_SCHEMA}.users_${second.id} is gone, so the table cannot be restored; nothing was restored`);
  });

  it('refuses a cell corrupted on its way from the file into production (the real CLI, failpoint deploy.copy=corrupt): names the table, never says verified, production unchanged', async () => {
    const app = fs.mkdtempSync(path.join(os.tmpdir(), 'tributary-corrupt-app-'));
    const e = (env = await readyToDeploy(app));
    const before = await dumpProduction(e);
    const d = await requestDeployment(e.ctx, 'R2', { actor: 'U0RM1' });
    await decideGo(e.ctx, d.id, { actor: 'U0RM2', decision: 'go', rationale: 'go ahead' });
    const r = await cli(['--config', e.configFile, '--as', 'rm2', 'deploy', 'run', String(d.id)], { env: { TRIBUTARY_FAILPOINTS: 'deploy.copy=corrupt' } });
    expect(r.code, output(r)).not.toBe(0);
    expect(`${r.stdout}${r.stderr}`).toMatch(/deploying R2 into env production, table prod\.users: after loading, 4 row\(s\) of R2 with checksum \d+, but bundle v1 has 4 with checksum \d+; production is unchanged/);
    // the only thing verified is the rollback's restore of the backup
    expect(`${r.stdout}${r.stderr}`.split('\n').filter((l) => /verified/i.test(l))).toEqual([expect.stringMatching(/^\s*\[done\s*\] undo deploy-data \([\d.]+ s\): data restored and verified identical to before the deploy: /)]);
    expect(await dumpProduction(e)).toBe(before);
    const failed = await e.db.control('audit_events').where({ release: 'R2', action: 'deploy.data.failed' });
    expect(failed.map((a) => a.details.table)).toEqual(['prod.users']);
  });

  it('a failure mid-deploy leaves production unchanged and names env and table', async () => {
    const e = await approved();
    await production(e);
    // accounts in production refuses R2's AC-DANA (balance 12.30): users is loaded first, then this fails
    await e.sql(`alter table prod.accounts add constraint small_balance check (balance < 10)`);
    const bundle = await createBundle(e.ctx, 'R2', { code: 'v1', ...by });
    const before = await dataChecksums(e.ctx, 'production', TABLES);
    const rowsBefore = await rowsOf(e, 'prod.users');
    const backup = await backupData(e.ctx, bundle, by);
    const err = (await deployData(e.ctx, bundle, backup, by).catch((x: unknown) => x)) as TributaryError;
    expect(err).toBeInstanceOf(TributaryError);
    expect(err.code).toBe('database');
    expect(err.message).toMatch(/^deploying R2 bundle v1 into env production, table prod\.accounts failed: .*small_balance.*; production is unchanged$/);
    expect(err.details).toMatchObject({ env: 'production', table: 'prod.accounts' });
    expect(await dataChecksums(e.ctx, 'production', TABLES)).toEqual(before);
    expect(await rowsOf(e, 'prod.users')).toEqual(rowsBefore);
    const failed = await e.db.control('audit_events').where({ release: 'R2', action: 'deploy.data.failed' });
    expect(failed.map((a) => a.details.table)).toEqual(['prod.accounts']);

    // an incompatible column: named too
    await e.sql(`alter table prod.accounts drop constraint small_balance; alter table prod.accounts add column region text not null default 'eu';
      alter table prod.accounts alter column region drop default`);
    const err2 = (await deployData(e.ctx, bundle, backup, by).catch((x: unknown) => x)) as TributaryError;
    expect(err2.message).toMatch(/env production, table prod\.accounts failed: .*"region".*; production is unchanged/);

    // a bundle file altered since: refused by the bundle's manifest before production is touched, naming the file
    await e.sql(`alter table prod.accounts drop column region`);
    const file = path.join(bundle.dir, bundle.tables[2]!.file);
    const unaltered = fs.readFileSync(file);
    fs.writeFileSync(file, zlib.gzipSync(zlib.gunzipSync(unaltered).toString().replace('12.50', '99.00')));
    const err3 = (await deployData(e.ctx, bundle, backup, by).catch((x: unknown) => x)) as TributaryError;
    expect(err3.code).toBe('package_refused');
    expect(err3.message).toMatch(/^.*\/03-transactions\.copy\.gz: altered: its SHA-256 [0-9a-f]{16}… \(\d+ bytes\) is not the manifest's/);
    expect(await dataChecksums(e.ctx, 'production', TABLES)).toEqual(before);
    expect(await rowsOf(e, 'prod.users')).toEqual(rowsBefore);
    fs.writeFileSync(file, unaltered);

    // production unreachable: the env is named, its password never appears
    const envs = new Map(e.config.envs);
    envs.set('production', { name: 'production', role: 'production', precedence: 0, url: 'postgres://deployer:s3cret-pw-42@127.0.0.1:1/prod' });
    const down = { ...e.ctx, config: { ...e.config, envs } };
    for (const attempt of [() => backupData(down, bundle, by), () => deployData(down, bundle, backup, by), () => dataChecksums(down, 'production', TABLES)]) {
      const x = (await (attempt() as Promise<unknown>).catch((y: unknown) => y)) as TributaryError;
      expect(x.code).toBe('env_unreachable');
      expect(x.message).toContain('env production (127.0.0.1:1/prod)');
      expect(x.message).not.toContain('s3cret');
    }
  });
});
