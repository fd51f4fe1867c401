import { describe, expect, it } from 'vitest';
import type { Pattern, Proposal } from '../../src/engine/review/index.js';
import { PATTERN_ACTIONS } from '../../src/slack/ids.js';
import { queueSummaryMessage } from '../../src/views/blocks.js';
import { messageText } from '../../src/views/blockText.js';
import { patternCard, patternChoices, patternListMessage, proposalCard, renderPatterns, renderProposals, type PatternRef } from '../../src/views/patterns.js';

/** The pattern views: the choices a card offers apply to every member (no version numbers), within Slack's limits. */
const pattern = (i: number, over: Partial<Pattern> = {}): Pattern => ({
  id: `P-${i}`,
  entity: 'users',
  kind: 'core-conflict',
  attributes: ['role'],
  envs: ['ST-1', 'ST-2'],
  count: 100 - i,
  priority: 'P2',
  signature: 'users/core-conflict/role/ST-1+ST-2',
  sample: { code: `C-${String(i).padStart(3, '0')}`, key: `email=u${i}@x`, reason: 'core attributes differ (role): needs review' },
  ...over,
});

describe('pattern views', () => {
  it('a version conflict pattern offers keep by env (one per env), by rule, keep both and delete; never a version number', () => {
    const card = patternCard('R2', pattern(1));
    const buttons = card.blocks.flatMap((b) => (b.type === 'actions' ? b.elements : [])) as { action_id: string; value: string }[];
    expect(buttons.map((b) => b.action_id)).toEqual([`${PATTERN_ACTIONS.keepEnvPrefix}ST-1`, `${PATTERN_ACTIONS.keepEnvPrefix}ST-2`, PATTERN_ACTIONS.keepByRule, PATTERN_ACTIONS.keepBoth, PATTERN_ACTIONS.delete]);
    const ref = JSON.parse(buttons[1]!.value) as PatternRef;
    expect(ref).toEqual({ release: 'R2', pattern: 'P-1', signature: 'users/core-conflict/role/ST-1+ST-2', choice: { keepEnv: 'ST-2' } });
    expect(buttons.some((b) => JSON.stringify(JSON.parse(b.value).choice).includes('version'))).toBe(false);
    expect(card.text).toBe('P-1: 99 core-conflict conflicts of users');
  });

  it('a reference pattern offers delete and waive', () => {
    expect(patternChoices(pattern(2, { kind: 'dangling-reference', attributes: ['account_id'], envs: ['ST-3'] })).map((c) => c.choice)).toEqual([{ action: 'delete' }, { action: 'waive' }]);
  });

  it('lists many patterns within the block limit, the rest counted; text lists each with its sample', () => {
    const many = Array.from({ length: 60 }, (_, i) => pattern(i + 1));
    const msg = patternListMessage('R2', many);
    expect(msg.blocks.length).toBeLessThanOrEqual(50);
    expect(JSON.stringify(msg.blocks.at(-1))).toContain('… 40 more: tributary conflicts R2 --patterns');
    const text = renderPatterns('R2', many.slice(0, 2));
    expect(text.split('\n')).toEqual([
      'R2: 197 open conflict(s) in 2 pattern(s) — one decision each (tributary decide --pattern P-<n> …)',
      '  P-1      99 × P2 users core-conflict: attributes differ (role) between ST-1, ST-2',
      '        e.g. C-001 email=u1@x: core attributes differ (role): needs review',
      '  P-2      98 × P2 users core-conflict: attributes differ (role) between ST-1, ST-2',
      '        e.g. C-002 email=u2@x: core attributes differ (role): needs review',
    ]);
  });

  it('a proposal names the rule, what it does and the decisions it agrees with, with the accept button', () => {
    const p: Proposal = { name: 'keep-st-1-users-role', entity: 'users', kind: 'core-conflict', attributes: ['role'], envs: ['ST-1', 'ST-2'], choice: { keepEnv: 'ST-1' }, signature: 's', decisions: ['C-001', 'C-002', 'C-003'].map((code, i) => ({ release: 'R2', code, decision: `D-${i + 1}`, by: 'U1' })) };
    expect(renderProposals([p])).toContain("keep-st-1-users-role: users core-conflict where attributes differ (role) between ST-1, ST-2 → keep ST-1's version\n    agrees with 3 decision(s): R2 C-001, R2 C-002, R2 C-003");
    const card = proposalCard(p);
    expect(JSON.stringify(card.blocks)).toContain(PATTERN_ACTIONS.accept);
  });

  it('the review queue summary lists the largest patterns of alike conflicts, and none when no two are alike', () => {
    const q = { release: 'R2', runId: 1, open: { P1: 0, P2: 250, P3: 0 }, decided: 0, total: 250 };
    const text = messageText(queueSummaryMessage(q, [pattern(1), pattern(2, { entity: 'accounts', attributes: ['currency'] }), pattern(3, { count: 1 })]));
    expect(text).toContain('3 pattern(s)');
    expect(text).toContain('*P-1* 99 × `users` core-conflict (role) between ST-1, ST-2');
    expect(text).toContain('*P-2* 98 × `accounts` core-conflict (currency)');
    expect(text).not.toContain('P-3');
    expect(text).toContain('/release conflicts R2 --patterns');
    expect(messageText(queueSummaryMessage(q, [pattern(3, { count: 1 })]))).not.toContain('pattern');
  });
});
