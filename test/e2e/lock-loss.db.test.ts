import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { applyDecision } from '../../src/engine/review/decide.js';
import { consolidate } from '../../src/engine/consolidate/run.js';
import { tagRelease } from '../../src/engine/gate/tag.js';
import { paramsFromUrl } from '../../src/db/connect.js';
import { insertUsers, testEnv, type TestEnv, advisoryLockHolder, strictIdleTimeout, urlFor } from '../helpers.js';
import { cli, output, processState, startCli } from '../process.js';

/**
 * The consolidation lock, held by a real CLI process for as long as the run: kept alive through a server's
 * idle_session_timeout shorter than the run, and, when its session is terminated (pg_terminate_backend)
 * while its process lives, another consolidation takes the release over, and the first, let go on, finds
 * it lost its lock and records nothing over the newer run.
 */
let env: TestEnv;

beforeAll(async () => {
  env = await testEnv(2);
  await insertUsers(env, 'st1', [{ id: 20, email: 'gus@x', role: 'Admin', feature: 'FEAT-C' }]);
  await insertUsers(env, 'st2', [{ id: 21, email: 'gus@x', role: 'Customer' }]);
  const by = { actor: 'cli:test' };
  await tagRelease(env.ctx, 'R2', by);
  await consolidate(env.ctx, 'R2', by);
  await applyDecision(env.ctx, 'R2', 'C-001', { action: 'keep', version: 1 }, { actor: 'U0ALICE', rationale: 'checked' });
});

afterAll(async () => {
  await env?.close();
});

/** The pid of the session holding the lock. */
const lockSession = () => advisoryLockHolder(env.db.control, 'tributary:consolidate:R2');

describe('a consolidation that lost its lock', () => {
  it('is taken over by another, and then records nothing over it', async () => {
    const first = startCli(['--config', env.configFile, 'consolidate', 'R2'], { env: { TRIBUTARY_FAILPOINTS: 'consolidate.before-finish=stop' } });
    let stderr = '';
    await new Promise<void>((resolve, reject) => {
      first.child.stderr!.on('data', (d: Buffer) => {
        stderr += d.toString();
        if (stderr.includes('failpoint consolidate.before-finish: stopped')) resolve();
      });
      first.child.on('close', () => reject(new Error(`ended before the failpoint:\n${stderr}`)));
    });
    const firstRun = await env.db.control('runs').where({ release: 'R2', kind: 'consolidate', status: 'running' }).first();
    const pid = await lockSession();
    expect(pid).toBeDefined();
    // waits (up to 60 s) until the session has ended and its lock with it
    const ended = await env.db.control.raw<{ rows: { ok: boolean }[] }>('select pg_terminate_backend(?, 60000) as ok', [pid!]);
    expect(ended.rows[0]!.ok).toBe(true);

    // its lock gone, another consolidation runs (and closes the first's run as abandoned)
    const second = await cli(['--config', env.configFile, '--json', 'consolidate', 'R2']);
    expect(second.code, output(second)).toBe(0);
    const secondRun = JSON.parse(second.stdout).runId as number;

    // it stopped itself right after printing the line: let it go on once it has
    await vi.waitFor(() => expect(processState(first.child.pid!)).toBe('T'), { timeout: 60_000, interval: 20 });
    first.child.kill('SIGCONT');
    const r = await first.done;
    expect(r.code, output(r)).not.toBe(0);
    expect(r.stderr).toContain('lost its lock');

    const state = await env.db.control('release_states').where({ release: 'R2' }).first();
    expect(state.current_run_id).toBe(secondRun);
    expect((await env.db.control('runs').where({ id: firstRun.id }).first()).status).toBe('failed');
    expect(await env.db.control('audit_events').where({ action: 'consolidate.finish', subject: `run #${firstRun.id}` })).toHaveLength(0);
    // the decision carried into the current run survives
    const decided = await env.db.control('conflicts').where({ run_id: secondRun, status: 'decided' });
    expect(decided).toHaveLength(1);
  });

  it('outlasts an idle_session_timeout shorter than the run: the same session holds it to the end', async () => {
    // the collection waits on a source table the test holds: the run is under way, its lock session idle
    const blocker = new pg.Client(paramsFromUrl(urlFor(env.database)));
    await blocker.connect();
    const strict = await strictIdleTimeout(env.database, 300);
    try {
      await blocker.query('begin');
      await blocker.query('lock table st1.users in access exclusive mode');
      const run = startCli(['--config', env.configFile, '--json', 'consolidate', 'R2']);
      let session: number | undefined;
      await vi.waitFor(
        async () => {
          session = await lockSession();
          expect(session).toBeDefined();
          const waiting = await blocker.query(`select count(*)::int as n from pg_locks where relation = 'st1.users'::regclass and not granted`);
          expect(waiting.rows[0].n).toBeGreaterThan(0);
        },
        { timeout: 60_000, interval: 50 },
      );
      // the server ends idle sessions meanwhile (twice over): the lock's is kept busy
      await strict.elapsed();
      await strict.elapsed();
      expect(await lockSession()).toBe(session);
      await blocker.query('commit');
      const r = await run.done;
      expect(r.code, output(r)).toBe(0);
      const runId = JSON.parse(r.stdout).runId as number;
      expect((await env.db.control('release_states').where({ release: 'R2' }).first()).current_run_id).toBe(runId);
    } finally {
      await blocker.query('rollback').catch(() => undefined);
      await blocker.end();
      await strict.reset();
    }
  });
});
