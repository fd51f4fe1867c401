import crypto from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A local stand-in for Slack's Web API (and response_url endpoints), for tests and benchmarks only:
 * it records every call with its arguments (blocks and views JSON-decoded) and answers like Slack.
 */
export interface Call {
  method: string;
  args: Record<string, unknown>;
  /** A response_url's person (the user the request that carried it came from), when the URL names one. */
  to?: string;
  /** The Slack error the fake answered with (see `failures`). */
  failed?: string;
}

export class FakeSlack {
  readonly calls: Call[] = [];
  /** The ts each chat.postMessage call was answered with. */
  readonly postedTs = new Map<Call, string>();
  private server?: http.Server;
  private ts = 1_700_000_000;
  /** Methods made to fail with the given Slack error (e.g. chat.postMessage → not_in_channel). */
  readonly failures = new Map<string, string>();
  wsUrl?: string;
  groups: Record<string, string[]> = {};
  url = '';

  async start(): Promise<void> {
    this.server = http.createServer((req, res) => {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => this.handle(req, body, res));
    });
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/`;
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }

  apiUrl(): string {
    return `${this.url}api/`;
  }

  /** A response_url; given the person whose request carries it, the calls to it say who sees them. */
  responseUrl(user?: string): string {
    return `${this.url}respond/${user ? `${user}/` : ''}${crypto.randomBytes(4).toString('hex')}`;
  }

  of(method: string): Record<string, unknown>[] {
    return this.calls.filter((c) => c.method === method).map((c) => c.args);
  }

  reset(): void {
    this.calls.length = 0;
    this.postedTs.clear();
  }

  private handle(req: http.IncomingMessage, body: string, res: http.ServerResponse): void {
    const path = (req.url ?? '').split('?')[0]!;
    let args: Record<string, unknown> = {};
    if ((req.headers['content-type'] ?? '').includes('json')) args = body ? (JSON.parse(body) as Record<string, unknown>) : {};
    else for (const [k, v] of new URLSearchParams(body)) args[k] = v;
    for (const k of ['blocks', 'view', 'attachments']) {
      if (typeof args[k] === 'string') {
        try {
          args[k] = JSON.parse(args[k] as string);
        } catch {
          // keep as is
        }
      }
    }
    const method = path.startsWith('/respond/') ? 'response_url' : path.startsWith('/upload/') ? 'file_upload' : path.replace(/^\/api\//, '');
    if (method === 'file_upload') args = { bytes: body.length, body };
    const to = method === 'response_url' ? /^\/respond\/([A-Z0-9]+)\//.exec(path)?.[1] : undefined;
    const call: Call = { method, args, ...(to ? { to } : {}) };
    this.calls.push(call);
    const send = (o: unknown) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(o));
    };
    const failure = this.failures.get(method);
    if (failure) {
      call.failed = failure;
      return send({ ok: false, error: failure });
    }
    switch (method) {
      case 'response_url':
        return send({ ok: true });
      case 'chat.postMessage':
        this.ts += 1;
        this.postedTs.set(call, `${this.ts}.000100`);
        return send({ ok: true, channel: args.channel, ts: `${this.ts}.000100`, message: {} });
      case 'chat.update':
        return send({ ok: true, channel: args.channel, ts: args.ts });
      case 'views.open':
      case 'views.publish':
        return send({ ok: true, view: { id: `V${this.ts++}` } });
      case 'file_upload':
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.end(`OK - ${body.length}`);
        return;
      case 'files.getUploadURLExternal':
        return send({ ok: true, upload_url: `${this.url}upload/F${this.ts}`, file_id: `F${this.ts++}` });
      case 'files.completeUploadExternal':
        return send({ ok: true, files: [{ id: 'F1', title: args.files }] });
      case 'usergroups.users.list':
        return send({ ok: true, users: this.groups[String(args.usergroup)] ?? [] });
      case 'apps.connections.open':
        return send({ ok: true, url: this.wsUrl });
      case 'auth.test':
        return send({ ok: true, user_id: 'UBOT', bot_id: 'BBOT', team_id: 'T1', user: 'tributary' });
      default:
        return send({ ok: true });
    }
  }
}

/** Sends a request the way Slack does: signed with the signing secret over the raw body. */
export async function signedPost(
  url: string,
  body: string,
  secret: string,
  opts: { contentType?: string; timestamp?: number; signature?: string; headers?: Record<string, string> } = {},
): Promise<{ status: number; body: string; ms: number }> {
  const ts = opts.timestamp ?? Math.floor(Date.now() / 1000);
  const sig = opts.signature ?? `v0=${crypto.createHmac('sha256', secret).update(`v0:${ts}:${body}`).digest('hex')}`;
  const t0 = performance.now();
  const res = await fetch(url, {
    method: 'POST',
    headers: {
      'content-type': opts.contentType ?? 'application/x-www-form-urlencoded',
      'x-slack-request-timestamp': String(ts),
      'x-slack-signature': sig,
      ...(opts.headers ?? {}),
    },
    body,
  });
  const text = await res.text();
  return { status: res.status, body: text, ms: performance.now() - t0 };
}

export function slashBody(fake: FakeSlack, text: string, user = 'U0LEAD', channel = 'C_OPS'): string {
  return new URLSearchParams({
    token: 'x',
    team_id: 'T1',
    team_domain: 'acme',
    channel_id: channel,
    channel_name: 'ops',
    user_id: user,
    user_name: user.toLowerCase(),
    command: '/release',
    text,
    api_app_id: 'A1',
    response_url: fake.responseUrl(user),
    trigger_id: `trig-${user}-${Date.now()}`,
  }).toString();
}

/** A block_suggestion request as Slack sends it when an external select of a modal opens or the person types. */
export function suggestionBody(user: string, view: { callback_id?: string; private_metadata?: string }, blockId: string, actionId: string, value: string): string {
  const payload = {
    type: 'block_suggestion',
    user: { id: user, name: user.toLowerCase(), team_id: 'T1' },
    team: { id: 'T1', domain: 'acme' },
    api_app_id: 'A1',
    token: 'x',
    container: { type: 'view', view_id: 'V1' },
    action_id: actionId,
    block_id: blockId,
    value,
    view: { id: 'V1', type: 'modal', callback_id: view.callback_id, private_metadata: view.private_metadata, state: { values: {} }, hash: 'h' },
  };
  return new URLSearchParams({ payload: JSON.stringify(payload) }).toString();
}

export function actionBody(fake: FakeSlack, user: string, actionId: string, value: string, message: { channel: string; ts: string }): string {
  const payload = {
    type: 'block_actions',
    team: { id: 'T1', domain: 'acme' },
    user: { id: user, username: user.toLowerCase(), team_id: 'T1' },
    api_app_id: 'A1',
    token: 'x',
    trigger_id: `trig-${user}-${crypto.randomBytes(3).toString('hex')}`,
    response_url: fake.responseUrl(user),
    container: { type: 'message', channel_id: message.channel, message_ts: message.ts, is_ephemeral: false },
    channel: { id: message.channel, name: 'review' },
    message: { ts: message.ts, text: '' },
    actions: [{ action_id: actionId, block_id: 'b', value, type: 'button', action_ts: String(Date.now() / 1000) }],
  };
  return new URLSearchParams({ payload: JSON.stringify(payload) }).toString();
}

export function viewSubmissionBody(user: string, view: { private_metadata: string; callback_id: string }, values: Record<string, Record<string, unknown>>): string {
  const payload = {
    type: 'view_submission',
    team: { id: 'T1', domain: 'acme' },
    user: { id: user, username: user.toLowerCase(), team_id: 'T1' },
    api_app_id: 'A1',
    token: 'x',
    trigger_id: 'trig-submit',
    view: { id: 'V1', type: 'modal', team_id: 'T1', callback_id: view.callback_id, private_metadata: view.private_metadata, state: { values }, hash: 'h' },
  };
  return new URLSearchParams({ payload: JSON.stringify(payload) }).toString();
}

/** The signing secret of the test bots. */
export const TEST_SIGNING_SECRET = 'test-signing-secret';

/**
 * A bot on the real HTTP receiver (a loopback port), talking to the fake Web API: fast progress and card
 * pacing, no retries, no auth.test. Returns the bot and the URL Slack would post to.
 */
export async function startTestBot(
  ctx: import('../../src/engine/kernel/context.js').Ctx,
  fake: FakeSlack,
  opts: import('../../src/slack/app.js').BotOptions = {},
): Promise<{ bot: import('../../src/slack/app.js').Bot; url: string }> {
  const { createBot } = await import('../../src/slack/app.js');
  const bot = createBot(ctx, { mode: 'http', botToken: 'xoxb-test-token', signingSecret: TEST_SIGNING_SECRET, port: 0, apiUrl: fake.apiUrl() }, {
    botId: 'BBOT',
    botUserId: 'UBOT',
    retries: 0,
    progressIntervalMs: 20,
    cardIntervalMs: 5,
    statusTtlMs: 0,
    // tests that follow the audit trail for card updates turn it on (and call deps.cards.catchUp())
    cardFollowMs: 0,
    ...opts,
  });
  const { port } = await bot.start();
  return { bot, url: `http://127.0.0.1:${port}/slack/events` };
}

/**
 * A fake Slack with the bot on it, and this process ready to run the CLI in it (`main([...])`): its
 * config comes from --config, its audit key from the environment. For tests that send the same
 * command through both adapters.
 */
export async function botAndCli(ctx: import('../../src/engine/kernel/context.js').Ctx, auditKey: string): Promise<{ fake: FakeSlack; bot: import('../../src/slack/app.js').Bot; url: string }> {
  const fake = new FakeSlack();
  await fake.start();
  const { bot, url } = await startTestBot(ctx, fake);
  process.env.TRIBUTARY_AUDIT_KEY = auditKey;
  delete process.env.DATABASE_URL;
  delete process.env.TRIBUTARY_CONFIG;
  return { fake, bot, url };
}
