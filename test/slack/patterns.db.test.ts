import fs from 'node:fs';
import { beforeEach, describe, expect, it, vi } from 'vitest';
import { BLOCKS, VIEWS } from '../../src/slack/ids.js';
import { testEnv, type TestEnv } from '../helpers.js';
import { actionBody, type FakeSlack, signedPost, slashBody, TEST_SIGNING_SECRET, viewSubmissionBody } from './fake-slack.js';
import { slackScaffold } from './scaffold.js';
import { patternsWorld } from './worlds.js';

/**
 * Review at scale in Slack, as Slack sends it (signed requests into the real receiver, a fake Web API):
 * pattern cards posted from `/release conflicts R2 --patterns`, a pattern decided from its card (the
 * combined blast radius first, one decision per conflict naming the pattern decision), the reviewer role
 * (refusal audited), a stale card and a second click, a proposed rule accepted from its button (qa_lead),
 * and `/release decide A-…` without --rationale opening the decision modal.
 */
let env: TestEnv;
let fake: FakeSlack;
let url: string;

type Button = { action_id: string; value: string; text: { text: string } };
type Blocks = { type: string; elements?: Button[] }[];
type View = { private_metadata: string; callback_id: string; blocks: unknown[] };

const count = async (table: string) => Number((await env.db.control(table).count('* as n').first())!.n);
const send = (body: string) => signedPost(url, body, TEST_SIGNING_SECRET);
const rationale = (text: string) => ({ [BLOCKS.patternRationale]: { value: { type: 'plain_text_input', value: text } } });
const buttonsOf = (m: Record<string, unknown>) => (m.blocks as Blocks).filter((b) => b.type === 'actions').flatMap((b) => b.elements ?? []);

slackScaffold(
  {
    env: () => testEnv(3, { slack: { reviewChannel: 'C_REVIEW' }, roles: { reviewer: ['U0REV', 'U0REV2'], qa_lead: ['U0LEAD'], release_manager: [] } }),
    prepare: patternsWorld,
  },
  (s) => ({ env, fake, url } = s),
);

beforeEach(() => fake.reset());

/** The posted pattern cards, in order: their text and buttons. */
let cards: { text: string; buttons: Button[] }[] = [];
/** Where a click comes from: the bot updates that message (any ts the fake's channel would hold). */
const P1 = { channel: 'C_REVIEW', ts: '1700000001.000100' };

const button = (i: number, id: string) => cards[i]!.buttons.find((b) => b.action_id === id)!;

async function openedModal(): Promise<View> {
  await vi.waitFor(() => expect(fake.of('views.open')).toHaveLength(1), { timeout: 60_000 });
  return fake.of('views.open')[0]!.view as View;
}

describe('pattern cards', () => {
  it('/release conflicts R2 --patterns lists the patterns for the asker and posts a card per pattern to the review channel', async () => {
    await send(slashBody(fake, 'conflicts R2 --patterns', 'U0REV'));
    await vi.waitFor(() => expect(fake.of('chat.postMessage')).toHaveLength(2), { timeout: 60_000 });
    expect(JSON.stringify(fake.of('response_url')[0]!.blocks)).toContain('5 open conflict(s) in 2 pattern(s)');
    const posted = fake.of('chat.postMessage');
    expect(posted.map((m) => m.channel)).toEqual(['C_REVIEW', 'C_REVIEW']);
    cards = posted.map((m) => ({ text: String(m.text), buttons: buttonsOf(m) }));
    expect(cards.map((c) => c.text)).toEqual(['P-1: 4 core-conflict conflicts of users', 'P-2: 1 core-conflict conflicts of users']);
    expect(cards[0]!.buttons.map((b) => b.action_id)).toEqual(['pattern:keep-env:ST-1', 'pattern:keep-env:ST-2', 'pattern:keep-by-rule', 'pattern:keep-both', 'pattern:delete']);
  });

  it('refused without the reviewer role (the refusal audited): no modal, nothing decided', async () => {
    await send(actionBody(fake, 'U0NOBODY', 'pattern:keep-env:ST-1', button(0, 'pattern:keep-env:ST-1').value, P1));
    await vi.waitFor(() => expect(fake.of('response_url')).toHaveLength(1), { timeout: 60_000 });
    expect(JSON.stringify(fake.of('response_url')[0])).toContain('decide needs the reviewer or qa_lead role');
    expect(fake.of('views.open')).toHaveLength(0);
    const refused = await env.db.control('audit_events').where({ action: 'auth.refused', actor: 'U0NOBODY' }).first();
    expect(refused.subject).toBe('decide');
    expect(await count('decisions')).toBe(0);
  });

  it('a pattern decided from its card: the combined blast radius first, then one decision per conflict naming the pattern decision; the card is updated in place', async () => {
    const value = button(0, 'pattern:keep-env:ST-1').value;
    await send(actionBody(fake, 'U0REV', 'pattern:keep-env:ST-1', value, P1));
    const view = await openedModal();
    expect(view.callback_id).toBe(VIEWS.decidePattern);
    expect(JSON.stringify(view.blocks)).toContain("keep ST-1's version* for each");
    expect(JSON.stringify(view.blocks)).toContain('Combined blast radius:* 4 child row(s) re-pointed');
    expect(await count('decisions')).toBe(0);

    // a second reviewer clicks the same card meanwhile: a second modal
    await send(actionBody(fake, 'U0REV2', 'pattern:keep-env:ST-1', value, P1));
    await vi.waitFor(() => expect(fake.of('views.open')).toHaveLength(2), { timeout: 60_000 });
    const second = fake.of('views.open')[1]!.view as View;

    // a non-reviewer's submission is refused in the modal
    const refused = await send(viewSubmissionBody('U0NOBODY', view, rationale('ST-1 holds the roles the tests rely on')));
    expect(JSON.parse(refused.body).errors[BLOCKS.patternRationale]).toContain('reviewer');

    const submit = await send(viewSubmissionBody('U0REV', view, rationale('ST-1 holds the roles the tests rely on')));
    expect(submit.status).toBe(200);
    expect(submit.body).toBe('');
    const pd = await env.db.control('pattern_decisions').first();
    expect(pd).toMatchObject({ release: 'R2', decided_by: 'U0REV', conflicts: 4 });
    const decisions = await env.db.control('decisions as d').join('conflicts as c', 'c.id', 'd.conflict_id').orderBy('c.code').select('c.code', 'd.pattern_decision_id', 'c.status', 'c.decided_by');
    expect(decisions).toEqual(['C-001', 'C-002', 'C-003', 'C-004'].map((code) => ({ code, pattern_decision_id: pd.id, status: 'decided', decided_by: 'U0REV' })));
    expect((await env.db.control('audit_events').where({ action: 'pattern.decision' }).first()).subject).toBe(`PD-${pd.id}`);
    await vi.waitFor(() => expect(fake.of('chat.update').some((u) => u.ts === P1.ts)).toBe(true), { timeout: 60_000 });
    const updated = fake.of('chat.update').find((u) => u.ts === P1.ts)!;
    expect((updated.blocks as Blocks).some((b) => b.type === 'actions')).toBe(false);
    expect(JSON.stringify(updated.blocks)).toContain(`PD-${pd.id}* · P-1`);
    expect(JSON.stringify(updated.blocks)).toContain('for 4 conflict(s)');

    // the same submission again (a retry) lands nothing twice; the second reviewer's is refused, naming who decided
    const retry = await send(viewSubmissionBody('U0REV', view, rationale('ST-1 holds the roles the tests rely on')));
    expect(retry.body).toBe('');
    const late = await send(viewSubmissionBody('U0REV2', second, rationale('ST-1 is the reference env')));
    expect(JSON.parse(late.body).errors[BLOCKS.patternRationale]).toContain(`already decided by <@U0REV> (PD-${pd.id})`);
    expect(await count('pattern_decisions')).toBe(1);
    expect(await count('decisions')).toBe(4);
  });

  it('a stale card (its pattern decided) is refreshed when clicked, and opens no modal', async () => {
    await send(actionBody(fake, 'U0REV2', 'pattern:delete', button(0, 'pattern:delete').value, P1));
    await vi.waitFor(() => expect(fake.of('response_url')).toHaveLength(1), { timeout: 60_000 });
    expect(String(fake.of('response_url')[0]!.text)).toMatch(/P-1 \(users\/core-conflict\/role\/ST-1\+ST-2\) was already decided by <@U0REV> \(PD-\d+\)/);
    expect(fake.of('views.open')).toHaveLength(0);
    const refreshed = fake.of('chat.update').find((u) => u.ts === P1.ts)!;
    expect(JSON.stringify(refreshed.blocks)).toContain('already decided');
    expect(await count('decisions')).toBe(4);
  });
});

describe('a card found by its signature', () => {
  it('the next pattern moved up to P-1 once P-1 was decided: its card (showing P-2) decides the conflicts it showed', async () => {
    await send(actionBody(fake, 'U0REV', 'pattern:keep-env:ST-1', button(1, 'pattern:keep-env:ST-1').value, { channel: 'C_REVIEW', ts: '1700000002.000100' }));
    const view = await openedModal();
    expect(JSON.parse(view.private_metadata)).toMatchObject({ pattern: 'P-1', signature: 'users/core-conflict/role/ST-1+ST-3' });
    expect(JSON.stringify(view.blocks)).toContain('1 open core-conflict conflict(s)');
  });
});

describe('rules learnt from reviewers', () => {
  it('/release policy proposals shows each proposal as a card; Accept (qa_lead only) writes the rule into the policy and updates the card in place', async () => {
    await send(slashBody(fake, 'policy proposals', 'U0REV'));
    await vi.waitFor(() => expect(fake.of('response_url')).toHaveLength(1), { timeout: 60_000 });
    const card = fake.of('response_url')[0]!;
    const accept = buttonsOf(card).find((b) => b.action_id === 'policy:accept')!;
    const { name } = JSON.parse(accept.value) as { name: string };
    expect(JSON.stringify(card.blocks)).toContain(`Proposed rule \`${name}\``);
    fake.reset();

    await send(actionBody(fake, 'U0REV', 'policy:accept', accept.value, P1));
    await vi.waitFor(() => expect(fake.of('response_url')).toHaveLength(1), { timeout: 60_000 });
    expect(JSON.stringify(fake.of('response_url')[0])).toContain('policy needs the qa_lead role');
    expect(fs.readFileSync(env.configFile, 'utf8')).not.toContain(name);
    fake.reset();

    await send(actionBody(fake, 'U0LEAD', 'policy:accept', accept.value, P1));
    await vi.waitFor(() => expect(fake.of('response_url')).toHaveLength(1), { timeout: 60_000 });
    const answer = fake.of('response_url')[0]!;
    expect(answer.replace_original).toBe(true);
    expect(JSON.stringify(answer.blocks)).toContain(`Rule \`${name}\` accepted* by <@U0LEAD>`);
    expect(buttonsOf(answer)).toEqual([]);
    expect(fs.readFileSync(env.configFile, 'utf8')).toMatch(new RegExp(`learnt from 4 agreeing decisions: R2 C-001 .*accepted by U0LEAD[\\s\\S]*name: ${name}`));
    expect(env.ctx.config.policy.scoped.map((r) => r.name)).toEqual([name]);
    expect((await env.db.control('audit_events').where({ action: 'policy.accept' }).first()).actor).toBe('U0LEAD');
  });
});

describe('overrule from Slack', () => {
  it('/release decide A-001 --keep 1 without --rationale opens the decision modal; submitting re-opens and decides it', async () => {
    await send(slashBody(fake, 'decide A-001 --release R2 --keep 1', 'U0REV'));
    const view = await openedModal();
    expect(view.callback_id).toBe(VIEWS.decide);
    expect(JSON.parse(view.private_metadata)).toMatchObject({ release: 'R2', code: 'A-001', action: 'keep', version: 1 });
    expect(JSON.stringify(view.blocks)).toContain('A-001');
    expect(await env.db.control('conflicts').where({ code: 'A-001' }).first()).toBeUndefined();
    const submit = await send(viewSubmissionBody('U0REV', view, { [BLOCKS.rationale]: { value: { type: 'plain_text_input', value: 'the older sign-up date is the real one' } } }));
    expect(submit.body).toBe('');
    expect(await env.db.control('conflicts').where({ code: 'A-001' }).first()).toMatchObject({ status: 'decided', decided_by: 'U0REV' });
  });
});

describe('a finding decided from /release decide', () => {
  it('/release decide F-… --release R2 --delete without --rationale opens a modal with the plan; submitting closes the finding', async () => {
    const { applyDecision } = await import('../../src/engine/review/decide.js');
    const { listConflicts } = await import('../../src/engine/review/queue.js');
    const { validateRelease } = await import('../../src/engine/validate/validate.js');
    for (const c of await listConflicts(env.ctx, 'R2')) await applyDecision(env.ctx, 'R2', c.code, { action: 'keep', version: 1 }, { actor: 'cli:test', rationale: 'ST-1 holds it' });
    // u1 deleted in the result: its account (re-pointed at it) dangles
    const s = await env.db.control('release_states').where({ release: 'R2' }).first();
    await env.db.control.raw(`update work."r${s.current_run_id}_result" set status = 'deleted' where entity = 'users' and pk = '1'`);
    const r = await validateRelease(env.ctx, 'R2', { actor: 'cli:test' });
    const f = r.findings.find((x) => x.entity === 'accounts')!;
    expect(f.status).toBe('open');

    await send(slashBody(fake, `decide ${f.code} --release R2 --delete`, 'U0REV'));
    const view = await openedModal();
    expect(view.callback_id).toBe(VIEWS.decideFinding);
    expect(JSON.stringify(view.blocks)).toContain(`${f.code}: plan for delete (not applied)`);
    const submit = await send(viewSubmissionBody('U0REV', view, { [BLOCKS.findingRationale]: { value: { type: 'plain_text_input', value: 'test data of a removed user' } } }));
    expect(submit.body).toBe('');
    expect(await env.db.control('findings').where({ code: f.code, run_id: f.run_id }).first()).toMatchObject({ status: 'closed', closed_by: 'U0REV' });
  });
});
