import { channelLink, composed } from '../views/blocks.js';
import type { Message } from '../views/limits.js';

/** The error code of a refusal by Slack's Web API (`not_in_channel`, `missing_scope`…); undefined for any other error. */
export function slackError(err: unknown): string | undefined {
  const e = err as { code?: string; data?: { error?: unknown } } | undefined;
  return e?.code === 'slack_webapi_platform_error' && typeof e.data?.error === 'string' ? e.data.error : undefined;
}

/**
 * Slack's refusals a person can fix, said as what to do and where (the channel linked); undefined for any
 * other error. `channel`: where the bot was posting, when the caller knows it.
 */
export function explainSlackError(err: unknown, channel?: string): Message | undefined {
  const code = slackError(err);
  const where = channel ? channelLink(channel) : 'that channel';
  switch (code) {
    case 'not_in_channel':
    case 'channel_not_found':
      return composed`:x: The bot is not in ${where}: type /invite @tributary there, then try again.`;
    case 'is_archived':
      return composed`:x: ${where} is archived: unarchive it, or have whoever runs the bot point slack.reviewChannel / slack.releaseChannel in the config at a live channel.`;
    case 'missing_scope': {
      const needed = (err as { data?: { needed?: unknown } }).data?.needed;
      const scope = typeof needed === 'string' && needed ? `the ${needed} scope` : 'a scope it needs (the manifest lists them)';
      return composed`:x: The Slack app lacks ${scope}: whoever runs the bot adds it to the app (OAuth & Permissions, or the manifest) and reinstalls it, then try again.`;
    }
    case 'message_not_found':
      return composed`:x: The message to update was deleted in Slack: run the command again to post a new one.`;
    default:
      return undefined;
  }
}
