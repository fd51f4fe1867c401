import { TributaryError } from '../errors.js';
import { registerSecret } from '../log.js';

/**
 * The Slack settings, from the environment only (tokens are secrets): Socket Mode when SLACK_APP_TOKEN
 * is set, the HTTP receiver on PORT otherwise. Every error names the variable and points to docs/slack.md.
 */
export interface SlackSettings {
  mode: 'socket' | 'http';
  botToken: string;
  appToken?: string;
  signingSecret?: string;
  port: number;
  /** Web API base URL (GovSlack, or a local fake Slack API in tests), ending with a slash. */
  apiUrl?: string;
}

const SEE = 'see docs/slack.md, "Connect a workspace"';

function bad(variable: string, reason: string): TributaryError {
  return new TributaryError('config_invalid', `${variable} ${reason} (${SEE})`, { variable });
}

export function loadSlackSettings(env: NodeJS.ProcessEnv = process.env): SlackSettings {
  const botToken = env.SLACK_BOT_TOKEN?.trim();
  if (!botToken) throw bad('SLACK_BOT_TOKEN', 'is not set: it is the Bot User OAuth Token (xoxb-…) of your Slack app');
  if (!/^xoxb-[A-Za-z0-9-]+$/.test(botToken)) throw bad('SLACK_BOT_TOKEN', 'is malformed: a bot token starts with xoxb-');
  registerSecret(botToken);
  const appToken = env.SLACK_APP_TOKEN?.trim();
  const signingSecret = env.SLACK_SIGNING_SECRET?.trim();
  if (signingSecret) registerSecret(signingSecret);
  let apiUrl = env.SLACK_API_URL?.trim();
  if (apiUrl) {
    try {
      const u = new URL(apiUrl);
      if (!/^https?:$/.test(u.protocol)) throw new Error('protocol');
    } catch {
      throw bad('SLACK_API_URL', `is not an http(s) URL: "${apiUrl}"`);
    }
    if (!apiUrl.endsWith('/')) apiUrl += '/';
  }
  const portText = env.PORT?.trim() || '3000';
  const port = Number(portText);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw bad('PORT', `must be a port number (got "${portText}")`);
  if (appToken) {
    if (!/^xapp-[A-Za-z0-9-]+$/.test(appToken)) throw bad('SLACK_APP_TOKEN', 'is malformed: an app-level token starts with xapp- (scope connections:write)');
    registerSecret(appToken);
    return { mode: 'socket', botToken, appToken, port, ...(signingSecret ? { signingSecret } : {}), ...(apiUrl ? { apiUrl } : {}) };
  }
  if (!signingSecret) throw bad('SLACK_SIGNING_SECRET', 'is not set: the HTTP receiver needs the Signing Secret from "Basic Information" (or set SLACK_APP_TOKEN for Socket Mode)');
  return { mode: 'http', botToken, signingSecret, port, ...(apiUrl ? { apiUrl } : {}) };
}
