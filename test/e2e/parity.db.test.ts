import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { main } from '../../src/cli/main.js';
import { tokenize } from '../../src/commands/grammar.js';
import type { Run } from '../../src/commands/io.js';
import { RUNS } from '../../src/commands/runs.js';
import { BY_ID, commandsOf, usageOf, type CommandDef, type Parsed } from '../../src/commands/table.js';
import { KEEP_BY_RULES } from '../../src/config/schema.js';
import { consolidate } from '../../src/engine/consolidate/run.js';
import { tagRelease } from '../../src/engine/gate/tag.js';
import { TributaryError } from '../../src/errors.js';
import type { Bot } from '../../src/slack/app.js';
import { insertUsers, TEST_AUDIT_KEY, testEnv, type TestEnv } from '../helpers.js';
import { botAndCli, type FakeSlack, signedPost, slashBody, TEST_SIGNING_SECRET } from '../slack/fake-slack.js';

/**
 * Parity (issue 17): every command the table serves in both adapters, walked from the table. The same
 * words reach the same run (src/commands/runs.ts) with the same arguments and flags, for the same
 * identity; its error reaches the user with the same text; a flag neither knows, a typo'd release and
 * help say the same in both. (What a run does, its audit events and the database state after, is then the
 * same by construction: one function.) The runs are replaced by probes that record their invocation and
 * refuse, so nothing changes between the two.
 */
const USER = 'U0ALL';
const BOTH = commandsOf('cli').filter((d) => !d.only);

let env: TestEnv;
let fake: FakeSlack;
let bot: Bot;
let url: string;

interface Call {
  id: string;
  parsed: Parsed;
  user: string;
  actor: string;
}
const calls: Call[] = [];
const originals: Record<string, Run> = { ...RUNS };

/** Each run records how it was called and refuses (a gate), so nothing is done. */
function probeRuns(): void {
  for (const id of Object.keys(RUNS)) {
    RUNS[id] = async (_ctx, parsed, io) => {
      calls.push({ id, parsed: structuredClone(parsed), user: io.user, actor: io.actor });
      throw new TributaryError('gate_state', `probe: ${id} was run`);
    };
  }
}

/** The CLI in this process: exit code, stdout and stderr. */
async function viaCli(words: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const out = vi.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => ((stdout += String(s)), true));
  const err = vi.spyOn(process.stderr, 'write').mockImplementation((s: string | Uint8Array) => ((stderr += String(s)), true));
  try {
    process.exitCode = undefined;
    const code = await main(['--config', env.configFile, '--as', USER, ...words]);
    return { code, stdout, stderr };
  } finally {
    process.exitCode = undefined;
    out.mockRestore();
    err.mockRestore();
  }
}

/** `/release <text>` as Slack sends it: the ack's body (a refusal is in it), then what the bot said anywhere. */
async function viaSlack(text: string): Promise<{ ack: string; said: () => string }> {
  fake.reset();
  const res = await signedPost(url, slashBody(fake, text, USER), TEST_SIGNING_SECRET);
  expect(res.status).toBe(200);
  return { ack: res.body, said: () => JSON.stringify(fake.calls) };
}

const wordsOf = (d: CommandDef) => `${d.id} ${d.example}`.trim();

beforeAll(async () => {
  env = await testEnv(3, { roles: { reviewer: [USER], qa_lead: [USER], release_manager: [USER] } });
  await insertUsers(env, 'st1', [{ id: 1, email: 'dana@x', role: 'Administrator', feature: 'FEAT-C' }]);
  await insertUsers(env, 'st2', [{ id: 2, email: 'dana@x', role: 'Customer', feature: 'FEAT-M' }]);
  await tagRelease(env.ctx, 'R2', { actor: 'cli:test' });
  await consolidate(env.ctx, 'R2', { actor: 'cli:test' });
  // the CLI runs in this process: its config comes from --config, its audit key from the environment
  ({ fake, bot, url } = await botAndCli(env.ctx, TEST_AUDIT_KEY));
});

afterAll(async () => {
  Object.assign(RUNS, originals);
  await bot?.stop();
  await fake?.stop();
  await env?.close();
});

beforeEach(() => {
  calls.length = 0;
});

describe('the same words reach the same run, with the same arguments, and its error says the same', () => {
  beforeAll(probeRuns);
  afterAll(() => Object.assign(RUNS, originals));

  it('covers every command the table serves in both', () => {
    expect(BOTH.map((d) => d.id)).toEqual(commandsOf('slack').filter((d) => !d.only).map((d) => d.id));
    expect(BOTH.length).toBeGreaterThan(25);
    // a choice list the table keeps in step with the engine's
    expect(BY_ID.get('decide')!.flags.find((f) => f.name === 'keep-by-rule')!.choices).toEqual([...KEEP_BY_RULES]);
  });

  it.each(BOTH.map((d) => [wordsOf(d), d] as const))('%s', async (words, def) => {
    const cli = await viaCli(tokenize(words));
    expect(calls.map((c) => c.id)).toEqual([def.id]);
    const fromCli = calls.pop()!;
    expect(cli.code).toBe(3);
    expect(cli.stderr).toBe(`tributary: probe: ${def.id} was run\n`);

    const slack = await viaSlack(words);
    await vi.waitFor(() => expect(calls.map((c) => c.id)).toEqual([def.id]), { timeout: 20_000 });
    const fromSlack = calls.pop()!;
    expect(fromSlack.parsed).toEqual(fromCli.parsed);
    expect(fromSlack.user).toBe(fromCli.user);
    expect(fromCli.actor).toBe(`cli:${USER}`);
    expect(fromSlack.actor).toBe(USER);
    await vi.waitFor(() => expect(slack.said()).toContain(`probe: ${def.id} was run`), { timeout: 20_000 });
  });
});

describe('what is not understood is refused the same way, before anything runs', () => {
  beforeAll(probeRuns);
  afterAll(() => Object.assign(RUNS, originals));

  it.each(BOTH.map((d) => [`${wordsOf(d)} --bogus`, d] as const))('%s', async (words, def) => {
    const cli = await viaCli(tokenize(words));
    expect(cli.code).toBe(2);
    const why = 'unknown flag --bogus. Usage: ';
    expect(cli.stderr).toBe(`tributary: ${why}${usageOf(def, 'cli')}\n`);
    const slack = await viaSlack(words);
    expect(JSON.parse(slack.ack).response_type).toBe('ephemeral');
    expect(JSON.parse(slack.ack).text).toContain(`${why}${usageOf(def, 'slack')}`);
    expect(calls).toEqual([]);
  });

  const withRelease = BOTH.filter((d) => / R2\b/.test(` ${d.example}`));
  it.each(withRelease.map((d) => [wordsOf(d).replace(/\bR2\b/, 'r2'), d] as const))('%s', async (words) => {
    const cli = await viaCli(tokenize(words));
    expect(cli.code).toBe(2);
    expect(cli.stderr).toBe('tributary: unknown release "r2": did you mean R2?\n');
    const slack = await viaSlack(words);
    expect(JSON.parse(slack.ack).text).toContain('unknown release "r2": did you mean R2?');
    expect(calls).toEqual([]);
    // nothing was posted or started in Slack for a typo
    expect(fake.calls.filter((c) => c.method !== 'auth.test')).toEqual([]);
  });

  it('an extra word, and a missing argument', async () => {
    for (const [words, why] of [
      ['validate R2 now', 'unexpected "now". Usage: '],
      ['conflicts show R2', 'missing code. Usage: '],
    ] as const) {
      const def = BOTH.find((d) => words.startsWith(`${d.id} `) && !BOTH.some((o) => o.id.length > d.id.length && words.startsWith(`${o.id} `)))!;
      const cli = await viaCli(tokenize(words));
      expect(cli.stderr).toBe(`tributary: ${why}${usageOf(def, 'cli')}\n`);
      expect(JSON.parse((await viaSlack(words)).ack).text).toContain(`${why}${usageOf(def, 'slack')}`);
    }
    expect(calls).toEqual([]);
  });
});

describe('help comes from the table in both', () => {
  it.each(BOTH.map((d) => [d.id, d] as const))('%s', async (_id, def) => {
    const cli = await viaCli([...def.id.split(' '), '--help']);
    expect(cli.code).toBe(0);
    expect(cli.stdout).toContain(`Usage: ${usageOf(def, 'cli')}`);
    expect(cli.stdout).toContain(`In Slack: ${usageOf(def, 'slack')}`);
    const slack = await viaSlack(`help ${def.id}`);
    const text = JSON.parse(slack.ack).text as string;
    expect(text).toContain(usageOf(def, 'slack'));
    expect(text).toContain(`CLI: \`${usageOf(def, 'cli')}\``);
  });

  it('a one-sided command says why, in help and when asked for on the other side', async () => {
    const cli = await viaCli(['migrate', '--help']);
    expect(cli.stdout).toContain("Only in the CLI: its boundary is the database owner's credentials");
    const slack = JSON.parse((await viaSlack('migrate')).ack).text as string;
    expect(slack).toContain("migrate is CLI only: its boundary is the database owner's credentials");
    const review = await viaCli(['review', 'R2']);
    expect(review.code).toBe(2);
  });

  it('the transfer package is the CLI\'s: export and keys say why in Slack, and load refuses --from with the reason', async () => {
    const exported = JSON.parse((await viaSlack('export R2 --out /srv/transfer/R2')).ack).text as string;
    expect(exported).toContain("export is CLI only: an operator's file operation on the cloud side");
    const keys = JSON.parse((await viaSlack('keys generate --out ./keys')).ack).text as string;
    expect(keys).toContain('keys generate is CLI only: key files on the operator\'s machine');
    const load = JSON.parse((await viaSlack('load R2 --from /srv/transfer/R2')).ack).text as string;
    expect(load).toContain("--from is CLI only: an operator's file operation on premises");
    expect(load).toContain(usageOf(BY_ID.get('load')!, 'slack'));
    expect(calls).toEqual([]);
    expect(fake.calls.filter((c) => c.method !== 'auth.test')).toEqual([]);
    const help = await viaCli(['export', '--help']);
    expect(help.stdout).toContain("Only in the CLI: an operator's file operation on the cloud side");
  });
});

describe('an error of the engine reaches the user with the same text (real runs)', () => {
  it('a mistyped conflict code gets "did you mean …?", in both', async () => {
    const cli = await viaCli(['conflicts', 'show', 'R2', 'C-0001']);
    expect(cli.code).toBe(2);
    expect(cli.stderr).toContain('no conflict C-0001 in release R2\'s current consolidation or open promotion: did you mean C-001?');
    const slack = await viaSlack('conflicts show R2 C-0001');
    await vi.waitFor(() => expect(slack.said()).toContain('did you mean C-001?'), { timeout: 20_000 });
  });

  it.each([
    ['conflicts show R2 C-999'],
    ['decide C-999 --release R2 --keep 1 --rationale "no such conflict"'],
    ['deploy status 99'],
    ['bundle R2'],
  ])('%s', async (words) => {
    const cli = await viaCli(tokenize(words));
    expect(cli.code).toBeGreaterThan(0);
    const message = cli.stderr.replace(/^tributary: /, '').trim();
    expect(message.length).toBeGreaterThan(5);
    const slack = await viaSlack(words);
    await vi.waitFor(() => expect(slack.said()).toContain(JSON.stringify(message).slice(1, -1)), { timeout: 20_000 });
  });
});

describe("without a modal's fields, Slack opens the modal (the flags give them in both)", () => {
  it('/release decide C-001 --release R2 --keep 1: the decision modal, nothing decided', async () => {
    const slack = await viaSlack('decide C-001 --release R2 --keep 1');
    expect(slack.ack).toBe('');
    await vi.waitFor(() => expect(fake.of('views.open')).toHaveLength(1), { timeout: 20_000 });
    const view = fake.of('views.open')[0]!.view as { callback_id: string; private_metadata: string };
    expect(view.callback_id).toBe('review:decide');
    expect(JSON.parse(view.private_metadata)).toMatchObject({ release: 'R2', code: 'C-001', action: 'keep', version: 1 });
    expect((await env.db.control('conflicts').where({ code: 'C-001' }).first()).status).toBe('open');
    // the CLI needs the rationale it cannot ask for
    const cli = await viaCli(['decide', 'C-001', '--release', 'R2', '--keep', '1']);
    expect(cli.code).toBe(2);
  });
});
