import type { KnownBlock, View } from '@slack/types';

/**
 * Slack's Block Kit limits, in one place (no official offline validator exists). Views clip text with
 * these helpers; `checkMessage`/`checkView` verify a whole payload and throw naming the limit broken.
 */
export const LIMITS = {
  messageBlocks: 50,
  viewBlocks: 100,
  sectionText: 3000,
  sectionFields: 10,
  fieldText: 2000,
  headerText: 150,
  contextElements: 10,
  actionsElements: 25,
  buttonText: 75,
  buttonValue: 2000,
  id: 255,
  modalTitle: 24,
  modalButton: 24,
  selectOptions: 100,
  optionText: 75,
  inputLabel: 2000,
  privateMetadata: 3000,
  fallbackText: 40000,
} as const;

/** Escapes user text for mrkdwn/plain text (&, <, > are control characters in Slack text). */
export function esc(text: unknown): string {
  return String(text ?? '').replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/**
 * A path on the bot's machine means nothing in Slack (and says how the machine is laid out): shown by its
 * file name. URLs are left alone.
 */
export function hidePaths(text: string): string {
  return text.replace(/(?<![:/\w.~-])(?:\/[\w.@+-]+){2,}\/?/g, (p) => `…/${p.replace(/\/$/, '').split('/').pop()}`);
}

export function clip(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, Math.max(0, max - 1))}…`;
}

export class BlockLimitError extends Error {}

function fail(where: string, what: string): never {
  throw new BlockLimitError(`${where}: ${what}`);
}

type AnyRec = Record<string, unknown>;

function textOf(t: unknown): string {
  return t && typeof t === 'object' && 'text' in t ? String((t as AnyRec).text) : '';
}

function checkElement(el: AnyRec, where: string): void {
  if (typeof el.action_id === 'string' && el.action_id.length > LIMITS.id) fail(where, 'action_id longer than 255');
  if (el.type === 'button') {
    if (textOf(el.text).length > LIMITS.buttonText) fail(where, `button text longer than ${LIMITS.buttonText}`);
    if (typeof el.value === 'string' && el.value.length > LIMITS.buttonValue) fail(where, `button value longer than ${LIMITS.buttonValue}`);
  }
  if (Array.isArray(el.options)) {
    if (el.options.length > LIMITS.selectOptions) fail(where, `more than ${LIMITS.selectOptions} options`);
    for (const o of el.options as AnyRec[]) if (textOf(o.text).length > LIMITS.optionText) fail(where, `option text longer than ${LIMITS.optionText}`);
  }
}

export function checkBlocks(blocks: KnownBlock[], maxBlocks: number, surface: string): void {
  if (blocks.length > maxBlocks) fail(surface, `${blocks.length} blocks (limit ${maxBlocks})`);
  blocks.forEach((raw, i) => {
    const b = raw as unknown as AnyRec;
    const where = `${surface} block ${i} (${String(b.type)})`;
    if (typeof b.block_id === 'string' && b.block_id.length > LIMITS.id) fail(where, 'block_id longer than 255');
    switch (b.type) {
      case 'section': {
        if (textOf(b.text).length > LIMITS.sectionText) fail(where, `text longer than ${LIMITS.sectionText}`);
        const fields = (b.fields as AnyRec[] | undefined) ?? [];
        if (fields.length > LIMITS.sectionFields) fail(where, `more than ${LIMITS.sectionFields} fields`);
        for (const f of fields) if (textOf(f).length > LIMITS.fieldText) fail(where, `field longer than ${LIMITS.fieldText}`);
        if (b.accessory) checkElement(b.accessory as AnyRec, where);
        break;
      }
      case 'header':
        if (textOf(b.text).length > LIMITS.headerText) fail(where, `header longer than ${LIMITS.headerText}`);
        break;
      case 'context':
        if (((b.elements as unknown[]) ?? []).length > LIMITS.contextElements) fail(where, `more than ${LIMITS.contextElements} elements`);
        break;
      case 'actions': {
        const els = (b.elements as AnyRec[]) ?? [];
        if (els.length > LIMITS.actionsElements) fail(where, `more than ${LIMITS.actionsElements} elements`);
        const ids = new Set<string>();
        for (const el of els) {
          checkElement(el, where);
          const id = String(el.action_id);
          if (ids.has(id)) fail(where, `duplicate action_id ${id}`);
          ids.add(id);
        }
        break;
      }
      case 'input':
        if (textOf(b.label).length > LIMITS.inputLabel) fail(where, 'label too long');
        checkElement(b.element as AnyRec, where);
        break;
    }
  });
}

export interface Message {
  text: string;
  blocks: KnownBlock[];
}

export function checkMessage(m: Message): Message {
  if (!m.text) fail('message', 'no text fallback');
  if (m.text.length > LIMITS.fallbackText) fail('message', 'text fallback too long');
  checkBlocks(m.blocks, LIMITS.messageBlocks, 'message');
  return m;
}

export function checkView<V extends View>(v: V): V {
  const rec = v as unknown as AnyRec;
  if (rec.type === 'modal') {
    if (textOf(rec.title).length > LIMITS.modalTitle) fail('modal', 'title longer than 24');
    if (rec.submit && textOf(rec.submit).length > LIMITS.modalButton) fail('modal', 'submit longer than 24');
    if (rec.close && textOf(rec.close).length > LIMITS.modalButton) fail('modal', 'close longer than 24');
  }
  if (typeof rec.private_metadata === 'string' && rec.private_metadata.length > LIMITS.privateMetadata) fail('view', 'private_metadata longer than 3000');
  if (typeof rec.callback_id === 'string' && rec.callback_id.length > LIMITS.id) fail('view', 'callback_id longer than 255');
  checkBlocks(v.blocks as KnownBlock[], LIMITS.viewBlocks, String(rec.type));
  return v;
}
