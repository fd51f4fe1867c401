import type { Knex } from 'knex';
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
  for (const r of ctx.config.releases.values()) for (const f of r.features.values()) if (f.deprecated) out.set(f.id, { release: r.name, owner: f.owner });
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

function view(r: Record<string, unknown>): PruneProposal {
  return { id: r.id as number, feature: r.feature as string, release: r.release as string, owner: r.owner as string, tests: r.tests as { id: string; name: string }[], status: r.status as PruneProposal['status'], decidedBy: (r.decided_by as string | null) ?? null };
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
      const [r] = await trx('prune_proposals').insert({ digest_id: opts.digestId ?? null, feature, release, owner, tests: JSON.stringify(tests) }).returning('*');
      await recordAudit(trx, { actor: opts.actor, action: 'prune.proposed', release, subject: feature, details: { proposal: (r as { id: number }).id, owner, tests: tests.length } });
      return r as Record<string, unknown>;
    });
    out.push(view(row));
  }
  return out;
}

export async function proposalOf(ctx: Ctx, id: number): Promise<PruneProposal | undefined> {
  const r = await ctx.db.control('prune_proposals').where({ id }).first();
  return r ? view(r) : undefined;
}

export interface PruneDecision {
  proposal: PruneProposal;
  removed: string[];
}

/** The owner's answer to a proposal: prune (removes the tests from the catalog) or keep. Only the owner. */
export async function decideProposal(ctx: Ctx, id: number, user: Actor, action: 'prune' | 'keep'): Promise<PruneDecision> {
  const db = ctx.db.control;
  const refuse = async (release: string | undefined, message: string, code: 'forbidden' | 'already_decided' | 'gate_state' = 'forbidden') => {
    await recordAudit(db, { actor: user, action: 'prune.refused', ...(release ? { release } : {}), subject: `proposal #${id}`, details: { reason: message } });
    return new TributaryError(code, message, { proposal: id });
  };
  const p = await proposalOf(ctx, id);
  if (!p) throw new TributaryError('no_rows', `pruning proposal #${id} does not exist`, { proposal: id });
  if (!SLACK_USER.test(p.owner)) {
    throw await refuse(p.release, `the owner of ${p.feature} is "${p.owner}" in ${ctx.config.file}, not a Slack user id: only the feature's owner can confirm pruning; set releases.${p.release}.features.${p.feature}.owner to their Slack user id (U…)`);
  }
  if (user !== p.owner) throw await refuse(p.release, `only the owner of ${p.feature} (<@${p.owner}>) can answer this proposal`);
  return db.transaction(async (trx) => {
    const row = await trx('prune_proposals').where({ id }).forUpdate().first();
    if (row.status !== 'proposed') {
      throw new TributaryError(row.status === 'superseded' ? 'gate_state' : 'already_decided', row.status === 'superseded' ? `proposal #${id} was superseded by a newer digest: answer the newest one` : `proposal #${id} was already answered (${String(row.status)}) by ${String(row.decided_by)}`, { proposal: id });
    }
    let removed: string[] = [];
    if (action === 'prune') {
      // only tests still covering nothing but deprecated features (the plan may have changed since)
      const still = new Set((await prunableTests(trx, p.feature, [...deprecatedSet(ctx).keys()])).map((t) => t.id));
      const ids = p.tests.map((t) => t.id).filter((t) => still.has(t));
      if (ids.length > 0) {
        const gone = (await trx('test_catalog').whereIn('test_id', ids).del().returning(['test_id', 'name'])) as { test_id: string; name: string }[];
        removed = gone.map((r) => r.test_id);
        // remembered, so that the runners reporting them again never bring them back (catalog.ts learnTests)
        if (gone.length > 0) await trx('pruned_tests').insert(gone.map((r) => ({ test_id: r.test_id, name: r.name, feature: p.feature, proposal_id: id, pruned_by: user }))).onConflict('test_id').ignore();
      }
    }
    const [updated] = await trx('prune_proposals').where({ id }).update({ status: action === 'prune' ? 'pruned' : 'kept', decided_by: user, decided_at: trx.fn.now() }).returning('*');
    await recordAudit(trx, { actor: user, action: action === 'prune' ? 'tests.pruned' : 'prune.kept', release: p.release, subject: p.feature, details: { proposal: id, removed } });
    return { proposal: view(updated as Record<string, unknown>), removed };
  });
}
