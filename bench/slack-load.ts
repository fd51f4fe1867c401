/**
 * The load generator of bench:slack, in its own process so that its timing is not the bot's event
 * loop: sends signed interactions, C at a time, and prints one JSON line per request
 * ({ at: epoch ms when sent, ms: latency until the ack, status }). With the argument `fake` it serves
 * the local fake Slack Web API instead and prints its URL.
 */
import crypto from 'node:crypto';
import { actionBody, FakeSlack, signedPost, slashBody } from '../test/slack/fake-slack.js';

if (process.argv[2] === 'fake') {
  // the stand-in for Slack's Web API runs in its own process too: in production Slack is not in the bot's process
  const server = new FakeSlack();
  await server.start();
  process.stdout.write(`${server.url}\n`);
  process.on('SIGTERM', () => void server.stop().then(() => process.exit(0)));
  await new Promise(() => undefined);
}

const [endpoint, secret, fakeUrl, total, concurrency, release] = process.argv.slice(2);
if (!endpoint || !secret || !fakeUrl || !total || !concurrency || !release) throw new Error('usage: slack-load <endpoint> <secret> <fakeUrl> <total> <concurrency> <release>');
const fake = Object.assign(new FakeSlack(), { url: fakeUrl });

const kinds = [
  () => signedPost(endpoint, slashBody(fake, 'help', 'U0BENCH'), secret),
  () => signedPost(endpoint, slashBody(fake, `status ${release}`, 'U0BENCH'), secret),
  () => signedPost(endpoint, actionBody(fake, 'U0BENCH', 'review:next', JSON.stringify({ release }), { channel: 'C1', ts: '1.1' }), secret),
  () =>
    signedPost(
      endpoint,
      JSON.stringify({ type: 'event_callback', team_id: 'T1', api_app_id: 'A1', event_id: `Ev${crypto.randomBytes(4).toString('hex')}`, event: { type: 'app_home_opened', user: 'U0BENCH', tab: 'home', event_ts: '1.1' } }),
      secret,
      { contentType: 'application/json' },
    ),
];

// open every connection first (a first request pays for its TCP connection): not measured
await Promise.all(Array.from({ length: Number(concurrency) }, () => kinds[0]!()));

let next = 0;
const lines: string[] = [];
async function worker(): Promise<void> {
  while (next < Number(total)) {
    const i = next++;
    const at = Date.now();
    try {
      const res = await kinds[i % kinds.length]!();
      lines.push(JSON.stringify({ at, ms: res.ms, status: res.status }));
    } catch {
      lines.push(JSON.stringify({ at, ms: -1, status: 0 }));
    }
  }
}

await Promise.all(Array.from({ length: Number(concurrency) }, worker));
process.stdout.write(`${lines.join('\n')}\n`);
