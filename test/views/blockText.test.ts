import { expect, it } from 'vitest';
import { messageText } from '../../src/views/blockText.js';
import { conflictCard } from '../../src/views/blocks.js';
import { checkMessage } from '../../src/views/limits.js';
import type { ConflictRow } from '../../src/engine/review/types.js';

it('renders a message as a person reads it: mentions, dates and escapes undone, buttons bracketed, the primary starred', () => {
  const m = checkMessage({
    text: 'x',
    blocks: [
      { type: 'header', text: { type: 'plain_text', text: 'C-001' } },
      { type: 'section', text: { type: 'mrkdwn', text: 'by <@U123ABC> <!date^1796463000^{date_short_pretty}|5 Dec> in <#C42|release> &lt;a&gt; &amp; b' } },
      { type: 'context', elements: [{ type: 'mrkdwn', text: 'one' }, { type: 'mrkdwn', text: 'two' }] },
      {
        type: 'actions',
        elements: [
          { type: 'button', action_id: 'a', text: { type: 'plain_text', text: 'Keep ST-1' }, style: 'primary' },
          { type: 'button', action_id: 'b', text: { type: 'plain_text', text: 'Delete' }, style: 'danger' },
        ],
      },
    ],
  });
  expect(messageText(m)).toBe('# C-001\nby @U123ABC 5 Dec in #release <a> & b\n  one · two\n[*Keep ST-1*] [Delete]');
});

it('shows the suggested version of a card as its highlighted button', () => {
  const c = {
    id: 1, release: 'R2', run_id: 1, code: 'C-009', entity: 'users', identity: 'i', key_label: 'email=a', kind: 'equal-priority', priority: 'P3', status: 'open',
    assigned_to: null, assigned_at: null, decided_by: null, decided_at: null,
    detail: {
      reason: 'r', suggestion: 'keep', suggested: 2, differing: ['city'],
      versions: [1, 2].map((no) => ({ no, envs: [`ST-${no}`], pks: [String(no)], feature: 'F', features: ['F'], created_by: 'q', created_at: null, ts: null, data: { city: `c${no}` }, children: 0 })),
    },
  } as unknown as ConflictRow;
  expect(messageText(conflictCard(c)).split('\n').at(-1)).toBe('[Keep ST-1] [*Keep ST-2*] [Keep both (rename)] [Merge] [Delete both]');
});

it('renders a modal: its title, its inputs and options, its buttons', async () => {
  const { viewText } = await import('../../src/views/blockText.js');
  const text = viewText({
    title: { text: 'Keep one version' },
    submit: { text: 'Decide' },
    close: { text: 'Cancel' },
    blocks: [
      { type: 'section', text: { type: 'mrkdwn', text: '*C-001*' } },
      { type: 'input', label: { text: 'Rationale' }, element: { type: 'plain_text_input', placeholder: { text: 'Why?' } } },
      { type: 'input', label: { text: 'New number' }, element: { type: 'plain_text_input', initial_value: 'M-1-st-2' } },
      { type: 'input', optional: true, label: { text: 'Cascade' }, element: { type: 'checkboxes', options: [{ text: { text: 'delete dependants' }, value: 'cascade' }], initial_options: [{ value: 'cascade' }] } },
      { type: 'input', label: { text: 'New accounts' }, hint: { text: 'Type to search' }, element: { type: 'external_select', placeholder: { text: 'an accounts key' } } },
    ],
  });
  expect(text).toBe('«Keep one version»\n*C-001*\nRationale: [Why?]\nNew number: [M-1-st-2]\nCascade (optional): [x] delete dependants\nNew accounts: [an accounts key ▾]\n  _Type to search_\n[*Decide*] [Cancel]');
});
