import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, expect, it, vi } from 'vitest';
import { WebSocketServer, type WebSocket } from 'ws';
import { createBot, type Bot } from '../../src/slack/app.js';
import { testEnv, type TestEnv } from '../helpers.js';
import { FakeSlack } from './fake-slack.js';

/** Socket Mode against a local WebSocket server standing in for Slack's. */
let env: TestEnv;
let fake: FakeSlack;
let wss: WebSocketServer;
let bot: Bot;
const socket: { ws?: WebSocket; received: Record<string, unknown>[] } = { received: [] };

beforeAll(async () => {
  fake = new FakeSlack();
  await fake.start();
  wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise<void>((r) => wss.once('listening', () => r()));
  fake.wsUrl = `ws://127.0.0.1:${(wss.address() as AddressInfo).port}/`;
  wss.on('connection', (ws) => {
    socket.ws = ws;
    ws.on('message', (m) => socket.received.push(JSON.parse(String(m)) as Record<string, unknown>));
    ws.send(JSON.stringify({ type: 'hello', num_connections: 1, debug_info: { host: 'local' }, connection_info: { app_id: 'A1' } }));
  });
  env = await testEnv(2);
  bot = createBot(env.ctx, { mode: 'socket', botToken: 'xoxb-test', appToken: 'xapp-test', port: 0, apiUrl: fake.apiUrl() }, { botId: 'BBOT', botUserId: 'UBOT', retries: 0 });
  await bot.start();
});

afterAll(async () => {
  await bot?.stop();
  for (const c of wss.clients) c.terminate();
  await new Promise<void>((r) => wss.close(() => r()));
  await env?.close();
  await fake?.stop();
});

it('connects through apps.connections.open and answers a slash command envelope with its ack payload', async () => {
  expect(fake.of('apps.connections.open')).toHaveLength(1);
  await vi.waitFor(() => expect(socket.ws).toBeDefined(), { timeout: 60_000 });
  socket.ws!.send(
    JSON.stringify({
      envelope_id: 'env-1',
      type: 'slash_commands',
      accepts_response_payload: true,
      payload: { command: '/release', text: 'help', user_id: 'U1', channel_id: 'C1', team_id: 'T1', response_url: fake.responseUrl(), trigger_id: 't' },
    }),
  );
  await vi.waitFor(() => expect(socket.received.find((m) => m.envelope_id === 'env-1')).toBeDefined(), { timeout: 60_000 });
  const ack = socket.received.find((m) => m.envelope_id === 'env-1')!;
  expect((ack.payload as { response_type: string }).response_type).toBe('ephemeral');
  expect(JSON.stringify(ack.payload)).toContain('/release consolidate <release>');
});

it('answers a status request through response_url', async () => {
  socket.ws!.send(
    JSON.stringify({
      envelope_id: 'env-2',
      type: 'slash_commands',
      accepts_response_payload: true,
      payload: { command: '/release', text: 'status R2', user_id: 'U1', channel_id: 'C1', team_id: 'T1', response_url: fake.responseUrl(), trigger_id: 't' },
    }),
  );
  await vi.waitFor(() => expect(fake.of('response_url')).toHaveLength(1), { timeout: 60_000 });
  expect(JSON.stringify(fake.of('response_url')[0]!.blocks)).toContain('*R2*: planned');
});
