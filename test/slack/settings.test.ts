import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { expect, it } from 'vitest';
import { loadSlackSettings } from '../../src/config/slack.js';
import { ROOT } from '../helpers.js';

it('chooses Socket Mode with an app token, HTTP otherwise', () => {
  expect(loadSlackSettings({ SLACK_BOT_TOKEN: 'xoxb-1-2', SLACK_APP_TOKEN: 'xapp-1-2' }).mode).toBe('socket');
  const http = loadSlackSettings({ SLACK_BOT_TOKEN: 'xoxb-1-2', SLACK_SIGNING_SECRET: 's3', PORT: '4000', SLACK_API_URL: 'http://127.0.0.1:9/api' });
  expect([http.mode, http.port, http.apiUrl]).toEqual(['http', 4000, 'http://127.0.0.1:9/api/']);
});

it('names the missing or malformed variable and points to docs/slack.md', () => {
  expect(() => loadSlackSettings({})).toThrow(/SLACK_BOT_TOKEN is not set.*docs\/slack\.md, "Connect a workspace"/);
  expect(() => loadSlackSettings({ SLACK_BOT_TOKEN: 'xoxp-user' })).toThrow(/SLACK_BOT_TOKEN is malformed/);
  expect(() => loadSlackSettings({ SLACK_BOT_TOKEN: 'xoxb-1', SLACK_APP_TOKEN: 'bad' })).toThrow(/SLACK_APP_TOKEN is malformed/);
  expect(() => loadSlackSettings({ SLACK_BOT_TOKEN: 'xoxb-1' })).toThrow(/SLACK_SIGNING_SECRET is not set/);
  expect(() => loadSlackSettings({ SLACK_BOT_TOKEN: 'xoxb-1', SLACK_SIGNING_SECRET: 'x', PORT: 'eighty' })).toThrow(/PORT must be a port number/);
});

it('npm start without tokens exits with the error and never prints a secret', () => {
  const res = spawnSync(process.execPath, [path.join(ROOT, 'dist/src/start.js')], {
    cwd: ROOT,
    env: { PATH: process.env.PATH, SLACK_BOT_TOKEN: 'xoxb-super-secret-token', SLACK_SIGNING_SECRET: '' },
    encoding: 'utf8',
    timeout: 30_000,
  });
  expect(res.status).toBe(2);
  expect(res.stderr).toContain('SLACK_SIGNING_SECRET is not set');
  expect(res.stderr + res.stdout).not.toContain('super-secret');
});
