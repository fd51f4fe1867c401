import { describe, expect, it } from 'vitest';
import type { ConflictRow } from '../../src/engine/review/types.js';
import { conflictCard, conflictListMessage, decidedCard, decisionModal, helpMessage, homeView } from '../../src/views/blocks.js';
import { helpLines } from '../../src/commands/help.js';
import { commandsOf } from '../../src/commands/table.js';
import { BlockLimitError, checkMessage, esc, LIMITS } from '../../src/views/limits.js';

/** Views are pure: exact shapes for small inputs, and Slack's limits held for large ones. */
function conflict(versions: number, attrLength = 10): ConflictRow {
  return {
    id: 1,
    release: 'R2',
    run_id: 7,
    code: 'C-015',
    entity: 'users',
    identity: 'n:dana@x',
    key_label: 'email=<dana@x>',
    kind: 'core-conflict',
    priority: 'P1',
    status: 'open',
    assigned_to: null,
    assigned_at: null,
    decided_by: null,
    decided_at: null,
    created_at: new Date('2024-01-10T09:00:00Z'),
    detail: {
      reason: 'core attributes differ (role)',
      suggestion: 'keep',
      suggested: 1,
      differing: ['role', 'bio'],
      versions: Array.from({ length: versions }, (_, i) => ({
        no: i + 1,
        envs: [`ST-${i + 1}`],
        pks: [String(i + 1)],
        feature: 'FEAT-101',
        features: ['FEAT-101'],
        created_by: 'qa',
        created_at: '2024-01-10T09:00:00Z',
        ts: '2024-01-10T09:00:00Z',
        data: { role: `Role ${i}`, bio: 'x'.repeat(attrLength), city: 'Oslo' },
        children: i,
      })),
    },
  };
}

describe('conflict card', () => {
  it('shows versions side by side with one Keep button per version, escaping user text', () => {
    const m = conflictCard(conflict(3));
    expect(m.text).toBe('C-015 P1 core-conflict: users email=<dana@x>');
    const json = JSON.stringify(m.blocks);
    expect(json).toContain('email=&lt;dana@x&gt;');
    const actions = m.blocks.find((b) => b.type === 'actions') as { elements: { action_id: string; text: { text: string } }[] };
    expect(actions.elements.map((e) => [e.action_id, e.text.text])).toEqual([
      ['review:keep:1', 'Keep ST-1'],
      ['review:keep:2', 'Keep ST-2'],
      ['review:keep:3', 'Keep ST-3'],
      ['review:keep-both', 'Keep both (rename)'],
      ['review:merge', 'Merge'],
      ['review:delete', 'Delete both'],
    ]);
  });

  it('stays within the limits with many versions and long values', () => {
    const m = conflictCard(conflict(40, 5000));
    expect(m.blocks.length).toBeLessThanOrEqual(LIMITS.messageBlocks);
    expect(() => checkMessage(m)).not.toThrow();
  });

  it('a decided card has no buttons and says who, what and why', () => {
    const m = decidedCard(conflict(2), { decision: { action: 'keep', version: 2 }, by: 'U123', at: new Date('2024-02-01T10:00:00Z'), rationale: 'R&D <says>' });
    expect(m.blocks.some((b) => b.type === 'actions')).toBe(false);
    const json = JSON.stringify(m.blocks);
    expect(json).toContain('<@U123>');
    expect(json).toContain('kept version 2 (ST-2)');
    expect(json).toContain('R&amp;D &lt;says&gt;');
  });
});

describe('limits', () => {
  it('refuses a message over 50 blocks and one without a text fallback', () => {
    const blocks = Array.from({ length: 51 }, () => ({ type: 'divider' as const }));
    expect(() => checkMessage({ text: 'x', blocks })).toThrow(BlockLimitError);
    expect(() => checkMessage({ text: '', blocks: [] })).toThrow(/no text fallback/);
  });

  it('long lists page instead of failing', () => {
    const rows = Array.from({ length: 500 }, (_, i) => ({ ...conflict(2), code: `C-${i}` }));
    const m = conflictListMessage('R2', rows);
    expect(JSON.stringify(m.blocks)).toContain('… 460 more');
    expect(m.blocks.length).toBeLessThanOrEqual(LIMITS.messageBlocks);
  });

  it('a list of conflicts is titled by the status asked for, shows each status unless only open ones are listed, and offers Review next only while one is open', () => {
    const open = { ...conflict(2), code: 'C-1', status: 'open' as const };
    const decided = { ...conflict(2), code: 'C-2', status: 'decided' as const };
    const actionsOf = (m: { blocks: unknown[] }) => JSON.stringify(m.blocks.filter((b) => (b as { type: string }).type === 'actions'));
    const onlyOpen = conflictListMessage('R2', [open]);
    expect(JSON.stringify(onlyOpen.blocks)).toContain('*Open conflicts of R2*: 1');
    expect(JSON.stringify(onlyOpen.blocks)).not.toContain('*open*');
    expect(actionsOf(onlyOpen)).toContain('Review next');
    const all = conflictListMessage('R2', [open, decided], undefined, 'all');
    expect(JSON.stringify(all.blocks)).toContain('*Conflicts of R2 (open and decided)*: 2');
    expect(JSON.stringify(all.blocks)).toMatch(/\*C-1\*[^\n]* · \*open\*/);
    expect(JSON.stringify(all.blocks)).toMatch(/\*C-2\*[^\n]* · :white_check_mark: decided/);
    expect(actionsOf(all)).toContain('Review next');
    const done = conflictListMessage('R2', [decided], undefined, 'decided');
    expect(JSON.stringify(done.blocks)).toContain('*Decided conflicts of R2*: 1');
    expect(actionsOf(done)).toBe('[]');
  });

  it('modals fit: merge offers a choice per differing attribute', () => {
    const v = decisionModal({ conflict: conflict(3), meta: { release: 'R2', code: 'C-015', runId: 7, action: 'merge' }, blast: { rewritten: 2, removed: 0, renamed: [], dependents: [], dependentCount: 0 } });
    const inputs = v.blocks.filter((b) => b.type === 'input').map((b) => (b as { block_id: string }).block_id);
    expect(inputs).toEqual(['decide:merge:role', 'decide:merge:bio', 'decide:rationale']);
    expect(v.title.text.length).toBeLessThanOrEqual(24);
  });

  it('help and escaping', () => {
    expect(esc('<a&b>')).toBe('&lt;a&amp;b&gt;');
    expect(helpMessage([], 'oops').text).toContain('oops');
  });

  it("the App Home's last nights: a running night, and one interrupted by its process's death", () => {
    const view = JSON.stringify(
      homeView({
        statuses: [],
        assigned: [],
        nights: [
          { at: '2026-03-02 02:00', status: 'interrupted', passRate: null, newRegressions: 0, fixed: 0 },
          { at: '2026-03-01 02:00', status: 'running', passRate: null, newRegressions: 0, fixed: 0 },
          { at: '2026-02-28 02:00', status: 'done', passRate: 99.5, newRegressions: 1, fixed: 2 },
        ],
      }),
    );
    expect(view).toContain('2026-03-02 02:00 · interrupted (the process running it stopped): it runs again');
    expect(view).toContain(':hourglass_flowing_sand: 2026-03-01 02:00 · running');
    expect(view).toContain('2026-02-28 02:00 · pass rate *99.5%* · 1 new regression(s) · 2 fixed');
  });

  it('help lists every /release command of the table, in sections Slack accepts', () => {
    const m = helpMessage(helpLines('slack'));
    const text = JSON.stringify(m.blocks);
    for (const d of commandsOf('slack')) expect(text).toContain(`/release ${d.id}`);
    expect(text).not.toContain('/release migrate');
    for (const b of m.blocks) expect(JSON.stringify(b).length).toBeLessThan(3200);
  });
});

describe('the highlighted choice is the suggested one', () => {
  /** The card's primary button, the versions marked suggested, and the suggestion it states. */
  function highlighted(c: ConflictRow): { primary: string[]; marked: string[] } {
    const m = conflictCard(c);
    const actions = m.blocks.find((b) => b.type === 'actions') as { elements: { text: { text: string }; style?: string }[] };
    const marked = m.blocks.filter((b) => b.type === 'section' && JSON.stringify(b).includes('_suggested_')).map((b) => /\*Version (\d+)/.exec(JSON.stringify(b))?.[1] ?? '?');
    return { primary: actions.elements.filter((e) => e.style === 'primary').map((e) => e.text.text), marked };
  }
  const versions = (suggestion: ConflictRow['detail']['suggestion'], suggested: number | null) => {
    const c = conflict(2);
    c.detail = { ...c.detail, suggestion, suggested } as ConflictRow['detail'];
    return c;
  };
  const reference = (suggestion: ConflictRow['detail']['suggestion']) => {
    const c = conflict(1);
    c.kind = 'dangling-reference';
    c.detail = { reason: 'r', suggestion, column: 'user_id', value: '9', record: { env: 'ST-1', pk: '5', data: { user_id: 9 } } } as unknown as ConflictRow['detail'];
    return c;
  };

  it('keep: the suggested version is marked and its Keep button is the primary one', () => {
    expect(highlighted(versions('keep', 2))).toEqual({ primary: ['Keep ST-2'], marked: ['2'] });
  });
  it('keep both: Keep both is the primary button, and no version is marked', () => {
    expect(highlighted(versions('keep-both', 1))).toEqual({ primary: ['Keep both (rename)'], marked: [] });
  });
  it('delete, waive, none on a reference conflict: Delete, Waive, Re-point', () => {
    expect(highlighted(reference('delete')).primary).toEqual(['Delete']);
    expect(highlighted(reference('waive')).primary).toEqual(['Waive']);
    expect(highlighted(reference('none')).primary).toEqual(['Re-point']);
  });
  it('no suggestion between versions: nothing is highlighted', () => {
    expect(highlighted(versions('none', null))).toEqual({ primary: [], marked: [] });
  });
});

describe('errors in words for people', () => {
  it('names the Slack user who did something as a mention and a timestamp as a Slack date; typed text stays text', async () => {
    const { errorMessage } = await import('../../src/views/blocks.js');
    const m = errorMessage('production is locked by rollback of deployment #1 of R2 (held by U0RM2 since 2026-12-06T02:21:26.675Z): unlock it');
    const text = JSON.stringify(m.blocks);
    expect(text).toContain('held by <@U0RM2> since <!date^1796523686^{date_short_pretty} {time}|2026-12-06T02:21:26.675Z>');
    expect(text).not.toMatch(/since 2026/);
    // not a Slack id after "by", or user input with markup: left as text, escaped
    expect(JSON.stringify(errorMessage('decided by cli:alice; unknown release "<@U0EVIL>"').blocks)).toContain('decided by cli:alice; unknown release \\"&lt;@U0EVIL&gt;\\"');
  });
});

it("a modal's error (plain text) shows a timestamp as a person reads it", async () => {
  const { plainTimes } = await import('../../src/views/blocks.js');
  expect(plainTimes('C-001 was already decided by U0REV at 2026-12-06T02:16:46.051Z: keep version 1')).toBe('C-001 was already decided by U0REV at 2026-12-06 02:16 UTC: keep version 1');
});
