import type { Knex } from 'knex';
import { releaseOrThrow, type Config } from '../../config/load.js';
import type { TestCatalogRow } from '../../db/rows.js';
import { TributaryError } from '../../errors.js';
import { must } from '../kernel/must.js';
import type { CatalogTest, TestCaseResult } from './types.js';

/**
 * The test catalog: every test Tributary has seen in JUnit XML results, with its features, smoke tag and
 * last duration; the selection of tests per tier; and shards balanced by duration history.
 */

export type Tier = '1' | '2' | 'feature' | 'smoke' | 'nightly';

export const TIERS: readonly Tier[] = ['1', '2', 'feature', 'smoke', 'nightly'];

/** Cases per statement: each statement binds one array per column, not one parameter per value. */
const BATCH = 5000;

/**
 * Upserts the cases into test_catalog and returns the number of tests not seen before. A test reported
 * more than once counts by its last report. Every case refreshes last_seen; a passed or failed case also
 * name, classname, file, features, smoke and the duration; a skipped case all of them but the duration;
 * an errored case nothing more for a known test (its duration says nothing about the test, and the
 * orchestration reports tests the command never ran as errored with nothing but their name). A test
 * pruned on its owner's confirmation (pruned_tests) is never learnt again, so no selection has it.
 */
export async function learnTests(db: Knex | Knex.Transaction, cases: TestCaseResult[]): Promise<number> {
  const byId = new Map<string, TestCaseResult>();
  for (const c of cases) {
    byId.delete(c.id);
    byId.set(c.id, c);
  }
  // one lock order for every writer (shards record at once): no deadlock between their upserts
  const all = [...byId.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  let created = 0;
  for (let i = 0; i < all.length; i += BATCH) {
    const batch = all.slice(i, i + BATCH);
    const ran = batch.filter((c) => c.status !== 'errored');
    const errored = batch.filter((c) => c.status === 'errored');
    if (ran.length > 0) created += await upsert(db, ran, true);
    if (errored.length > 0) created += await upsert(db, errored, false);
  }
  return created;
}

async function upsert(db: Knex | Knex.Transaction, batch: TestCaseResult[], refresh: boolean): Promise<number> {
  // arrays with nulls, which pg sends as SQL arrays (knex's types know no nullable arrays)
  const bindings = [
    batch.map((c) => c.id),
    batch.map((c) => c.name),
    batch.map((c) => c.classname),
    batch.map((c) => c.file ?? null),
    batch.map((c) => JSON.stringify(c.features)),
    batch.map((c) => c.smoke),
    batch.map((c) => (c.status === 'passed' || c.status === 'failed' ? Math.max(0, Math.round(c.durationMs)) : null)),
  ] as Knex.RawBinding[];
  const update = refresh
    ? `name = excluded.name, classname = excluded.classname, file = coalesce(excluded.file, c.file),
       features = excluded.features, smoke = excluded.smoke,
       duration_ms = coalesce(excluded.duration_ms, c.duration_ms), last_seen = now()`
    : 'last_seen = now()';
  const res = await db.raw(
    `insert into test_catalog as c (test_id, name, classname, file, features, smoke, duration_ms)
     select x.id, x.name, x.classname, x.file, x.features::jsonb, x.smoke, x.ms
       from unnest(?::text[], ?::text[], ?::text[], ?::text[], ?::text[], ?::boolean[], ?::int[])
            as x(id, name, classname, file, features, smoke, ms)
      where not exists (select 1 from pruned_tests p where p.test_id = x.id)
     on conflict (test_id) do update set ${update}
     returning (xmax = 0) as inserted`,
    bindings,
  );
  let created = 0;
  for (const r of (res as { rows: { inserted: boolean }[] }).rows) if (r.inserted) created++;
  return created;
}

type CatalogRow = Pick<TestCatalogRow, 'test_id' | 'name' | 'classname' | 'file' | 'features' | 'smoke' | 'duration_ms'>;

/** Every test of the catalog, by id. */
export async function catalogTests(db: Knex | Knex.Transaction): Promise<CatalogTest[]> {
  const rows: CatalogRow[] = await db<TestCatalogRow>('test_catalog')
    .select('test_id', 'name', 'classname', 'file', 'features', 'smoke', 'duration_ms')
    .orderBy('test_id');
  return rows.map((r) => {
    const t: CatalogTest = {
      id: r.test_id,
      name: r.name,
      classname: r.classname,
      // features: a jsonb array of feature ids (as text when the driver leaves jsonb unparsed)
      features: typeof r.features === 'string' ? (JSON.parse(r.features) as string[]) : (r.features as string[]),
      smoke: r.smoke,
    };
    if (r.file !== null) t.file = r.file;
    if (r.duration_ms !== null) t.durationMs = Number(r.duration_ms);
    return t;
  });
}

export interface Selection {
  tests: CatalogTest[];
  /** Tests left out because every feature they belong to is deprecated. */
  deprecated: CatalogTest[];
  /** The features the selection is about: the release's plan (tier 1), the one feature, or those of the selected tests. */
  features: string[];
  /** One readable line, e.g. "R2's 8 features + smoke: 42 tests (3 of deprecated features left out)". */
  description: string;
}

function plural(n: number, word: string): string {
  return `${n.toLocaleString('en-US')} ${word}${n === 1 ? '' : 's'}`;
}

/** Feature ids deprecated in whichever release plans them. */
function deprecatedFeatures(config: Config): Set<string> {
  const out = new Set<string>();
  for (const r of config.releases.values()) for (const f of r.features.values()) if (f.deprecated) out.add(f.id);
  return out;
}

/**
 * The tests of a tier. 1: the release's features plus smoke; 2 and nightly: every test; feature: one
 * feature's tests; smoke: the smoke tests. In every tier the tests whose features are all deprecated
 * drop out (and are returned in `deprecated`).
 */
export function selectTests(config: Config, tests: CatalogTest[], sel: { tier: Tier; release: string; feature?: string }): Selection {
  if (!TIERS.includes(sel.tier)) {
    throw new TributaryError('usage', `unknown tier "${String(sel.tier)}" (tiers: ${TIERS.join(', ')})`, { tier: sel.tier });
  }
  const release = releaseOrThrow(config, sel.release);
  const deprecated = deprecatedFeatures(config);
  const isDeprecated = (t: CatalogTest) => t.features.length > 0 && t.features.every((f) => deprecated.has(f));
  const scope = tierScope(config, tests, sel, release, deprecated);

  const selected: CatalogTest[] = [];
  const left: CatalogTest[] = [];
  for (const t of tests) {
    if (!scope.wanted(t)) continue;
    if (isDeprecated(t)) left.push(t);
    else selected.push(t);
  }
  const byId = (a: CatalogTest, b: CatalogTest) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
  selected.sort(byId);
  left.sort(byId);
  let features = scope.features;
  if (!features) {
    const s = new Set<string>();
    for (const t of selected) for (const f of t.features) if (!deprecated.has(f)) s.add(f);
    features = [...s].sort();
  }
  const leftOut = left.length > 0 ? ` (${left.length.toLocaleString('en-US')} of deprecated features left out)` : '';
  const description = `${scope.label}: ${plural(selected.length, 'test')}${leftOut}`;
  return { tests: selected, deprecated: left, features, description };
}

/** What a tier wants: its tests, the features it is about (else those of the tests selected), its label. */
interface TierScope {
  wanted: (t: CatalogTest) => boolean;
  features: string[] | undefined;
  label: string;
}

function tierScope(
  config: Config,
  tests: CatalogTest[],
  sel: { tier: Tier; feature?: string },
  release: ReturnType<typeof releaseOrThrow>,
  deprecated: Set<string>,
): TierScope {
  switch (sel.tier) {
    case '1': {
      // deprecated ones too, so that their tests are reported as left out
      const plan = new Set(release.features.keys());
      const features = [...release.features.values()]
        .filter((f) => !f.deprecated && !deprecated.has(f.id))
        .map((f) => f.id)
        .sort();
      const label = `${release.name}'s ${plural(features.length, 'feature')} + smoke`;
      return { wanted: (t) => t.smoke || t.features.some((f) => plan.has(f)), features, label };
    }
    case '2':
    case 'nightly':
      return { wanted: () => true, features: undefined, label: sel.tier === '2' ? 'every test' : 'nightly, every test' };
    case 'smoke':
      return { wanted: (t) => t.smoke, features: undefined, label: 'smoke' };
    case 'feature': {
      const feature = askedFeature(config, tests, sel.feature);
      const label = deprecated.has(feature) ? `${feature} (deprecated)` : feature;
      return { wanted: (t) => t.features.includes(feature), features: [feature], label };
    }
  }
}

/** The feature asked for (matched case-insensitively), among those of the plans and of the tests. */
function askedFeature(config: Config, tests: CatalogTest[], asked: string | undefined): string {
  const known = new Set<string>();
  for (const r of config.releases.values()) for (const f of r.features.keys()) known.add(f);
  for (const t of tests) for (const f of t.features) known.add(f);
  if (!asked) {
    throw new TributaryError('usage', `the feature tier needs a feature (known: ${[...known].sort().join(', ') || 'none'})`, {
      known: [...known].sort(),
    });
  }
  const feature = known.has(asked) ? asked : [...known].find((f) => f.toLowerCase() === asked.toLowerCase());
  if (!feature) {
    throw new TributaryError('usage', `unknown feature "${asked}" (known: ${[...known].sort().join(', ') || 'none'})`, {
      feature: asked,
      known: [...known].sort(),
    });
  }
  return feature;
}

export interface ShardPlan {
  shards: CatalogTest[][];
  /** Expected duration of each shard from the history (0 when there is none). */
  expectedMs: number[];
  byHistory: boolean;
  note: string;
}

/** A binary min-heap of shards by (load, test count, index). */
class ShardHeap {
  private readonly heap: number[] = [];

  constructor(
    private readonly load: number[],
    private readonly count: number[],
  ) {
    for (let i = 0; i < load.length; i++) this.heap.push(i);
  }

  private less(a: number, b: number): boolean {
    const la = must(this.load[a], "a shard's load");
    const lb = must(this.load[b], "a shard's load");
    if (la !== lb) return la < lb;
    const ca = must(this.count[a], "a shard's test count");
    const cb = must(this.count[b], "a shard's test count");
    if (ca !== cb) return ca < cb;
    return a < b;
  }

  /** The shard at position `i` of the heap. */
  private at(i: number): number {
    return must(this.heap[i], 'a shard at that position of the heap');
  }

  /** The least-loaded shard, which the caller then loads more (the heap restores its order). */
  top(): number {
    return this.at(0);
  }

  /** Call after the top shard's load grew. */
  siftDown(): void {
    const h = this.heap;
    const n = h.length;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < n && this.less(this.at(l), this.at(m))) m = l;
      if (r < n && this.less(this.at(r), this.at(m))) m = r;
      if (m === i) return;
      [h[i], h[m]] = [this.at(m), this.at(i)];
      i = m;
    }
  }
}

function seconds(ms: number): string {
  return ms >= 10_000 ? `${Math.round(ms / 1000)} s` : `${(ms / 1000).toFixed(1)} s`;
}

/**
 * Splits tests into shards, longest first onto the least-loaded shard (LPT). Tests without history count
 * at the median of the known durations; with no history at all the shards are balanced by test count.
 * Never returns an empty shard: fewer tests than shards gives fewer shards.
 */
export function balanceShards(tests: CatalogTest[], shards: number): ShardPlan {
  if (tests.length === 0) return { shards: [], expectedMs: [], byHistory: false, note: 'no tests to run' };
  const n = Math.max(1, Math.min(Math.floor(shards) || 1, tests.length));
  const known: number[] = [];
  for (const t of tests) if (t.durationMs !== undefined && Number.isFinite(t.durationMs)) known.push(Math.max(0, t.durationMs));
  const byHistory = known.length > 0;
  let median = 0;
  if (byHistory) {
    known.sort((a, b) => a - b);
    const mid = known.length >> 1;
    const at = (i: number) => must(known[i], 'a known duration');
    median = known.length % 2 === 1 ? at(mid) : Math.round((at(mid - 1) + at(mid)) / 2);
  }
  const weight = (t: CatalogTest) =>
    !byHistory ? 1 : t.durationMs !== undefined && Number.isFinite(t.durationMs) ? Math.max(0, t.durationMs) : median;

  const items = tests.map((t) => ({ t, w: weight(t) }));
  items.sort((a, b) => b.w - a.w || (a.t.id < b.t.id ? -1 : a.t.id > b.t.id ? 1 : 0));
  const load = new Array<number>(n).fill(0);
  const count = new Array<number>(n).fill(0);
  const out: CatalogTest[][] = Array.from({ length: n }, () => []);
  const heap = new ShardHeap(load, count);
  for (const { t, w } of items) {
    const s = heap.top();
    must(out[s], 'the least-loaded shard').push(t);
    load[s] = must(load[s], "the least-loaded shard's load") + w;
    count[s] = must(count[s], "the least-loaded shard's test count") + 1;
    heap.siftDown();
  }

  let note: string;
  if (!byHistory) note = 'no duration history: shards balanced by test count';
  else if (known.length < tests.length) {
    const missing = tests.length - known.length;
    note =
      `balanced by duration history (longest first); ` +
      `${plural(missing, 'test')} without history counted at the median ${seconds(median)}`;
  } else note = 'balanced by duration history (longest first)';
  return { shards: out, expectedMs: byHistory ? load : load.map(() => 0), byHistory, note };
}
