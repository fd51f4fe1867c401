import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { loadConfig } from '../../src/config/load.js';
import { openDatabase, type Db } from '../../src/db/connect.js';
import { seedDemo } from '../../src/demo/seed.js';
import { consolidate } from '../../src/engine/consolidate/index.js';
import { tagRelease } from '../../src/engine/gate/index.js';
import { createDatabase, dropDatabase, ROOT, TEST_AUDIT_KEY, urlFor } from '../helpers.js';
import { cli, output } from '../process.js';

/**
 * Every `npx tributary …` example in the README's and docs/' shell blocks runs, in order, on the demo's
 * data as `npm run demo -- --review` leaves it (R2 consolidated, its queue open), and succeeds.
 */
let database: string;
let dir: string;
let configFile: string;
let db: Db;

function examples(): { file: string; args: string[] }[] {
  const files = ['README.md', ...fs.readdirSync(path.join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];
  const out: { file: string; args: string[] }[] = [];
  for (const file of files) {
    const text = fs.readFileSync(path.join(ROOT, file), 'utf8');
    const lines = [...text.matchAll(/```sh\n([\s\S]*?)```/g)].flatMap((b) => b[1]!.split('\n'));
    // and the ones inline in the text: `npx tributary status R2`
    lines.push(...[...text.replace(/```[\s\S]*?```/g, '').matchAll(/`(npx tributary [^`]+)`/g)].map((m) => m[1]!));
    for (const line of lines) {
      const m = /^npx tributary (.+?)(\s+#.*)?$/.exec(line.trim());
      if (!m) continue;
      // the shell's words: "quoted words" stay one argument
      const args = [...m[1]!.matchAll(/"([^"]*)"|(\S+)/g)].map((w) => w[1] ?? w[2]!);
      out.push({ file, args });
    }
  }
  return out;
}

beforeAll(async () => {
  database = await createDatabase();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tributary-examples-'));
  const doc = parse(fs.readFileSync(path.join(ROOT, 'tributary.yml'), 'utf8')) as { database: unknown; environments: Record<string, Record<string, unknown>> };
  doc.database = { url: urlFor(database) };
  for (const e of Object.values(doc.environments)) delete e.database;
  configFile = path.join(dir, 'tributary.yml');
  fs.writeFileSync(configFile, stringify(doc));
  const config = loadConfig({ file: configFile, env: { TRIBUTARY_AUDIT_KEY: TEST_AUDIT_KEY } });
  db = await openDatabase(config);
  await seedDemo(config, db);
  await tagRelease({ config, db }, 'R2', { actor: 'cli:demo' });
  await consolidate({ config, db }, 'R2', { actor: 'cli:demo' });
});

afterAll(async () => {
  await db?.close();
  if (database) await dropDatabase(database);
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

it('every tributary example in the README and docs/ runs on the demo data and succeeds', async () => {
  const all = examples();
  expect(all.length).toBeGreaterThanOrEqual(7);
  for (const { file, args } of all) {
    const r = await cli(['--config', configFile, ...args]);
    expect(r.code, `${file}: tributary ${args.join(' ')}\n${output(r)}`).toBe(0);
  }
});
