import { describe, expect, it } from 'vitest';
import { DEPLOYMENT_STATES } from '../../src/engine/deploy/lifecycle.js';
import { channelLink, composed, mention, progressMessage } from '../../src/views/blocks.js';
import { deploymentIcon, goPendingMessage } from '../../src/views/deploy.js';
import { ENDING_ICON, type Ending } from '../../src/views/kit.js';

/** Icons tell the outcome: success, failure, refusal and partial look distinct, and only what still runs shows the hourglass. */
const first = (state: Ending) => String((progressMessage({ title: 'T', step: 's', elapsedMs: 0, state }).blocks[0] as { text: { text: string } }).text.text);

describe('outcome icons', () => {
  it('gives each outcome its own icon, and the progress message shows it first', () => {
    const icons = Object.values(ENDING_ICON);
    expect(new Set(icons).size).toBe(icons.length);
    for (const state of Object.keys(ENDING_ICON) as Ending[]) expect(first(state).startsWith(`${ENDING_ICON[state]} `)).toBe(true);
    expect(first('failure')).not.toContain(':white_check_mark:');
    expect(first('partial')).not.toContain(':white_check_mark:');
  });

  it('ends a deployment with its outcome: a rejected one no longer shows the hourglass', () => {
    expect(deploymentIcon('rejected')).toBe(ENDING_ICON.refusal);
    expect(deploymentIcon('cancelled')).toBe(ENDING_ICON.refusal);
    expect(deploymentIcon('expired')).toBe(ENDING_ICON.refusal);
    expect(deploymentIcon('succeeded')).toBe(ENDING_ICON.success);
    expect(deploymentIcon('rollback-failed')).toBe(ENDING_ICON.failure);
    expect(deploymentIcon('rolled-back')).toBe(ENDING_ICON.partial);
    const ended = DEPLOYMENT_STATES.filter((s) => !['awaiting-go', 'scheduled', 'approved', 'running', 'rolling-back'].includes(s));
    for (const s of ended) expect(deploymentIcon(s)).not.toBe(ENDING_ICON.running);
  });
});

describe('mentions the bot composes', () => {
  it('renders <@U…> and <#C…> made by mention/channelLink, and escapes what users typed', () => {
    const m = composed`${'R<2>'} decided by ${mention('U0ALICE')} and ${mention('cli:bob')}, posting to ${channelLink('C0REVIEW')} for ${'<@U0EVIL>'}`;
    const text = (m.blocks[0] as { text: { text: string } }).text.text;
    expect(text).toBe('R&lt;2&gt; decided by <@U0ALICE> and cli:bob, posting to <#C0REVIEW> for &lt;@U0EVIL&gt;');
    expect(m.text).toContain('<@U0ALICE>');
    expect(text).not.toContain('&lt;@U0ALICE');
  });
});

describe('a Go that does not complete the quorum', () => {
  it('names who else must say Go', () => {
    const d = { id: 7, release: 'R2', requested_by: 'U0RM1' };
    const text = (m: { blocks: unknown[] }) => (m.blocks[0] as { text: { text: string } }).text.text;
    expect(text(goPendingMessage(d, ['U0RM1'], 2, ['U0RM1', 'U0RM2', 'U0RM3']))).toContain('1 more Go needed, from a release_manager other than <@U0RM1> (who asked for it): <@U0RM2>, <@U0RM3>.');
    expect(text(goPendingMessage(d, ['U0RM2'], 3, ['U0RM1', 'U0RM2', 'U0RM3']))).toContain('(1 of 3); nothing runs yet. 2 more Go needed, from: <@U0RM1>, <@U0RM3>.');
  });
});
