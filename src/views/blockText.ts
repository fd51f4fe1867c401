import type { KnownBlock } from '@slack/types';
import type { Message } from './limits.js';

/**
 * A Slack message as readable text, the way a person sees it: headers, sections and their fields,
 * context lines, buttons as `[Label]` (`[*Label*]` for the primary one). Used for the card examples in
 * docs/slack.md; mrkdwn is shown as written, with Slack's escapes undone.
 */
type Text = { text?: string } | undefined;
type Element = { type: string; text?: Text; style?: string; placeholder?: Text };

/** Slack's special forms as a person reads them: dates, mentions and channels; then the escapes. */
const unescape = (s: string) =>
  s
    .replace(/<!date\^[^|>]*\|([^>]*)>/g, '$1')
    .replace(/<@([UW][A-Z0-9]+)(?:\|[^>]*)?>/g, '@$1')
    .replace(/<#(C[A-Z0-9]+)(?:\|([^>]*))?>/g, (_m, id: string, name?: string) => `#${name ?? id}`)
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&amp;/g, '&');
const textOf = (t: Text) => unescape(t?.text ?? '');

function elementText(e: Element): string {
  if (e.type === 'button') return e.style === 'primary' ? `[*${textOf(e.text)}*]` : `[${textOf(e.text)}]`;
  if (e.type === 'mrkdwn' || e.type === 'plain_text') return textOf(e as Text);
  return `[${textOf(e.placeholder) || e.type}]`;
}

function blockText(b: KnownBlock): string[] {
  const block = b as KnownBlock & { text?: Text; fields?: Text[]; elements?: Element[]; accessory?: Element };
  switch (block.type) {
    case 'header':
      return [`# ${textOf(block.text)}`];
    case 'section': {
      const lines = block.text ? [textOf(block.text)] : [];
      if (block.fields) lines.push(block.fields.map(textOf).join('  |  '));
      if (block.accessory) lines.push(elementText(block.accessory));
      return lines;
    }
    case 'context':
      return [`  ${(block.elements ?? []).map(elementText).join(' · ')}`];
    case 'actions':
      return [(block.elements ?? []).map(elementText).join(' ')];
    case 'divider':
      return ['---'];
    default:
      return [`(${block.type})`];
  }
}

export function messageText(m: Message): string {
  return (m.blocks ?? []).flatMap((b) => blockText(b as KnownBlock)).join('\n');
}
