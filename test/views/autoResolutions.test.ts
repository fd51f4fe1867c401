import { describe, expect, it } from 'vitest';
import type { AutoCounts, AutoResolution } from '../../src/engine/review/index.js';
import { autoResolutionsFile, autoResolutionsMessage, outcomeText, renderAutoLine, renderAutoResolution } from '../../src/views/autoResolutions.js';
import { LIMITS } from '../../src/views/limits.js';

/** The automatic resolutions' views are pure: exact shapes for small inputs, Slack's limits held for large ones. */
function newest(code = 'A-001', keyLabel = 'email=ivan@x'): AutoResolution {
  return {
    code,
    release: 'R2',
    runId: 7,
    entity: 'users',
    identity: 'n:ivan@x',
    keyLabel,
    rule: 'newest-wins',
    reason: 'ST-2 newer: 2024-01-11 08:00 vs 2024-01-10 08:00 — newest wins',
    detail: {
      kept: { version: 2, env: 'ST-2', pk: '2', key: '2', envs: ['ST-2'], pks: ['2'] },
      differing: [],
      merged: null,
      versions: [1, 2].map((no) => ({
        no,
        envs: [`ST-${no}`],
        pks: [String(no)],
        feature: 'FEAT-M',
        features: ['FEAT-M'],
        created_by: 'qa',
        created_at: `2024-01-1${no - 1}T08:00:00Z`,
        ts: null,
        data: { id: String(no), email: 'ivan@x', city: 'Oslo' },
      })),
    },
    overrule: null,
  };
}

const rekey: AutoResolution = {
  ...newest('A-002', 'id=1500'),
  identity: 'key:1500',
  rule: 're-key',
  reason: 'id 1500 is used by different records in ST-1, ST-2; ST-1 keeps it — re-keyed ST-2 → 1501',
  detail: {
    kept: { env: 'ST-1', pk: '1500', key: '1500' },
    rekeyed: [{ env: 'ST-2', old: '1500', new: '1501', children: [{ entity: 'accounts', pk: '1' }] }],
    versions: [],
  },
};

const counts: AutoCounts = { release: 'R2', runId: 7, total: 2, byRule: { 'newest-wins': 1, 're-key': 1 }, overruled: 1, reopened: 0 };

describe('automatic resolutions, as text', () => {
  it('says what was kept, merged and re-keyed', () => {
    expect(outcomeText(newest())).toBe('kept version 2 (ST-2, key 2)');
    const merge = newest();
    merge.detail.merged = { phone: 'ST-1', city: 'ST-3' };
    expect(outcomeText(merge)).toBe('kept version 2 (ST-2, key 2); merged phone ← ST-1, city ← ST-3');
    expect(outcomeText(rekey)).toBe("kept ST-1's key 1500; re-keyed ST-2 1500 → 1501 (1 child row(s) followed)");
  });

  it('a line per resolution, with its overrule', () => {
    const over = { ...newest(), overrule: { status: 'decided' as const, decidedBy: 'U_ALICE', decidedAt: new Date(0), decision: { action: 'keep' as const, version: 1 }, rationale: 'reference profile' } };
    expect(renderAutoLine(over)).toBe(
      '  A-001  newest-wins         users email=ivan@x  kept version 2 (ST-2, key 2)  [overruled by U_ALICE: keep version 1 — reference profile]\n         ST-2 newer: 2024-01-11 08:00 vs 2024-01-10 08:00 — newest wins',
    );
  });

  it('shows the versions side by side, the kept one marked, and how to overrule', () => {
    const text = renderAutoResolution(newest());
    expect(text.split('\n').slice(0, 4)).toEqual([
      'A-001  newest-wins  users email=ivan@x  (run #7)',
      '  reason: ST-2 newer: 2024-01-11 08:00 vs 2024-01-10 08:00 — newest wins',
      '  outcome: kept version 2 (ST-2, key 2)',
      '            v1 ST-1 key 1        │ v2 ST-2 key 2 (kept)',
    ]);
    expect(text).toMatch(/ {2}email +ivan@x +│ ivan@x/);
    expect(text).toContain('tributary decide A-001 --release R2 --keep <version>');
    const moved = renderAutoResolution(rekey);
    expect(moved).toContain('followed: accounts 1 (ST-2: 1500 → 1501)');
    expect(moved).not.toContain('tributary decide');
  });
});

describe('automatic resolutions, in Slack', () => {
  it('counts per rule and the first few, the rest in the file', () => {
    const m = autoResolutionsMessage('R2', counts, [newest()], { shown: 1 });
    expect(m.text).toBe('2 automatic resolutions in R2');
    expect(m.blocks).toEqual([
      { type: 'section', text: { type: 'mrkdwn', text: '*Automatic resolutions of R2*: 2 · 1 overruled' } },
      { type: 'section', text: { type: 'mrkdwn', text: '• newest-wins: 1\n• re-key: 1' } },
      { type: 'section', text: { type: 'mrkdwn', text: '*A-001* newest-wins · users `email=ivan@x` · kept version 2 (ST-2, key 2)' } },
      { type: 'context', elements: [{ type: 'mrkdwn', text: '1 more in the attached list · `tributary conflicts R2 --status auto-resolved`' }] },
    ]);
  });

  it('escapes user text and holds Slack’s limits for thousands of resolutions', () => {
    const many = Array.from({ length: 5000 }, (_, i) => newest(`A-${String(i + 1).padStart(4, '0')}`, `email=<${'x'.repeat(300)}>&`));
    const m = autoResolutionsMessage('R2', { ...counts, total: 5000, byRule: { 'newest-wins': 5000 } }, many, { shown: 100 });
    expect(m.blocks.length).toBeLessThanOrEqual(LIMITS.messageBlocks);
    expect(JSON.stringify(m.blocks)).toContain('&lt;xxx');
    expect(JSON.stringify(m.blocks)).not.toContain('<xxx');
  });

  it('the whole list as a file: a tab-separated line per resolution', () => {
    const file = autoResolutionsFile([newest(), { ...rekey, reason: 'with\ta tab\nand a line' }]);
    expect(file.split('\n')).toEqual([
      'code\tentity\tkey\trule\toutcome\treason\toverrule',
      'A-001\tusers\temail=ivan@x\tnewest-wins\tkept version 2 (ST-2, key 2)\tST-2 newer: 2024-01-11 08:00 vs 2024-01-10 08:00 — newest wins\t',
      "A-002\tusers\tid=1500\tre-key\tkept ST-1's key 1500; re-keyed ST-2 1500 → 1501 (1 child row(s) followed)\twith a tab and a line\t",
      '',
    ]);
  });
});
