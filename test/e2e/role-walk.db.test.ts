import type { Command } from 'commander';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { buildProgram, main } from '../../src/cli/main.js';
import { tokenize } from '../../src/commands/grammar.js';
import { commandsOf, TABLE } from '../../src/commands/table.js';
import { consolidate } from '../../src/engine/consolidate/run.js';
import { tagRelease } from '../../src/engine/gate/tag.js';
import type { Bot } from '../../src/slack/app.js';
import { ACTIONS, BLOCKS, COMMANDS, PATTERN_ACTIONS, VIEWS } from '../../src/slack/ids.js';
import { insertAccounts, insertTransactions, insertUsers, TEST_AUDIT_KEY, testEnv, type TestEnv } from '../helpers.js';
import { actionBody, botAndCli, type FakeSlack, signedPost, slashBody, TEST_SIGNING_SECRET, viewSubmissionBody } from '../slack/fake-slack.js';

/**
 * The role walk (issues 16, 17): every command of the table, in both adapters (the CLI, `/release` in
 * Slack), every button and every modal, by an identity that holds no role. Each state-changing one
 * refuses and audits the refusal; each read-only one refuses nothing. Each command runs as its table
 * example (and the variants below, where the role depends on the flags); what it needs is written down
 * here, so a table entry that loses its role fails.
 */
const NOBODY = 'U0NOBODY';

/** What a command needs: a role action of NEEDS (src/engine/kernel/roles.ts), or nothing (read-only). */
type Needs = string | 'read-only';

/** Each table command's role, as issue 16 left them. */
const NEEDS_OF: Record<string, Needs> = {
  status: 'read-only',
  tag: 'tag',
  consolidate: 'consolidate',
  conflicts: 'read-only',
  'conflicts show': 'read-only',
  'conflicts next': 'next',
  review: 'review',
  decide: 'decide',
  result: 'read-only',
  why: 'read-only',
  validate: 'validate',
  waive: 'waive',
  load: 'load',
  test: 'test',
  approve: 'approve',
  promote: 'promote',
  bundle: 'bundle',
  deploy: 'deploy',
  'deploy go': 'go',
  'deploy no-go': 'go',
  'deploy run': 'deploy',
  'deploy status': 'read-only',
  rollback: 'rollback',
  unlock: 'unlock',
  nightly: 'nightly',
  coverage: 'read-only',
  archive: 'archive',
  restore: 'restore',
  audit: 'read-only',
  'audit verify': 'read-only',
  undo: 'decide',
  policy: 'read-only',
  'policy proposals': 'read-only',
  'policy accept': 'policy',
  // issue 23 (transfer packages): CLI only
  export: 'export',
};

/** Invocations besides the examples, where the role depends on the flags. */
const VARIANTS: { words: string; needs: Needs }[] = [
  { words: 'tag --install ST-1', needs: 'install' },
  { words: 'decide C-001 --release R2 --keep 1 --dry-run', needs: 'read-only' },
  { words: 'decide F-001 --release R2 --delete --rationale walk', needs: 'decide' },
  { words: 'bundle R2 --list', needs: 'read-only' },
  { words: 'conflicts R2 --patterns', needs: 'read-only' },
  { words: 'decide --pattern P-1 --release R2 --keep-env ST-1 --rationale walk', needs: 'decide' },
  { words: 'decide --pattern P-1 --release R2 --keep-env ST-1 --dry-run', needs: 'read-only' },
  { words: 'undo PD-1 --dry-run', needs: 'read-only' },
  { words: 'archive --older-than 2y --dry-run', needs: 'read-only' },
  // CLI only: Slack refuses --from (parity test)
  { words: 'load R2 --from /nonexistent/R2-package', needs: 'load' },
  // without --rationale, Slack opens the modal: refused before it opens
  { words: 'approve R2', needs: 'approve' },
  { words: 'rollback R2', needs: 'rollback' },
  { words: 'deploy go 1', needs: 'go' },
];

/**
 * Commands whose boundary is the database, not a role (the identity of --as does not matter there):
 * test/db/least-privilege.db.test.ts proves the app role is refused them.
 */
const DATABASE_BOUNDARY = ['migrate', 'grants'];
/** The shard worker: it runs only shards that an authorized `test` queued. */
const WORKERS = ['agent'];
/** The transfer package's key pair: files on the operator's machine, no config, no database, no role (test/engine/transfer). */
const OPERATOR_FILES = ['keys', 'keys generate'];
const UNWALKED = [...DATABASE_BOUNDARY, ...WORKERS, ...OPERATOR_FILES];

/** The commands of the CLI before the table (git show main:src/cli/*.ts, issue 17): none may be dropped. */
const CLI_BEFORE_THE_TABLE = [
  'status', 'tag', 'consolidate', 'conflicts', 'decide', 'result', 'agent', 'audit', 'audit verify', 'bundle', 'deploy', 'deploy go', 'deploy no-go',
  'deploy run', 'deploy status', 'rollback', 'unlock', 'load', 'why', 'migrate', 'grants', 'nightly', 'coverage', 'archive', 'restore', 'promote', 'test',
  'approve', 'validate', 'waive',
  // issue 22 (review at scale), merged before the table landed
  'undo', 'policy', 'policy proposals', 'policy accept',
];

interface Step {
  words: string;
  needs: Needs;
}

function walkOf(side: 'cli' | 'slack'): Step[] {
  const examples = commandsOf(side)
    .filter((d) => !UNWALKED.includes(d.id))
    .map((d) => ({ words: `${d.id} ${d.example}`.trim(), needs: NEEDS_OF[d.id]! }));
  const variants = VARIANTS.filter((v) => (side === 'slack' ? !/ --from /.test(v.words) : !/^(approve|rollback) R2$|^deploy go 1$/.test(v.words)));
  return [...examples, ...variants];
}

let env: TestEnv;
let fake: FakeSlack;
let bot: Bot;
let url: string;

async function refusals(): Promise<{ action: string; subject: string | null }[]> {
  return env.db.control('audit_events').whereIn('action', ['auth.refused', 'prune.refused']).where({ actor: NOBODY }).orderBy('seq').select('action', 'subject');
}

function commandPaths(cmd: Command, prefix = ''): string[] {
  return cmd.commands.flatMap((c) => {
    const name = `${prefix}${c.name()}`;
    return [name, ...commandPaths(c, `${name} `)];
  });
}

beforeAll(async () => {
  env = await testEnv(3, {
    slack: { reviewChannel: 'C_REVIEW' },
    roles: { reviewer: ['U0REV'], qa_lead: ['U0LEAD'], release_manager: ['U0RM'] },
  });
  await insertUsers(env, 'st1', [{ id: 1, email: 'dana@x', role: 'Administrator', feature: 'FEAT-C' }]);
  await insertUsers(env, 'st2', [{ id: 2, email: 'dana@x', role: 'Customer', feature: 'FEAT-M' }]);
  await insertAccounts(env, 'st1', [{ id: 11, number: 'AC-D1', user_id: 1 }]);
  await insertTransactions(env, 'st1', [{ id: 40, account_id: 999 }]);
  await tagRelease(env.ctx, 'R2', { actor: 'cli:test' });
  await consolidate(env.ctx, 'R2', { actor: 'cli:test' });
  // a weekly pruning proposal of a feature owned by someone else (its buttons are the owner's only)
  await env.db.control('prune_proposals').insert({ feature: 'FEAT-L', release: 'R2', owner: 'U0OWNER', tests: JSON.stringify([{ id: 't1', name: 't1' }]) });
  // the CLI runs in this process: its config comes from --config, its audit key from the environment
  ({ fake, bot, url } = await botAndCli(env.ctx, TEST_AUDIT_KEY));
});

afterAll(async () => {
  await bot?.stop();
  await fake?.stop();
  await env?.close();
});

describe('the CLI, as an identity without a role', () => {
  it('the table holds every command the CLI had, and the program every command of the table', () => {
    const ids = TABLE.map((d) => d.id);
    for (const c of CLI_BEFORE_THE_TABLE) expect(ids, c).toContain(c);
    expect(commandPaths(buildProgram()).sort()).toEqual(commandsOf('cli').map((d) => d.id).sort());
    for (const d of TABLE) if (!UNWALKED.includes(d.id)) expect(NEEDS_OF[d.id], `${d.id}: its role is written down in the walk`).toBeDefined();
  });

  it.each(walkOf('cli').map((s) => [s.words, s] as const))('%s', async (_name, step) => {
    const before = (await refusals()).length;
    process.exitCode = undefined;
    const code = await main(['--config', env.configFile, '--as', NOBODY, ...tokenize(step.words)]);
    process.exitCode = undefined;
    const after = await refusals();
    if (step.needs === 'read-only') {
      expect(after.length, 'a read-only command refused nothing').toBe(before);
      return;
    }
    expect(code).toBe(3);
    expect(after.length).toBe(before + 1);
    expect(after.at(-1)).toEqual({ action: 'auth.refused', subject: step.needs });
  });
});

interface SlackStep {
  name: string;
  send(): string;
  /** What the refusal says (in the ephemeral reply, or in the modal's errors); null: read-only. */
  refusal: RegExp | null;
  /** The view submissions answer in the HTTP response. */
  view?: boolean;
}

const card = { channel: 'C_REVIEW', ts: '1700000000.000100' };
const cardRef = JSON.stringify({ release: 'R2', code: 'C-001', runId: 1 });
const deployRef = JSON.stringify({ id: 1, release: 'R2' });
const patternRef = JSON.stringify({ release: 'R2', pattern: 'P-1', signature: 'users/core-conflict/role/ST-1+ST-2', choice: { keepEnv: 'ST-1' } });
const rationale = (block: string) => ({ [block]: { value: { type: 'plain_text_input', value: 'the role walk' } } });
const slash = (text: string) => () => slashBody(fake, text, NOBODY);
const button = (id: string, value: string) => () => actionBody(fake, NOBODY, id, value, card);
const submit = (callback: string, meta: Record<string, unknown>, block: string) => () => viewSubmissionBody(NOBODY, { callback_id: callback, private_metadata: JSON.stringify(meta) }, rationale(block));

const SLACK_WALK: SlackStep[] = [
  ...walkOf('slack')
    .filter((s) => s.needs !== 'read-only')
    .map((s) => ({ name: `/release ${s.words}`, send: slash(s.words), refusal: new RegExp(`${s.needs} needs the`) })),
  { name: '/rollback R2', send: () => slashBody(fake, 'R2', NOBODY).replace(encodeURIComponent('/release'), encodeURIComponent(COMMANDS.rollback)), refusal: /rollback needs the release_manager role/ },
  { name: 'button review:keep:1', send: button(`${ACTIONS.keepPrefix}1`, JSON.stringify({ release: 'R2', code: 'C-001', runId: 1, version: 1 })), refusal: /decide needs/ },
  ...[ACTIONS.keepBoth, ACTIONS.merge, ACTIONS.delete, ACTIONS.repoint, ACTIONS.waive].map((id) => ({ name: `button ${id}`, send: button(id, cardRef), refusal: /decide needs/ })),
  { name: `button ${ACTIONS.next}`, send: button(ACTIONS.next, JSON.stringify({ release: 'R2' })), refusal: /decide needs/ },
  { name: `button ${ACTIONS.approve}`, send: button(ACTIONS.approve, JSON.stringify({ release: 'R2', runId: 1 })), refusal: /approve needs the qa_lead role/ },
  { name: `button ${ACTIONS.waiveFinding}`, send: button(`${ACTIONS.waiveFinding}:F-001`, JSON.stringify({ release: 'R2', code: 'F-001', runId: 1 })), refusal: /waive needs the qa_lead role/ },
  { name: `button ${ACTIONS.prune}`, send: button(ACTIONS.prune, JSON.stringify({ proposal: 1 })), refusal: /only the owner of FEAT-L/ },
  { name: `button ${ACTIONS.pruneKeep}`, send: button(ACTIONS.pruneKeep, JSON.stringify({ proposal: 1 })), refusal: /only the owner of FEAT-L/ },
  { name: `button ${ACTIONS.deployGo}`, send: button(ACTIONS.deployGo, deployRef), refusal: /go needs the release_manager role/ },
  { name: `button ${ACTIONS.deployNoGo}`, send: button(ACTIONS.deployNoGo, deployRef), refusal: /go needs the release_manager role/ },
  { name: `button ${ACTIONS.deployRollback}`, send: button(ACTIONS.deployRollback, deployRef), refusal: /rollback needs the release_manager role/ },
  { name: `button ${ACTIONS.deployResume}`, send: button(ACTIONS.deployResume, deployRef), refusal: /deploy needs the release_manager role/ },
  { name: `button ${ACTIONS.deployUnlock}`, send: button(ACTIONS.deployUnlock, JSON.stringify({ env: 'production' })), refusal: /unlock needs the release_manager role/ },
  ...[`${PATTERN_ACTIONS.keepEnvPrefix}ST-1`, PATTERN_ACTIONS.keepByRule, PATTERN_ACTIONS.keepBoth, PATTERN_ACTIONS.delete, PATTERN_ACTIONS.waive].map((id) => ({ name: `button ${id}`, send: button(id, patternRef), refusal: /decide needs/ })),
  { name: `button ${PATTERN_ACTIONS.accept}`, send: button(PATTERN_ACTIONS.accept, JSON.stringify({ name: 'keep-st-1-users-role' })), refusal: /policy needs the qa_lead role/ },
  { name: `modal ${VIEWS.decidePattern}`, send: submit(VIEWS.decidePattern, JSON.parse(patternRef) as Record<string, unknown>, BLOCKS.patternRationale), refusal: /decide needs/, view: true },
  { name: `modal ${VIEWS.decideFinding}`, send: submit(VIEWS.decideFinding, { release: 'R2', code: 'F-001', decision: { action: 'delete' } }, BLOCKS.findingRationale), refusal: /decide needs/, view: true },
  { name: `modal ${VIEWS.decide}`, send: submit(VIEWS.decide, { release: 'R2', code: 'C-001', runId: 1, action: 'keep', version: 1 }, BLOCKS.rationale), refusal: /decide needs/, view: true },
  { name: `modal ${VIEWS.approve}`, send: submit(VIEWS.approve, { release: 'R2', runId: 1 }, BLOCKS.approveRationale), refusal: /approve needs the qa_lead role/, view: true },
  { name: `modal ${VIEWS.deployDecide}`, send: submit(VIEWS.deployDecide, { id: 1, release: 'R2', decision: 'go' }, BLOCKS.deployRationale), refusal: /go needs the release_manager role/, view: true },
  { name: `modal ${VIEWS.waiveFinding}`, send: submit(VIEWS.waiveFinding, { release: 'R2', code: 'F-001', runId: 1 }, BLOCKS.waiveRationale), refusal: /waive needs the qa_lead role/, view: true },
  // last: what they post in the background must not be taken for a refused command's post
  ...walkOf('slack')
    .filter((s) => s.needs === 'read-only')
    .map((s) => ({ name: `/release ${s.words}`, send: slash(s.words), refusal: null })),
];

describe('Slack, as a user without a role (signed requests)', () => {
  it('lists every /release sub-command, button and modal', () => {
    const walked = SLACK_WALK.map((s) => s.name);
    for (const id of Object.values(ACTIONS)) expect(walked.some((n) => n.startsWith(`button ${id}`)), id).toBe(true);
    for (const id of Object.values(PATTERN_ACTIONS)) expect(walked.some((n) => n.startsWith(`button ${id}`)), id).toBe(true);
    for (const id of Object.values(VIEWS)) expect(walked, id).toContain(`modal ${id}`);
    for (const c of Object.values(COMMANDS)) expect(walked.some((n) => n.startsWith(c)), c).toBe(true);
  });

  it.each(SLACK_WALK.map((s) => [s.name, s] as const))('%s', async (_name, step) => {
    fake.reset();
    const before = (await refusals()).length;
    const res = await signedPost(url, step.send(), TEST_SIGNING_SECRET);
    expect(res.status).toBe(200);
    const said = () => (step.view ? res.body : JSON.stringify(fake.of('response_url')));
    if (!step.refusal) {
      await vi.waitFor(() => expect(fake.calls.length).toBeGreaterThan(0), { timeout: 20_000 });
      expect((await refusals()).length).toBe(before);
      return;
    }
    await vi.waitFor(async () => expect((await refusals()).length).toBe(before + 1), { timeout: 20_000 });
    await vi.waitFor(() => expect(said()).toMatch(step.refusal!), { timeout: 20_000 });
    expect(fake.of('chat.postMessage'), 'nothing was posted for the refused user').toHaveLength(0);
  });
});
