import type { Knex } from 'knex';
import type { PruneProposalsRow, TestCatalogRow } from '../../db/rows.js';
import { must } from '../kernel/must.js';
import { TributaryError } from '../../errors.js';
import { recordAudit } from '../kernel/audit.js';
import type { Actor, Ctx } from '../kernel/context.js';

/**
 * Pruning tests of deprecated features. The weekly digest proposes, per deprecated feature, the catalog
 * tests all of whose features are deprecated (a test that still covers a live feature is never
 * proposed); each proposal goes to the feature's owner (config `owner`, a Slack user id). Nothing is
 * removed until that owner confirms that very proposal; a newer digest supersedes an unanswered one.
 * Pruning removes the tests from the catalog (their history stays in test_results) and records them in
 * pruned_tests, so that the catalog never learns them again from a runner's report (nor proposes them
 * again), audited.
 */
export interface PruneProposal {
  id: number;
  feature: string;
  release: string;
  owner: string;
  tests: { id: string; name: string }[];
  status: 'proposed' | 'pruned' | 'kept' | 'superseded';
  decidedBy?: string | null;
}

const SLACK_USER = /^[UW][A-Z0-9]+$/;

function deprecatedSet(ctx: Ctx): Map<string, { release: string; owner: string }> {
  const out = new Map<string, { release: string; owner: string }>();
  for (const r of ctx.config.releases.values()) {
    for (const f of r.features.values()) if (f.deprecated) out.set(f.id, { release: r.name, owner: f.owner });
  }
  return out;
}

/** Catalog tests of a feature that cover only deprecated features. */
async function prunableTests(db: Knex | Knex.Transaction, feature: string, deprecated: string[]): Promise<{ id: string; name: string }[]> {
  const rows = await db.raw<{ rows: { test_id: string; name: string }[] }>(
    `select test_id, name from test_catalog
      where features @> jsonb_build_array(?::text) and jsonb_array_length(features) > 0
        and not exists (select 1 from jsonb_array_elements_text(features) f where f <> all(?::text[]))
        and not exists (select 1 from pruned_tests p where p.test_id = test_catalog.test_id)
      order by test_id`,
    [feature, deprecated],
  );
  return rows.rows.map((r) => ({ id: r.test_id, name: r.name }));
}

/** A proposal's row as the engine shows it (tests: the jsonb list written by proposePruning). */
function view(r: PruneProposalsRow): PruneProposal {
  return {
    id: r.id,
    feature: r.feature,
    release: r.release,
    owner: r.owner,
    tests: r.tests as PruneProposal['tests'],
    status: r.status as PruneProposal['status'],
    decidedBy: r.decided_by ?? null,
  };
}

/** The weekly digest: one proposal per deprecated feature that has prunable tests. Removes nothing. */
export async function proposePruning(ctx: Ctx, opts: { digestId?: number; actor: Actor }): Promise<PruneProposal[]> {
  const dep = deprecatedSet(ctx);
  const all = [...dep.keys()];
  const out: PruneProposal[] = [];
  for (const [feature, { release, owner }] of dep) {
    const tests = await prunableTests(ctx.db.control, feature, all);
    if (tests.length === 0) continue;
    const row = await ctx.db.control.transaction(async (trx) => {
      await trx('prune_proposals').where({ feature, status: 'proposed' }).update({ status: 'superseded' });
      const proposal = { digest_id: opts.digestId ?? null, feature, release, owner, tests: JSON.stringify(tests) };
      const [inserted] = await trx<PruneProposalsRow>('prune_proposals').insert(proposal).returning('*');
      const r = must(inserted, `the new pruning proposal of ${feature}`);
      const details = { proposal: r.id, owner, tests: tests.length };
      await recordAudit(trx, { actor: opts.actor, action: 'prune.proposed', release, subject: feature, details });
      return r;
    });
    out.push(view(row));
  }
  return out;
}

export async function proposalOf(ctx: Ctx, id: number): Promise<PruneProposal | undefined> {
  const r = await ctx.db.control<PruneProposalsRow>('prune_proposals').where({ id }).first();
  return r ? view(r) : undefined;
}

export interface PruneDecision {
  proposal: PruneProposal;
  removed: string[];
}

type RefusalCode = 'forbidden' | 'already_decided' | 'gate_state';

/** A refusal, audited (prune.refused), as the error to throw. */
async function refusal(ctx: Ctx, id: number, user: Actor, release: string | undefined, message: string, code: RefusalCode = 'forbidden') {
  const details = { reason: message };
  const subject = `proposal #${id}`;
  await recordAudit(ctx.db.control, { actor: user, action: 'prune.refused', ...(release ? { release } : {}), subject, details });
  return new TributaryError(code, message, { proposal: id });
}

/** Only the feature's owner, named by a Slack user id, answers its proposal. */
async function checkOwner(ctx: Ctx, p: PruneProposal, user: Actor): Promise<void> {
  if (!SLACK_USER.test(p.owner)) {
    const fix = `set releases.${p.release}.features.${p.feature}.owner to their Slack user id (U…)`;
    const only = "only the feature's owner can confirm pruning";
    const what = `the owner of ${p.feature} is "${p.owner}" in ${ctx.config.file}, not a Slack user id: ${only}`;
    throw await refusal(ctx, p.id, user, p.release, `${what}; ${fix}`);
  }
  if (user !== p.owner) {
    throw await refusal(ctx, p.id, user, p.release, `only the owner of ${p.feature} (<@${p.owner}>) can answer this proposal`);
  }
}

/** The proposal's tests that still cover only deprecated features, out of the catalog and remembered. */
async function pruneTests(ctx: Ctx, trx: Knex.Transaction, p: PruneProposal, user: Actor): Promise<string[]> {
  // only tests still covering nothing but deprecated features (the plan may have changed since)
  const still = new Set((await prunableTests(trx, p.feature, [...deprecatedSet(ctx).keys()])).map((t) => t.id));
  const ids = p.tests.map((t) => t.id).filter((t) => still.has(t));
  if (ids.length === 0) return [];
  const gone: Pick<TestCatalogRow, 'test_id' | 'name'>[] = await trx<TestCatalogRow>('test_catalog')
    .whereIn('test_id', ids)
    .del()
    .returning(['test_id', 'name']);
  // remembered, so that the runners reporting them again never bring them back (catalog.ts learnTests)
  if (gone.length > 0) {
    const pruned = gone.map((r) => ({ test_id: r.test_id, name: r.name, feature: p.feature, proposal_id: p.id, pruned_by: user }));
    await trx('pruned_tests').insert(pruned).onConflict('test_id').ignore();
  }
  return gone.map((r) => r.test_id);
}

/** The owner's answer to a proposal: prune (removes the tests from the catalog) or keep. Only the owner. */
export async function decideProposal(ctx: Ctx, id: number, user: Actor, action: 'prune' | 'keep'): Promise<PruneDecision> {
  const p = await proposalOf(ctx, id);
  if (!p) throw new TributaryError('no_rows', `pruning proposal #${id} does not exist`, { proposal: id });
  await checkOwner(ctx, p, user);
  return ctx.db.control.transaction(async (trx) => {
    const row = must(await trx<PruneProposalsRow>('prune_proposals').where({ id }).forUpdate().first(), `pruning proposal #${id}`);
    if (row.status !== 'proposed') {
      const superseded = row.status === 'superseded';
      const message = superseded
        ? `proposal #${id} was superseded by a newer digest: answer the newest one`
        : `proposal #${id} was already answered (${String(row.status)}) by ${String(row.decided_by)}`;
      throw new TributaryError(superseded ? 'gate_state' : 'already_decided', message, { proposal: id });
    }
    const removed = action === 'prune' ? await pruneTests(ctx, trx, p, user) : [];
    const [updated] = await trx<PruneProposalsRow>('prune_proposals')
      .where({ id })
      .update({ status: action === 'prune' ? 'pruned' : 'kept', decided_by: user, decided_at: trx.fn.now() })
      .returning('*');
    const audited = action === 'prune' ? 'tests.pruned' : 'prune.kept';
    await recordAudit(trx, { actor: user, action: audited, release: p.release, subject: p.feature, details: { proposal: id, removed } });
    return { proposal: view(must(updated, `pruning proposal #${id} as updated`)), removed };
  });
}
