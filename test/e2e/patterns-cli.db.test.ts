import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { loadConfig } from '../../src/config/load.js';
import { openDatabase, type Db } from '../../src/db/connect.js';
import { seedDemo } from '../../src/demo/seed.js';
import { createDatabase, dropDatabase, ROOT, TEST_AUDIT_KEY, urlFor } from '../helpers.js';
import { cli, output, type CliResult } from '../process.js';

/**
 * Review at scale on the CLI, as real processes on the demo's data: patterns, a pattern decision (a
 * version number refused), its undo, and the rules proposed from agreeing decisions.
 */
let database: string;
let dir: string;
let configFile: string;
let db: Db;

const run = (...args: string[]) => cli(['--config', configFile, '--as', 'alice', ...args]);
const json = (r: CliResult) => JSON.parse(r.stdout);

beforeAll(async () => {
  database = await createDatabase();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tributary-patterns-'));
  configFile = path.join(dir, 'tributary.yml');
  const doc = parse(fs.readFileSync(path.join(ROOT, 'tributary.yml'), 'utf8')) as { database: unknown; environments: Record<string, Record<string, unknown>> };
  doc.database = { url: urlFor(database) };
  for (const e of Object.values(doc.environments)) delete e.database;
  fs.writeFileSync(configFile, stringify(doc));
  const config = loadConfig({ file: configFile, env: { TRIBUTARY_AUDIT_KEY: TEST_AUDIT_KEY } });
  db = await openDatabase(config);
  await seedDemo(config, db);
  for (const args of [['tag', 'R2'], ['consolidate', 'R2']]) expect((await run(...args)).code, args.join(' ')).toBe(0);
});

afterAll(async () => {
  await db?.close();
  if (database) await dropDatabase(database);
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe('review at scale on the CLI', () => {
  it('lists patterns, decides one at once (a version number refused), and undoes it', async () => {
    const listed = await run('--json', 'conflicts', 'R2', '--patterns');
    expect(listed.code, output(listed)).toBe(0);
    const patterns = json(listed) as { id: string; count: number; signature: string; envs: string[]; sample: { code: string } }[];
    expect(patterns.length).toBeGreaterThan(0);
    expect(patterns.map((p) => p.count)).toEqual([...patterns.map((p) => p.count)].sort((a, b) => b - a));
    const text = await run('conflicts', 'R2', '--patterns');
    expect(text.stdout).toContain(`P-1 `);
    expect(text.stdout).toContain(`e.g. ${patterns[0]!.sample.code}`);

    const p = patterns[0]!;
    const byNumber = await run('decide', '--pattern', 'P-1', '--release', 'R2', '--keep', '1', '--rationale', 'x');
    expect(byNumber.code).toBe(2);
    expect(byNumber.stderr).toContain('--keep names versions by number, which differ from conflict to conflict');

    const dry = await run('--json', 'decide', '--pattern', 'P-1', '--keep-env', p.envs[0]!, '--dry-run');
    expect(dry.code, output(dry)).toBe(0);
    expect(json(dry)).toMatchObject({ applied: false, pattern: { id: 'P-1', signature: p.signature } });
    const decided = await run('--json', 'decide', '--pattern', 'P-1', '--keep-env', p.envs[0]!, '--rationale', 'the first env holds what the tests expect');
    expect(decided.code, output(decided)).toBe(0);
    const out = json(decided) as { code: string; decisions: { code: string }[] };
    expect(out.decisions).toHaveLength(p.count);
    const after = json(await run('--json', 'conflicts', 'R2', '--patterns')) as { signature: string }[];
    expect(after.map((x) => x.signature)).not.toContain(p.signature);

    const undoDry = await run('undo', out.code, '--dry-run');
    expect(undoDry.stdout).toContain(`${out.code} (R2): plan to undo (not applied)`);
    const undone = await run('undo', out.code, '--rationale', 'decided too soon');
    expect(undone.code, output(undone)).toBe(0);
    expect(undone.stdout).toContain(`${out.code} undone (R2): ${out.decisions.map((d) => d.code).join(', ')} open again`);
    const again = json(await run('--json', 'conflicts', 'R2', '--patterns')) as { signature: string; count: number }[];
    expect(again).toEqual(patterns.map((x) => expect.objectContaining({ signature: x.signature, count: x.count })));
  });

  it('says there is no rule to propose until decisions agree', async () => {
    const r = await run('policy', 'proposals');
    expect(r.code, output(r)).toBe(0);
    expect(r.stdout).toContain('No rule to propose');
    const accept = await run('policy', 'accept', 'keep-st-1-users-role');
    expect(accept.code).toBe(2);
    expect(accept.stderr).toContain('no proposal keep-st-1-users-role');
  });
});
