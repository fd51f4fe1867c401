import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { holdSessionLock } from '../../../src/engine/kernel/sessionLock.js';
import { TEST_RUN_LOCK } from '../../../src/engine/tiers/run.js';
import { claimSlot, executeNightly, nightlyLockHeld, withNightlyLock, NIGHTLY_LOCK, type SlotRow } from '../../../src/engine/nightly/run.js';
import { testEnv, type TestEnv, advisoryLockHolder, strictIdleTimeout } from '../../helpers.js';

/**
 * The nightly lock held as long as the work: kept alive through a server's idle_session_timeout, lost
 * safely when its session is terminated (the holder is told at once), and a slot taken over by another
 * process is never overwritten by the one that lost it.
 */
let env: TestEnv;

beforeAll(async () => {
  env = await testEnv(1);
});

afterAll(async () => {
  await env?.close();
});

/** The pid of the session holding the lock. */
const lockHolder = () => advisoryLockHolder(env.db.control, NIGHTLY_LOCK);

describe('the nightly lock', () => {
  it('outlasts an idle_session_timeout shorter than the run (its session is kept busy)', async () => {
    // new sessions of this database end after 300 ms idle, as a strict server would end them
    const strict = await strictIdleTimeout(env.database, 300);
    try {
      const r = await withNightlyLock(env.ctx, async (lost) => {
        const holder = await lockHolder();
        // the server ends idle sessions meanwhile (twice over): the lock's is kept busy
        await strict.elapsed();
        await strict.elapsed();
        return { aborted: lost.aborted, held: await nightlyLockHeld(env.ctx), same: (await lockHolder()) === holder };
      });
      expect(r).toEqual({ busy: false, value: { aborted: false, held: true, same: true } });
    } finally {
      await strict.reset();
    }
  });

  it('tells its holder at once when its session is terminated, and the slot it claimed is not overwritten', async () => {
    const slot = { key: '2026-12-01T02:00:00[UTC]', at: new Date('2026-12-01T02:00:00Z') };
    const outcome = await withNightlyLock(env.ctx, async (lost) => {
      const row = (await claimSlot(env.ctx, 'nightly', slot, 'schedule')) as SlotRow;
      const pid = await lockHolder();
      expect(pid).toBeDefined();
      const aborted = new Promise<void>((resolve) => lost.addEventListener('abort', () => resolve()));
      await env.db.control.raw('select pg_terminate_backend(?, 60000)', [pid!]);
      await aborted;
      // another process (here: the same code, on its own connection) takes the slot over meanwhile
      const other = await withNightlyLock(env.ctx, async () => {
        const again = await claimSlot(env.ctx, 'nightly', slot, 'schedule');
        await env.db.control('nightly_runs').where({ id: again!.id }).update({ status: 'done', finished_at: env.db.control.fn.now() });
        return again;
      });
      expect(other.busy).toBe(false);
      // the first process goes on: it must not write over the newer claim
      return executeNightly(env.ctx, row, 'cli:test', lost);
    });
    expect(outcome.busy).toBe(false);
    const row = await env.db.control('nightly_runs').where({ slot: slot.key }).first();
    expect(row.status).toBe('done');
    expect(row.attempts).toBe(2);
    expect(await env.db.control('audit_events').where({ action: 'nightly.failed' })).toHaveLength(0);
  });

  it('a slot interrupted twice is failed, and its dead test run closed with it', async () => {
    const slot = { key: '2026-12-02T02:00:00[UTC]', at: new Date('2026-12-02T02:00:00Z') };
    const r = await withNightlyLock(env.ctx, async () => {
      const row = (await claimSlot(env.ctx, 'nightly', slot, 'schedule')) as SlotRow;
      const [run] = await env.db.control('test_runs').insert({ release: 'R2', tier: 'nightly', env: 'master', dispatch: 'local', started_by: 'dead', selection: '{}' }).returning('id');
      // two processes claimed it and died, their test run left running
      await env.db.control('nightly_runs').where({ id: row.id }).update({ attempts: 2, claimed_by: 'gone:1', test_run_id: run.id });
      return { again: await claimSlot(env.ctx, 'nightly', slot, 'schedule'), run: run.id as number };
    });
    expect(r.busy).toBe(false);
    if (r.busy) return;
    expect(r.value.again).toBeNull();
    expect((await env.db.control('nightly_runs').where({ slot: slot.key }).first()).status).toBe('failed');
    expect((await env.db.control('test_runs').where({ id: r.value.run }).first()).status).toBe('errored');
  });

  it('a new claim waits for the previous nightly’s test run to stop (its process lost the lock but lives), then closes it', async () => {
    const slot = { key: '2026-12-03T02:00:00[UTC]', at: new Date('2026-12-03T02:00:00Z') };
    const [run] = await env.db.control('test_runs').insert({ release: 'R2', tier: 'nightly', env: 'master', dispatch: 'local', started_by: 'older', selection: '{}' }).returning('id');
    // the older process still runs its test run: it holds the run's lock
    const older = (await holdSessionLock(env.ctx.db.controlParams, TEST_RUN_LOCK(run.id), 'the older test run'))!;
    const claim = withNightlyLock(env.ctx, () => claimSlot(env.ctx, 'nightly', slot, 'schedule'));
    await vi.waitFor(async () => expect((await env.sql(`select count(*)::int as n from pg_locks where locktype = 'advisory' and not granted and database = (select oid from pg_database where datname = current_database())`)).rows[0].n).toBe(1), { timeout: 60_000, interval: 20 });
    expect((await env.db.control('test_runs').where({ id: run.id }).first()).status).toBe('running');
    // it stops (its shards killed): only then does the new run start
    await older.release();
    const claimed = await claim;
    expect(claimed.busy).toBe(false);
    expect(claimed.busy ? null : claimed.value?.slot).toBe(slot.key);
    expect((await env.db.control('test_runs').where({ id: run.id }).first()).status).toBe('errored');
  });
});
