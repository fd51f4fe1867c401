import { describe, expect, it } from 'vitest';
import { explainSlackError, slackError } from '../../src/slack/slackErrors.js';

/** Slack's refusals a person can fix are said as what to do; other errors are left to the generic reply. */
const refusal = (error: string, extra: Record<string, unknown> = {}) => Object.assign(new Error(`An API error occurred: ${error}`), { code: 'slack_webapi_platform_error', data: { ok: false, error, ...extra } });
const text = (err: unknown, channel?: string) => ((explainSlackError(err, channel)?.blocks[0] as { text: { text: string } } | undefined)?.text.text);

describe('explainSlackError', () => {
  it('says what to do for a channel the bot is not in, an archived channel, a missing scope, a deleted message', () => {
    expect(text(refusal('not_in_channel'), 'C0REVIEW')).toBe(':x: The bot is not in <#C0REVIEW>: type /invite @tributary there, then try again.');
    expect(text(refusal('is_archived'), 'C0REVIEW')).toContain('<#C0REVIEW> is archived: unarchive it');
    expect(text(refusal('missing_scope', { needed: 'files:write' }))).toContain('lacks the files:write scope: whoever runs the bot adds it');
    expect(text(refusal('message_not_found'))).toContain('deleted in Slack');
    for (const e of ['not_in_channel', 'is_archived', 'missing_scope']) expect(text(refusal(e))).not.toContain('An API error occurred');
  });

  it('leaves any other error alone', () => {
    expect(explainSlackError(new Error('boom'))).toBeUndefined();
    expect(explainSlackError(refusal('ratelimited'))).toBeUndefined();
    expect(slackError(refusal('is_archived'))).toBe('is_archived');
  });
});
