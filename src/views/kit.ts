import type { Button, KnownBlock, SectionBlock } from '@slack/types';
import { clip, LIMITS } from './limits.js';

/** Block Kit building blocks shared by every view: texts clipped to Slack's limits. */
export const md = (text: string) => ({ type: 'mrkdwn' as const, text });
export const plain = (text: string) => ({ type: 'plain_text' as const, text, emoji: true });
export const section = (text: string): SectionBlock => ({ type: 'section', text: md(clip(text, LIMITS.sectionText)) });
export const context = (...texts: string[]): KnownBlock => ({ type: 'context', elements: texts.slice(0, LIMITS.contextElements).map((t) => md(clip(t, LIMITS.sectionText))) });
export const header = (text: string): KnownBlock => ({ type: 'header', text: plain(clip(text, LIMITS.headerText)) });

export function button(text: string, actionId: string, value: string, style?: 'primary' | 'danger'): Button {
  return { type: 'button', text: plain(clip(text, LIMITS.buttonText)), action_id: actionId, value, ...(style ? { style } : {}) };
}


/** The audit chain's newest event, on a step's final message: a witness kept outside the database. */
export const chainHeadContext = (head: { seq: number; hash: string }): KnownBlock =>
  context(`Audit chain head #${head.seq} \`${head.hash}\` (a witness outside the database: \`tributary audit verify --head <hash>\`)`);

/**
 * How a step ended, and the one icon each outcome shows (progress messages, deployment cards): success,
 * failure, a refusal (nothing was done) and a partial outcome (done, with something left to act on) never
 * look alike, and only a step still running shows the hourglass.
 */
export type Ending = 'running' | 'success' | 'failure' | 'refusal' | 'partial';
export const ENDING_ICON: Record<Ending, string> = {
  running: ':hourglass_flowing_sand:',
  success: ':white_check_mark:',
  failure: ':x:',
  refusal: ':no_entry:',
  partial: ':warning:',
};
