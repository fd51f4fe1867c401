import pg from 'pg';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { paramsFromUrl } from '../../src/db/connect.js';
import { consolidate } from '../../src/engine/consolidate/run.js';
import { tagRelease } from '../../src/engine/gate/tag.js';
import { insertUsers, testEnv, urlFor, type TestEnv } from '../helpers.js';
import { cli, output, startCli } from '../process.js';

const ACTOR = 'cli:test';
const LOCK_KEY = 'tributary:consolidate:R2';

/** Many rows per env, set-based, so a consolidation takes long enough to overlap with another. */
async function seedMany(env: TestEnv, perEnv: number): Promise<void> {
  for (const [i, schema] of ['st1', 'st2', 'st3'].entries()) {
    const base = (i + 1) * 1_000_000;
    await env.sql(
      `insert into ${schema}.users (id, email, username, name, role, phone, city, updated_at, release, feature, created_by, created_at)
       select g, 'u' || g || '@${schema}.example', 'u' || g, 'User ' || g, 'Customer', '+1 555 ' || g, 'Oslo', now(), 'R2',
              (array['FEAT-C','FEAT-H1','FEAT-M'])[1 + g % 3], 'qa', timestamptz '2024-01-10T09:00:00Z' + (g % 1000) * interval '1 minute'
         from generate_series($1::int, $2::int) g`,
      [base + 1, base + perEnv],
    );
  }
}

async function runs(env: TestEnv): Promise<{ id: number; status: string; error: string | null; pid: number }[]> {
  return env.db.control('runs').where({ release: 'R2', kind: 'consolidate' }).orderBy('id').select('id', 'status', 'error', 'pid');
}

async function advisoryLocksHeld(env: TestEnv): Promise<number> {
  const res = await env.sql(`select count(*)::int as n from pg_locks where locktype = 'advisory' and database = (select oid from pg_database where datname = current_database()) and granted`);
  return res.rows[0].n as number;
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 30_000, everyMs = 20): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

describe('concurrency and crashes, with real processes', () => {
  let env: TestEnv;

  beforeEach(async () => {
    env = await testEnv(3);
  });

  afterEach(async () => {
    await env.close();
  });

  it('refuses a consolidation while another holds the release (deterministic, lock held by the test)', async () => {
    await insertUsers(env, 'st1', [{ id: 1, email: 'a@x.example' }]);
    await insertUsers(env, 'st2', [{ id: 2, email: 'b@x.example' }]);
    await tagRelease(env.ctx, 'R2', { actor: ACTOR });

    const holder = new pg.Client(paramsFromUrl(urlFor(env.database)));
    await holder.connect();
    try {
      await holder.query('select pg_advisory_lock(hashtext($1))', [LOCK_KEY]);
      const refused = await cli(['--config', env.configFile, 'consolidate', 'R2']);
      expect(refused.code, output(refused)).toBe(3);
      expect(refused.stderr).toContain('a consolidation of R2 is already running');
      expect(await runs(env)).toEqual([]);
      const audit = await env.db.control('audit_events').where({ release: 'R2', action: 'gate.consolidate.refused' }).pluck('details');
      expect(audit).toEqual([{ reason: 'busy' }]);

      const json = await cli(['--config', env.configFile, '--json', 'consolidate', 'R2']);
      expect(json.code, output(json)).toBe(3);
      expect(JSON.parse(json.stdout)).toMatchObject({ error: 'gate_busy', message: expect.stringContaining('already running') });
    } finally {
      await holder.query('select pg_advisory_unlock(hashtext($1))', [LOCK_KEY]);
      await holder.end();
    }

    const ok = await cli(['--config', env.configFile, 'consolidate', 'R2']);
    expect(ok.stderr).not.toContain('tributary:');
    expect(ok.code, output(ok)).toBe(0);
    expect(ok.stdout).toContain('records collected     2');
    expect((await runs(env)).map((r) => r.status)).toEqual(['succeeded']);
  });

  it('two processes consolidating one release at once: exactly one succeeds, the other is refused', async () => {
    await seedMany(env, 50_000);
    await tagRelease(env.ctx, 'R2', { actor: ACTOR });

    const a = startCli(['--config', env.configFile, '--as', 'alice', 'consolidate', 'R2']);
    const b = startCli(['--config', env.configFile, '--as', 'bob', 'consolidate', 'R2']);
    const results = await Promise.all([a.done, b.done]);
    const codes = results.map((r) => r.code).sort();
    expect(codes, results.map(output).join('\n')).toEqual([0, 3]);
    const winner = results.find((r) => r.code === 0)!;
    const loser = results.find((r) => r.code === 3)!;
    expect(winner.stdout).toContain('records collected     150000');
    expect(loser.stderr).toContain('a consolidation of R2 is already running');
    // it names the running run once the winner has recorded it (the refusal can come just before)
    if (loser.stderr.includes('(run #')) expect(loser.stderr).toMatch(/\(run #\d+, started by cli:(alice|bob) at /);

    const all = await runs(env);
    expect(all.map((r) => r.status)).toEqual(['succeeded']);
    const state = await env.db.control('release_states').where({ release: 'R2' }).first();
    expect(state).toMatchObject({ state: 'consolidated', current_run_id: all[0]!.id });
  });

  it('two people deciding one conflict from two processes at once: exactly one decision is applied', async () => {
    await insertUsers(env, 'st1', [{ id: 1, email: 'dana@x.example', role: 'Administrator', feature: 'FEAT-C' }]);
    await insertUsers(env, 'st2', [{ id: 2, email: 'dana@x.example', role: 'Customer', feature: 'FEAT-M' }]);
    await tagRelease(env.ctx, 'R2', { actor: ACTOR });
    await consolidate(env.ctx, 'R2', { actor: ACTOR });
    const [conflict] = await env.db.control('conflicts').where({ release: 'R2' }).select('id', 'code', 'kind');
    expect(conflict).toMatchObject({ code: 'C-001', kind: 'core-conflict' });

    const alice = startCli(['--config', env.configFile, '--as', 'alice', 'decide', 'C-001', '--keep', '1', '--rationale', 'ST-1 is right']);
    const bob = startCli(['--config', env.configFile, '--as', 'bob', 'decide', 'C-001', '--keep', '2', '--rationale', 'ST-2 is right']);
    const [ra, rb] = await Promise.all([alice.done, bob.done]);
    expect([ra.code, rb.code].sort(), `${output(ra)}\n${output(rb)}`).toEqual([0, 3]);
    const [won, lost, winnerName, loserName] = ra.code === 0 ? [ra, rb, 'alice', 'bob'] : [rb, ra, 'bob', 'alice'];
    expect(won.stdout).toContain(`C-001 decided by cli:${winnerName}`);
    expect(lost.stderr).toContain(`C-001 was already decided by cli:${winnerName}`);

    const decisions = await env.db.control('decisions').where({ conflict_id: conflict.id });
    expect(decisions).toHaveLength(1);
    expect(decisions[0]).toMatchObject({ decided_by: `cli:${winnerName}`, action: 'keep', params: { action: 'keep', version: winnerName === 'alice' ? 1 : 2 } });
    const row = await env.db.control('conflicts').where({ id: conflict.id }).first();
    expect(row).toMatchObject({ status: 'decided', decided_by: `cli:${winnerName}` });
    const audited = await env.db.control('audit_events').where({ release: 'R2', action: 'decision' }).pluck('actor');
    expect(audited).toEqual([`cli:${winnerName}`]);
    expect(audited).not.toContain(`cli:${loserName}`);
  });

  it('a consolidation killed with SIGKILL mid-run does not block the next one', async () => {
    await seedMany(env, 50_000);
    await tagRelease(env.ctx, 'R2', { actor: ACTOR });

    const victim = startCli(['--config', env.configFile, '--as', 'victim', 'consolidate', 'R2']);
    const pid = victim.child.pid!;
    // mid-run: the run is recorded and its work area is being filled
    const run = await waitFor('the run to start', async () => (await runs(env)).find((r) => r.status === 'running' && r.pid === pid));
    await waitFor('the work area', async () => {
      const res = await env.sql(`select count(*)::int as n from pg_tables where schemaname = 'work' and tablename like $1`, [`r${run.id}\\_%`]);
      return res.rows[0].n > 0;
    });
    expect(victim.child.kill('SIGKILL')).toBe(true);
    const killed = await victim.done;
    expect(killed.signal).toBe('SIGKILL');
    expect((await runs(env)).find((r) => r.id === run.id)!.status).toBe('running');

    // PostgreSQL notices the dead client and releases its session lock
    await waitFor('the dead session to go', async () => (await advisoryLocksHeld(env)) === 0, 30_000, 100);

    const next = await cli(['--config', env.configFile, '--as', 'survivor', 'consolidate', 'R2']);
    expect(next.code, output(next)).toBe(0);
    expect(next.stdout).toContain('records collected     150000');
    const after = await runs(env);
    expect(after.map((r) => r.status)).toEqual(['failed', 'succeeded']);
    expect(after[0]!.error).toContain('abandoned');
    const leftovers = await env.sql(`select tablename from pg_tables where schemaname = 'work' and tablename like $1`, [`r${run.id}\\_%`]);
    expect(leftovers.rows).toEqual([]);
    const status = await cli(['--config', env.configFile, '--json', 'status', 'R2']);
    const shown = JSON.parse(status.stdout);
    expect(shown).toMatchObject({ state: 'consolidated', run: { id: after[1]!.id, status: 'succeeded', steps: { collection: expect.any(Number) } } });
    expect(shown.lastFailure).toBeUndefined();
  });
});
