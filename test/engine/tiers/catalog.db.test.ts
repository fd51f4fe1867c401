import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { loadConfig, type Config } from '../../../src/config/load.js';
import { TributaryError } from '../../../src/errors.js';
import { balanceShards, catalogTests, learnTests, selectTests } from '../../../src/engine/tiers/catalog.js';
import type { CatalogTest, TestCaseResult } from '../../../src/engine/tiers/types.js';
import { configDoc, TEST_AUDIT_KEY, testEnv, type TestEnv } from '../../helpers.js';

/** The test catalog: learning tests from results, selecting them per tier, balancing shards. */

const RELEASES = {
  R1: {
    features: {
      'FEAT-101': { priority: 'high', owner: 'alice' },
      'FEAT-102': { priority: 'medium', owner: 'bob', deprecated: true },
    },
  },
  R2: {
    features: {
      'FEAT-201': { priority: 'critical', owner: 'carol' },
      'FEAT-202': { priority: 'high', owner: 'dan' },
      'FEAT-203': { priority: 'low', owner: 'erin', deprecated: true },
    },
  },
};

let dir: string;
let config: Config;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tributary-catalog-'));
  const file = path.join(dir, 'tributary.yml');
  fs.writeFileSync(file, stringify(configDoc('unused', 1, { releases: RELEASES })));
  config = loadConfig({ file, env: { TRIBUTARY_AUDIT_KEY: TEST_AUDIT_KEY } });
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const t = (id: string, features: string[], smoke = false, durationMs?: number): CatalogTest => ({
  id,
  name: id,
  classname: '',
  features,
  smoke,
  ...(durationMs !== undefined ? { durationMs } : {}),
});

const CATALOG: CatalogTest[] = [
  t('r1-a', ['FEAT-101']),
  t('r1-old', ['FEAT-102']),
  t('r1-old-smoke', ['FEAT-102'], true),
  t('r1-mixed', ['FEAT-102', 'FEAT-201']),
  t('r2-a', ['FEAT-201']),
  t('r2-b', ['FEAT-202']),
  t('r2-c', ['FEAT-202', 'FEAT-101']),
  t('r2-old', ['FEAT-203']),
  t('login-smoke', [], true),
  t('untagged', []),
  t('other-team', ['OPS-9']),
];
const ids = (tests: CatalogTest[]) => tests.map((x) => x.id);

function thrown(fn: () => unknown): TributaryError {
  try {
    fn();
  } catch (err) {
    if (err instanceof TributaryError) return err;
    throw err;
  }
  throw new Error('expected a TributaryError');
}

describe('selectTests', () => {
  it('tier 1: the tests of the release plan plus smoke; deprecated features drop out', () => {
    const s = selectTests(config, CATALOG, { tier: '1', release: 'R2' });
    expect(ids(s.tests)).toEqual(['login-smoke', 'r1-mixed', 'r2-a', 'r2-b', 'r2-c']);
    expect(ids(s.deprecated)).toEqual(['r1-old-smoke', 'r2-old']);
    expect(s.features).toEqual(['FEAT-201', 'FEAT-202']);
    expect(s.description).toBe("R2's 2 features + smoke: 5 tests (2 of deprecated features left out)");
  });

  it('tier 2 and nightly: every test but those of deprecated features only', () => {
    for (const tier of ['2', 'nightly'] as const) {
      const s = selectTests(config, CATALOG, { tier, release: 'R2' });
      expect(ids(s.tests)).toEqual(['login-smoke', 'other-team', 'r1-a', 'r1-mixed', 'r2-a', 'r2-b', 'r2-c', 'untagged']);
      expect(ids(s.deprecated)).toEqual(['r1-old', 'r1-old-smoke', 'r2-old']);
      expect(s.features).toEqual(['FEAT-101', 'FEAT-201', 'FEAT-202', 'OPS-9']);
    }
    expect(selectTests(config, CATALOG, { tier: '2', release: 'R2' }).description).toBe('every test: 8 tests (3 of deprecated features left out)');
    expect(selectTests(config, CATALOG, { tier: 'nightly', release: 'R1' }).description).toBe('nightly, every test: 8 tests (3 of deprecated features left out)');
  });

  it('smoke: the smoke tests', () => {
    const s = selectTests(config, CATALOG, { tier: 'smoke', release: 'R2' });
    expect(ids(s.tests)).toEqual(['login-smoke']);
    expect(ids(s.deprecated)).toEqual(['r1-old-smoke']);
    expect(s.description).toBe('smoke: 1 test (1 of deprecated features left out)');
  });

  it('feature: the tests of one feature, spelled in any case; an unknown feature lists the known ones', () => {
    const s = selectTests(config, CATALOG, { tier: 'feature', release: 'R2', feature: 'feat-101' });
    expect(ids(s.tests)).toEqual(['r1-a', 'r2-c']);
    expect(s.features).toEqual(['FEAT-101']);
    expect(s.description).toBe('FEAT-101: 2 tests');
    const old = selectTests(config, CATALOG, { tier: 'feature', release: 'R2', feature: 'FEAT-102' });
    expect(ids(old.tests)).toEqual(['r1-mixed']);
    expect(ids(old.deprecated)).toEqual(['r1-old', 'r1-old-smoke']);
    expect(old.description).toBe('FEAT-102 (deprecated): 1 test (2 of deprecated features left out)');
    const err = thrown(() => selectTests(config, CATALOG, { tier: 'feature', release: 'R2', feature: 'FEAT-999' }));
    expect(err.code).toBe('usage');
    expect(err.message).toBe('unknown feature "FEAT-999" (known: FEAT-101, FEAT-102, FEAT-201, FEAT-202, FEAT-203, OPS-9)');
    expect(thrown(() => selectTests(config, CATALOG, { tier: 'feature', release: 'R2' })).code).toBe('usage');
  });

  it('an unknown release or tier is refused', () => {
    expect(thrown(() => selectTests(config, CATALOG, { tier: '1', release: 'R9' })).code).toBe('unknown_release');
    expect(thrown(() => selectTests(config, CATALOG, { tier: '3' as never, release: 'R2' })).code).toBe('usage');
  });
});

describe('balanceShards', () => {
  it('longest first onto the least-loaded shard, by duration history', () => {
    const tests = [t('a', [], false, 8000), t('b', [], false, 7000), t('c', [], false, 6000), t('d', [], false, 5000), t('e', [], false, 4000), t('f', [], false, 2000), t('g', [], false, 2000)];
    const plan = balanceShards(tests, 3);
    expect(plan.byHistory).toBe(true);
    expect(plan.note).toBe('balanced by duration history (longest first)');
    expect(plan.shards.map(ids)).toEqual([
      ['a', 'f', 'g'],
      ['b', 'e'],
      ['c', 'd'],
    ]);
    expect(plan.expectedMs).toEqual([12000, 11000, 11000]);
  });

  it('tests without history count at the median of the known durations, and the note says so', () => {
    const tests = [t('a', [], false, 1000), t('b', [], false, 3000), t('c', [], false, 9000), t('new1', []), t('new2', [])];
    const plan = balanceShards(tests, 2);
    expect(plan.byHistory).toBe(true);
    expect(plan.note).toBe('balanced by duration history (longest first); 2 tests without history counted at the median 3.0 s');
    expect(plan.expectedMs.reduce((x, y) => x + y, 0)).toBe(1000 + 3000 + 9000 + 3000 + 3000);
    // c alone; b, new1, new2 at 3 s each on the other; a goes to the shard with fewer tests at equal load
    expect(plan.shards.map(ids)).toEqual([
      ['c', 'a'],
      ['b', 'new1', 'new2'],
    ]);
    expect(plan.expectedMs).toEqual([10000, 9000]);
  });

  it('with no history at all, balances by count and says so', () => {
    const tests = Array.from({ length: 10 }, (_, i) => t(`t${i}`, []));
    const plan = balanceShards(tests, 4);
    expect(plan.byHistory).toBe(false);
    expect(plan.note).toBe('no duration history: shards balanced by test count');
    expect(plan.shards.map((s) => s.length)).toEqual([3, 3, 2, 2]);
    expect(plan.expectedMs).toEqual([0, 0, 0, 0]);
    expect(plan.shards.flat().map((x) => x.id).sort()).toEqual(ids(tests).sort());
  });

  it('never returns empty shards: fewer tests than shards gives fewer shards; zero-length tests still spread', () => {
    expect(balanceShards([t('a', [], false, 5), t('b', [])], 8).shards.map(ids)).toEqual([['a'], ['b']]);
    expect(balanceShards([], 4)).toEqual({ shards: [], expectedMs: [], byHistory: false, note: 'no tests to run' });
    const zeros = Array.from({ length: 6 }, (_, i) => t(`z${i}`, [], false, 0));
    expect(balanceShards(zeros, 3).shards.map((s) => s.length)).toEqual([2, 2, 2]);
    expect(balanceShards([t('a', [])], 0).shards).toHaveLength(1);
  });

  it('10,000 tests over 64 shards: every test once, loads within one longest test of each other, fast', () => {
    let seed = 42;
    const rnd = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    const tests = Array.from({ length: 10_000 }, (_, i) => t(`t${i}`, [], false, i % 10 === 0 ? undefined : Math.round(50 + rnd() * 5000)));
    const t0 = performance.now();
    const plan = balanceShards(tests, 64);
    const ms = performance.now() - t0;
    expect(plan.shards).toHaveLength(64);
    expect(new Set(plan.shards.flat().map((x) => x.id)).size).toBe(10_000);
    const longest = Math.max(...tests.map((x) => x.durationMs ?? 0));
    expect(Math.max(...plan.expectedMs) - Math.min(...plan.expectedMs)).toBeLessThanOrEqual(longest);
    const total = plan.expectedMs.reduce((a, b) => a + b, 0);
    // LPT: the makespan is within a few percent of the lower bound here
    expect(Math.max(...plan.expectedMs) / Math.max(total / 64, longest)).toBeLessThan(1.01);
    expect(ms).toBeLessThan(1000);
  });
});

describe('learnTests and catalogTests against a real database', () => {
  let env: TestEnv;
  beforeAll(async () => {
    env = await testEnv(1, {}, { tables: false });
  });
  afterAll(async () => {
    await env?.close();
  });

  const c = (id: string, over: Partial<TestCaseResult> = {}): TestCaseResult => ({
    id,
    name: id.split('::').pop()!,
    classname: id.includes('::') ? id.split('::')[0]! : '',
    status: 'passed',
    durationMs: 100,
    features: [],
    smoke: false,
    properties: {},
    ...over,
  });

  it('upserts: counts new tests, keeps durations of skipped and errored runs, updates the rest', async () => {
    const db = env.db.control;
    const first = [
      c('pkg.A::one', { features: ['FEAT-201'], durationMs: 1500, file: 'tests/a.py' }),
      c('pkg.A::two', { smoke: true, durationMs: 250 }),
      c('solo', { status: 'skipped', durationMs: 0 }),
    ];
    expect(await learnTests(db, first)).toBe(3);
    expect(await catalogTests(db)).toEqual([
      { id: 'pkg.A::one', name: 'one', classname: 'pkg.A', file: 'tests/a.py', features: ['FEAT-201'], smoke: false, durationMs: 1500 },
      { id: 'pkg.A::two', name: 'two', classname: 'pkg.A', features: [], smoke: true, durationMs: 250 },
      { id: 'solo', name: 'solo', classname: '', features: [], smoke: false },
    ]);
    const before = (await db('test_catalog').where({ test_id: 'pkg.A::two' }).first()) as { first_seen: Date; last_seen: Date };

    const second = [
      c('pkg.A::one', { status: 'skipped', durationMs: 0, features: ['FEAT-201', 'FEAT-202'] }),
      c('pkg.A::two', { status: 'failed', durationMs: 900, smoke: true }),
      c('pkg.A::two', { status: 'passed', durationMs: 300, smoke: true }),
      c('solo', { status: 'passed', durationMs: 40 }),
      c('pkg.B::three', { status: 'errored', durationMs: 0, features: ['FEAT-202'] }),
    ];
    expect(await learnTests(db, second)).toBe(1);
    const after = await catalogTests(db);
    expect(after.map((x) => [x.id, x.features, x.smoke, x.durationMs])).toEqual([
      ['pkg.A::one', ['FEAT-201', 'FEAT-202'], false, 1500],
      ['pkg.A::two', [], true, 300],
      ['pkg.B::three', ['FEAT-202'], false, undefined],
      ['solo', [], false, 40],
    ]);
    // an errored report of a known test (here: one the command never ran) keeps what the catalog knows
    expect(await learnTests(db, [c('pkg.A::one', { classname: '', status: 'errored', durationMs: 0 })])).toBe(0);
    expect((await catalogTests(db))[0]).toEqual({ id: 'pkg.A::one', name: 'one', classname: 'pkg.A', file: 'tests/a.py', features: ['FEAT-201', 'FEAT-202'], smoke: false, durationMs: 1500 });
    const row = (await db('test_catalog').where({ test_id: 'pkg.A::two' }).first()) as { first_seen: Date; last_seen: Date };
    expect(row.first_seen.getTime()).toBe(before.first_seen.getTime());
    expect(row.last_seen.getTime()).toBeGreaterThanOrEqual(before.last_seen.getTime());
  });

  it('learns 10,000 tests in a few statements, inside a transaction', async () => {
    const db = env.db.control;
    const many = Array.from({ length: 10_000 }, (_, i) => c(`bulk.M${i % 100}::case ${i} 'quoted' ? "x"`, { durationMs: i, features: [`FEAT-${i % 7}`], smoke: i % 13 === 0 }));
    const statements: string[] = [];
    const onQuery = (q: { sql: string }) => statements.push(q.sql);
    db.on('query', onQuery);
    try {
      const created = await db.transaction((trx) => learnTests(trx, many));
      expect(created).toBe(10_000);
    } finally {
      db.off('query', onQuery);
    }
    expect(statements.filter((s) => /insert into test_catalog/.test(s)).length).toBeLessThanOrEqual(3);
    const all = await catalogTests(db);
    const bulk = all.filter((x) => x.id.startsWith('bulk.'));
    expect(bulk).toHaveLength(10_000);
    const one = bulk.find((x) => x.id === `bulk.M42::case 4242 'quoted' ? "x"`);
    expect(one).toEqual({ id: `bulk.M42::case 4242 'quoted' ? "x"`, name: `case 4242 'quoted' ? "x"`, classname: 'bulk.M42', features: ['FEAT-0'], smoke: false, durationMs: 4242 });
    expect(bulk.filter((x) => x.smoke)).toHaveLength(770);
    // learning them again creates nothing
    expect(await learnTests(db, many.slice(0, 500))).toBe(0);
  });
});
