import fs from 'node:fs';
import path from 'node:path';
import { expect, it } from 'vitest';
import { parse } from 'yaml';
import * as ids from '../../src/slack/ids.js';
import { ROOT } from '../helpers.js';

/** manifest.yml is hand-kept: it must list exactly what the code registers (the Slack listeners, src/slack). */
const manifest = parse(fs.readFileSync(path.join(ROOT, 'manifest.yml'), 'utf8'));
const sources = fs
  .readdirSync(path.join(ROOT, 'src/slack'))
  .map((f) => fs.readFileSync(path.join(ROOT, 'src/slack', f), 'utf8'))
  .join('\n');

function registered(kind: 'command' | 'event'): string[] {
  const table = (kind === 'command' ? ids.COMMANDS : ids.EVENTS) as Record<string, string>;
  const re = new RegExp(`app\\.${kind}\\((?:\\w+\\.)?(\\w+)\\.(\\w+)`, 'g');
  return [...sources.matchAll(re)].map((m) => {
    const value = table[m[2]!];
    if (!value) throw new Error(`app.${kind}(${m[1]}.${m[2]}) does not use the ids module`);
    return value;
  });
}

it('lists every slash command the code registers, and no other', () => {
  const inManifest = (manifest.features.slash_commands as { command: string }[]).map((c) => c.command).sort();
  expect(inManifest).toEqual([...new Set(registered('command'))].sort());
  expect(inManifest).toEqual(Object.values(ids.COMMANDS).sort());
});

it('subscribes to every event the code handles, and no other', () => {
  expect([...manifest.settings.event_subscriptions.bot_events].sort()).toEqual([...new Set(registered('event'))].sort());
});

it('enables interactivity exactly when the code handles actions or views, and App Home when it publishes one', () => {
  const interactive = /app\.(action|view)\(/.test(sources);
  expect(manifest.settings.interactivity.is_enabled).toBe(interactive);
  expect(manifest.features.app_home.home_tab_enabled).toBe(registered('event').includes('app_home_opened'));
  expect(manifest.settings.socket_mode_enabled).toBe(true);
});

it('names an options load URL exactly when the code answers external selects (block_suggestion)', () => {
  const answers = /app\.options[<(]/.test(sources);
  expect(answers).toBe(true);
  const url = manifest.settings.interactivity.message_menu_options_url as string | undefined;
  expect(url).toMatch(/^https:\/\/[^/]+\/slack\/events$/);
  // every external select a view builds is answered by a registered options listener
  for (const id of Object.values(ids.OPTIONS)) expect(sources).toMatch(new RegExp(`app\\.options[^\\n]*OPTIONS\\.${Object.entries(ids.OPTIONS).find(([, v]) => v === id)![0]}`));
});

it('asks for the least bot scopes the code uses', () => {
  expect([...manifest.oauth_config.scopes.bot].sort()).toEqual(['chat:write', 'commands', 'files:write', 'usergroups:read']);
  const src = fs.readFileSync(path.join(ROOT, 'src/slack/app.ts'), 'utf8') + sources + fs.readFileSync(path.join(ROOT, 'src/slack/cards.ts'), 'utf8');
  expect(src).toContain('usergroups.users.list');
  expect(src).toContain('chat.postMessage');
  expect(src).toContain('files.uploadV2');
});
