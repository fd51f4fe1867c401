import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { applyDecision } from '../../src/engine/review/decide.js';
import { listConflicts } from '../../src/engine/review/queue.js';
import { listFindings } from '../../src/engine/validate/index.js';
import type { Bot } from '../../src/slack/app.js';
import { ACTIONS, BLOCKS, VIEWS } from '../../src/slack/ids.js';
import { testEnv, type TestEnv } from '../helpers.js';
import type { FakeSlack } from './fake-slack.js';
import { slackScaffold } from './scaffold.js';
import { patternsWorld } from './worlds.js';
import { Transcript } from './transcript.js';

/**
 * Review at scale and what follows it, each rendered into a committed transcript (issue 18: docs/slack.md
 * shows every card kind) and asserted: pattern cards and a pattern decided from its card (patterns.txt), a
 * rule learnt from those decisions proposed and accepted (rule-proposal.txt), the conflicts the rules
 * resolved (auto-resolved.txt), a validation finding waived from its card (findings.txt), then the release
 * loaded and its audit trail (load-audit.txt), its status and the help (status-help.txt). Its world:
 * four users whose role differs between ST-1 and ST-2 (one pattern), one between ST-1 and ST-3 (another),
 * one the newest-wins rule decides.
 */
let env: TestEnv;
let fake: FakeSlack;
let bot: Bot;
let url: string;

type Button = { action_id: string; value: string; text: { text: string } };
type Blocks = { type: string; elements?: Button[] }[];
const buttonsOf = (m: { blocks?: unknown }) => ((m.blocks ?? []) as Blocks).filter((b) => b.type === 'actions').flatMap((b) => b.elements ?? []);
const count = async (table: string) => Number((await env.db.control(table).count('* as n').first())!.n);

slackScaffold(
  {
    env: () => testEnv(3, { slack: { reviewChannel: 'C_REVIEW' }, roles: { reviewer: ['U0REV', 'U0REV2'], qa_lead: ['U0LEAD'], release_manager: [] } }),
    prepare: patternsWorld,
    bot: { progressIntervalMs: 3_600_000 },
  },
  (s) => ({ env, fake, bot, url } = s),
);

describe('review-at-scale transcripts', () => {
  it('patterns: a card per pattern, one decided from its card with the combined blast radius first', async () => {
    const t = new Transcript('patterns', fake, bot, url, 'conflicts grouped into patterns, one pattern decided from its card');
    await t.slash('U0REV', 'conflicts R2 --patterns');
    const summary = t.toldTo('U0REV').at(-1)!;
    expect(Transcript.text(summary)).toContain('5 open conflict(s) in 2 pattern(s)');
    const p1 = t.message('C_REVIEW', 'P-1: ');
    const p2 = t.message('C_REVIEW', 'P-2: ');
    expect([p1.n, p2.n]).toEqual([1, 2]);
    expect(String(p1.call.text)).toBe('P-1: 4 core-conflict conflicts of users');
    expect(String(p2.call.text)).toBe('P-2: 1 core-conflict conflicts of users');
    expect(buttonsOf(p1.call).map((b) => b.action_id)).toEqual(['pattern:keep-env:ST-1', 'pattern:keep-env:ST-2', 'pattern:keep-by-rule', 'pattern:keep-both', 'pattern:delete']);

    await t.press('U0REV', p1, 'pattern:keep-env:ST-1');
    const modal = t.modalOf('U0REV');
    expect(modal.callback_id).toBe(VIEWS.decidePattern);
    expect(JSON.stringify(modal.blocks)).toContain("keep ST-1's version* for each");
    expect(JSON.stringify(modal.blocks)).toContain('Combined blast radius:* 4 child row(s) re-pointed');
    expect(await count('decisions')).toBe(0);

    expect(await t.submit('U0REV', { [BLOCKS.patternRationale]: 'ST-1 holds the roles the tests rely on' }, '"ST-1 holds the roles the tests rely on"')).toBe('');
    const pd = await env.db.control('pattern_decisions').first();
    expect(pd).toMatchObject({ release: 'R2', decided_by: 'U0REV', conflicts: 4 });
    expect(await count('decisions')).toBe(4);
    // the card is updated in place: decided, naming the pattern decision, its buttons gone
    const decided = t.posted('C_REVIEW').find((m) => m.n === p1.n)!;
    expect(Transcript.text(decided.call)).toContain(`PD-${pd.id}* · P-1`);
    expect(Transcript.text(decided.call)).toContain('for 4 conflict(s)');
    // the decider as a mention, not a raw user id (issue 20 items 3 and 8)
    expect(JSON.stringify(decided.call.blocks)).toContain('decided by <@U0REV>');
    expect(buttonsOf(decided.call)).toEqual([]);
    t.check();
  });

  it('rule proposal: a rule learnt from agreeing decisions, refused to a reviewer, accepted by a qa_lead into the policy', async () => {
    const t = new Transcript('rule-proposal', fake, bot, url, 'a rule learnt from reviewers, proposed and accepted');
    await t.slash('U0LEAD', 'policy proposals');
    const card = t.toldTo('U0LEAD').at(-1)!;
    const accept = buttonsOf(card).find((b) => b.action_id === 'policy:accept')!;
    const { name } = JSON.parse(accept.value) as { name: string };
    expect(Transcript.text(card)).toContain(`Proposed rule \`${name}\``);
    expect(Transcript.text(card)).toContain('Agrees with 4 decision(s): R2 C-001, R2 C-002, R2 C-003, R2 C-004');
    const shown = { channel: 'C_OPS', label: 'the proposal shown to them', blocks: card.blocks };

    await t.press('U0REV', shown, 'policy:accept');
    expect(Transcript.text(t.toldTo('U0REV').at(-1)!)).toContain('policy needs the qa_lead role');
    expect(fs.readFileSync(env.configFile, 'utf8')).not.toContain(name);

    await t.press('U0LEAD', shown, 'policy:accept');
    const answer = t.toldTo('U0LEAD').at(-1)!;
    expect(answer.replace_original).toBe(true);
    expect(Transcript.text(answer)).toContain(`Rule \`${name}\` accepted* by @U0LEAD`);
    expect(buttonsOf(answer)).toEqual([]);
    expect(env.ctx.config.policy.scoped.map((r) => r.name)).toEqual([name]);
    t.check();
  });

  it('auto-resolved: the conflicts the rules decided, counted per rule, the first few shown and the whole list as a file', async () => {
    const t = new Transcript('auto-resolved', fake, bot, url, 'the conflicts the rules resolved, asked for in Slack');
    await t.slash('U0REV', 'conflicts R2 --status auto-resolved');
    const answer = Transcript.text(t.toldTo('U0REV').at(-1)!);
    expect(answer).toContain('newest-wins');
    expect(answer).toContain('A-001');
    const files = t.of('files.completeUploadExternal');
    expect(files).toHaveLength(1);
    expect(String(files[0]!.files)).toContain('R2-auto-resolutions.tsv');
    t.check();
  });

  it('findings: validation posts the findings card; Waive (qa_lead only) asks for a rationale and announces the waiver', async () => {
    // every conflict decided, then u1 gone from the result: its account (re-pointed at it) dangles
    for (const c of await listConflicts(env.ctx, 'R2')) await applyDecision(env.ctx, 'R2', c.code, { action: 'keep', version: 1 }, { actor: 'cli:test', rationale: 'ST-1 holds it' });
    const s = await env.db.control('release_states').where({ release: 'R2' }).first();
    await env.db.control.raw(`update work."r${s.current_run_id}_result" set status = 'deleted' where entity = 'users' and pk = '1'`);

    const t = new Transcript('findings', fake, bot, url, 'a validation finding waived from its card');
    t.note('(every conflict of R2 is decided; user 1 is deleted from the result, so its account dangles)');
    await t.slash('U0LEAD', 'validate R2');
    const card = t.message('C_OPS', 'R2: 1 open finding');
    const [finding] = await listFindings(env.ctx, 'R2', { status: 'open' });
    expect(finding?.entity).toBe('accounts');
    expect(Transcript.text(card.call)).toContain('orphan');
    const waive = buttonsOf(card.call).find((b) => b.action_id === `findings:waive:${finding!.code}`)!;
    expect(waive.text.text).toBe(`Waive ${finding!.code}…`);

    await t.press('U0REV', card, waive.action_id);
    expect(Transcript.text(t.toldTo('U0REV').at(-1)!)).toContain('waive needs the qa_lead role');

    await t.press('U0LEAD', card, waive.action_id);
    expect(t.modalOf('U0LEAD').callback_id).toBe(VIEWS.waiveFinding);
    expect(await t.submit('U0LEAD', { [BLOCKS.waiveRationale]: 'test data, known orphan' }, '"test data, known orphan"')).toBe('');
    expect((await listFindings(env.ctx, 'R2', { status: 'all' })).find((f) => f.code === finding!.code)!.status).toBe('waived');
    expect(Transcript.text(t.message('C_OPS', `${finding!.code} of R2 waived by <@U0LEAD>`).call)).toContain('test data, known orphan');
    t.check();
  });

  it('load and audit: validated again, loaded into staging by a qa_lead, and the audit summary with the trail as a file', async () => {
    const t = new Transcript('load-audit', fake, bot, url, 'a valid release loaded into staging, and its audit trail');
    await t.slash('U0LEAD', 'validate R2');
    const valid = t.message('C_OPS', 'R2: 0 open finding');
    expect(Transcript.text(valid.call)).toContain('is valid');

    await t.slash('U0REV', 'load R2');
    expect(Transcript.text(t.toldTo('U0REV').at(-1)!)).toContain('load needs the qa_lead role');
    expect((await env.db.control('release_states').where({ release: 'R2' }).first()).state).not.toBe('loaded');

    await t.slash('U0LEAD', 'load R2');
    const loaded = t.message('C_OPS', 'R2 loaded into staging');
    expect(Transcript.text(loaded.call)).toMatch(/`users` \d+ rows · checksum `\{checksum\}`/);
    expect((await env.db.control('release_states').where({ release: 'R2' }).first()).state).toBe('loaded');

    const from = fake.calls.length;
    await t.slash('U0REV', 'audit R2');
    const summary = t.posted('C_OPS').at(-1)!;
    expect(Transcript.text(summary.call)).toContain('Chain head');
    expect(t.of('files.completeUploadExternal', from)).toHaveLength(1);
    expect(fake.calls.slice(from).filter((c) => c.method === 'file_upload').map((c) => String(c.args.body)).at(-1)).toContain('"action": "load.finish"');
    t.check();
  });

  it('status and help: what one person asks for (the status, the help, the list of conflicts by status), answered to them only', async () => {
    const t = new Transcript('status-help', fake, bot, url, "a release's status and the help, asked for in Slack");
    const posts = t.of('chat.postMessage').length;
    await t.slash('U0REV', 'status R2');
    const status = Transcript.text(t.toldTo('U0REV').at(-1)!);
    expect(status).toContain('R2');
    expect(status).toContain('loaded');
    const { body } = await t.slash('U0REV', 'help');
    const help = Transcript.text(JSON.parse(body) as Record<string, unknown>);
    for (const command of ['review', 'validate', 'load', 'deploy']) expect(help).toContain(command);
    // every conflict, whatever its status: titled so, each with its status; Review next only if one is open (issue 20)
    const all = await listConflicts(env.ctx, 'R2', { status: 'all' });
    const open = all.filter((c) => c.status === 'open');
    expect(all.length).toBeGreaterThan(open.length);
    await t.slash('U0REV', 'conflicts R2 --status all');
    const listed = t.toldTo('U0REV').at(-1)!;
    const text = Transcript.text(listed);
    expect(text).toContain(`*Conflicts of R2 (open and decided)*: ${all.length}`);
    expect(text).not.toContain('Open conflicts');
    for (const c of all) expect(text).toMatch(new RegExp(`\\*${c.code}\\* .*· ${c.status === 'decided' ? ':white_check_mark: decided' : '\\*open\\*'}`));
    expect(buttonsOf(listed).map((b) => b.action_id)).toEqual(open.length > 0 ? [ACTIONS.next] : []);
    // nothing was posted to a channel
    expect(t.of('chat.postMessage')).toHaveLength(posts);
    t.check();
  });
});
