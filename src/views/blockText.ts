import type { KnownBlock } from '@slack/types';
import type { Message } from './limits.js';

/**
 * A Slack message as readable text, the way a person sees it: headers, sections and their fields,
 * context lines, buttons as `[Label]` (`[*Label*]` for the primary one), a modal's inputs as
 * `Label: [input]` (a select the bot fills as `[placeholder ▾]`), their hints in italics below. Used by the Slack transcripts (test/slack/transcripts), from which docs/slack.md
 * shows the cards; mrkdwn is shown as written, with Slack's escapes undone.
 */
type Text = { text?: string } | undefined;
type Option = { text?: Text; value?: string };
type Element = { type: string; text?: Text; style?: string; placeholder?: Text; initial_value?: string; options?: Option[]; initial_option?: Option; initial_options?: Option[] };

/** Slack's special forms as a person reads them: dates, mentions and channels; then the escapes. */
const unescape = (s: string) =>
  s
    .replace(/<!date\^[^|>]*\|([^>]*)>/g, '$1')
    .replace(/<@([UW][A-Z0-9]+)(?:\|[^>]*)?>/g, '@$1')
    .replace(/<#([CG][A-Z0-9_]+)(?:\|([^>]*))?>/g, (_m, id: string, name?: string) => `#${name ?? id}`)
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&amp;/g, '&');
const textOf = (t: Text) => unescape(t?.text ?? '');

function elementText(e: Element): string {
  if (e.type === 'button') return e.style === 'primary' ? `[*${textOf(e.text)}*]` : `[${textOf(e.text)}]`;
  if (e.type === 'mrkdwn' || e.type === 'plain_text') return textOf(e as Text);
  if (e.type === 'plain_text_input') return `[${e.initial_value ?? (textOf(e.placeholder) || '…')}]`;
  // a select whose options the bot answers when it opens (block_suggestion): its placeholder and a drop-down mark
  if (e.type === 'external_select') return `[${e.initial_option ? textOf(e.initial_option.text) : textOf(e.placeholder) || 'choose'} ▾]`;
  if (e.options) {
    const chosen = new Set([e.initial_option, ...(e.initial_options ?? [])].filter(Boolean).map((o) => o!.value));
    return e.options.map((o) => `${e.type === 'checkboxes' ? (chosen.has(o.value) ? '[x]' : '[ ]') : chosen.has(o.value) ? '(•)' : '( )'} ${textOf(o.text)}`).join('  ');
  }
  return `[${textOf(e.placeholder) || e.type}]`;
}

function blockText(b: KnownBlock): string[] {
  const block = b as KnownBlock & { text?: Text; fields?: Text[]; elements?: Element[]; accessory?: Element; label?: Text; element?: Element; optional?: boolean; hint?: Text };
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
    case 'input': {
      const line = `${textOf(block.label)}${block.optional ? ' (optional)' : ''}: ${block.element ? elementText(block.element) : ''}`;
      return block.hint ? [line, `  _${textOf(block.hint)}_`] : [line];
    }
    default:
      return [`(${block.type})`];
  }
}

export function messageText(m: Message): string {
  return (m.blocks ?? []).flatMap((b) => blockText(b as KnownBlock)).join('\n');
}

/** A modal as readable text: its title, its blocks, its buttons (`[*Submit*]` the primary one). */
export function viewText(v: { title?: Text; submit?: Text; close?: Text; blocks?: unknown[] }): string {
  const buttons = [v.submit ? `[*${textOf(v.submit)}*]` : '', v.close ? `[${textOf(v.close)}]` : ''].filter(Boolean).join(' ');
  return [`«${textOf(v.title)}»`, messageText({ text: '', blocks: (v.blocks ?? []) as KnownBlock[] }), buttons].filter(Boolean).join('\n');
}
