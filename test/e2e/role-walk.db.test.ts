import type { Command } from 'commander';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { buildProgram, main } from '../../src/cli/main.js';
import { RELEASE_SUBCOMMANDS } from '../../src/commands/release.js';
import { consolidate } from '../../src/engine/consolidate/run.js';
import { tagRelease } from '../../src/engine/gate/tag.js';
import type { Bot } from '../../src/slack/app.js';
import { ACTIONS, BLOCKS, COMMANDS, VIEWS } from '../../src/slack/ids.js';
import { insertAccounts, insertTransactions, insertUsers, TEST_AUDIT_KEY, testEnv, type TestEnv } from '../helpers.js';
import { actionBody, FakeSlack, signedPost, slashBody, startTestBot, TEST_SIGNING_SECRET, viewSubmissionBody } from '../slack/fake-slack.js';

/**
 * The role walk (issue 16): every CLI command, every `/release` sub-command, every button and every
 * modal, by an identity that holds no role. Each state-changing one refuses and audits the refusal;
 * each read-only one refuses nothing. The lists are data: a new command must be added to them (the
 * completeness checks fail otherwise), and the later command table can take them over.
 */
const NOBODY = 'U0NOBODY';

/** What a command needs: a role action of NEEDS (src/engine/kernel/roles.ts), or nothing (read-only). */
type Needs = string | 'read-only';

interface CliStep {
  /** The command's path as commander names it ('deploy go'). */
  command: string;
  argv: string[];
  needs: Needs;
}

const CLI_WALK: CliStep[] = [
  { command: 'status', argv: ['status', 'R2'], needs: 'read-only' },
  { command: 'tag', argv: ['tag', 'R2'], needs: 'tag' },
  { command: 'tag', argv: ['tag', '--install', 'ST-1'], needs: 'install' },
  { command: 'consolidate', argv: ['consolidate', 'R2'], needs: 'consolidate' },
  { command: 'conflicts', argv: ['conflicts', 'R2'], needs: 'read-only' },
  { command: 'conflicts', argv: ['conflicts', 'show', 'R2', 'C-001'], needs: 'read-only' },
  { command: 'conflicts', argv: ['conflicts', 'next', 'R2'], needs: 'next' },
  { command: 'decide', argv: ['decide', 'C-001', '--release', 'R2', '--keep', '1', '--rationale', 'walk'], needs: 'decide' },
  { command: 'decide', argv: ['decide', 'C-001', '--release', 'R2', '--keep', '1', '--dry-run'], needs: 'read-only' },
  { command: 'decide', argv: ['decide', 'F-001', '--release', 'R2', '--delete', '--rationale', 'walk'], needs: 'decide' },
  { command: 'conflicts', argv: ['conflicts', 'R2', '--patterns'], needs: 'read-only' },
  { command: 'decide', argv: ['decide', '--pattern', 'P-1', '--release', 'R2', '--keep-env', 'ST-1', '--rationale', 'walk'], needs: 'decide' },
  { command: 'decide', argv: ['decide', '--pattern', 'P-1', '--release', 'R2', '--keep-env', 'ST-1', '--dry-run'], needs: 'read-only' },
  { command: 'undo', argv: ['undo', 'PD-1', '--rationale', 'walk'], needs: 'decide' },
  { command: 'policy proposals', argv: ['policy', 'proposals'], needs: 'read-only' },
  { command: 'policy accept', argv: ['policy', 'accept', 'keep-st-1-users-role'], needs: 'policy' },
  { command: 'result', argv: ['result', 'R2'], needs: 'read-only' },
  { command: 'why', argv: ['why', 'users', '1', '--release', 'R2'], needs: 'read-only' },
  { command: 'validate', argv: ['validate', 'R2'], needs: 'validate' },
  { command: 'waive', argv: ['waive', 'F-001', '--release', 'R2', '--rationale', 'walk'], needs: 'waive' },
  { command: 'load', argv: ['load', 'R2', '--confirm'], needs: 'load' },
  { command: 'load', argv: ['load', 'R2', '--from', '/nonexistent/R2-package'], needs: 'load' },
  { command: 'export', argv: ['export', 'R2', '--out', '/nonexistent/R2-package'], needs: 'export' },
  { command: 'test', argv: ['test', 'R2', '--tier', '1'], needs: 'test' },
  { command: 'approve', argv: ['approve', 'R2', '--rationale', 'walk'], needs: 'approve' },
  { command: 'promote', argv: ['promote', 'R2'], needs: 'promote' },
  { command: 'bundle', argv: ['bundle', 'R2', '--code', 'v1.2.3'], needs: 'bundle' },
  { command: 'bundle', argv: ['bundle', 'R2', '--list'], needs: 'read-only' },
  { command: 'deploy', argv: ['deploy', 'R2'], needs: 'deploy' },
  { command: 'deploy go', argv: ['deploy', 'go', '1', '--rationale', 'walk'], needs: 'go' },
  { command: 'deploy no-go', argv: ['deploy', 'no-go', '1', '--rationale', 'walk'], needs: 'go' },
  { command: 'deploy run', argv: ['deploy', 'run', '1'], needs: 'deploy' },
  { command: 'deploy status', argv: ['deploy', 'status'], needs: 'read-only' },
  { command: 'rollback', argv: ['rollback', 'R2', '--rationale', 'walk'], needs: 'rollback' },
  { command: 'unlock', argv: ['unlock', 'production'], needs: 'unlock' },
  { command: 'nightly', argv: ['nightly', '--now'], needs: 'nightly' },
  { command: 'coverage', argv: ['coverage'], needs: 'read-only' },
  { command: 'archive', argv: ['archive', '--older-than', '2y', '--yes'], needs: 'archive' },
  { command: 'archive', argv: ['archive', '--older-than', '2y', '--dry-run'], needs: 'read-only' },
  { command: 'restore', argv: ['restore', 'R2'], needs: 'restore' },
  { command: 'audit', argv: ['audit', 'R2'], needs: 'read-only' },
  { command: 'audit verify', argv: ['audit', 'verify', 'R2'], needs: 'read-only' },
];

/**
 * Commands whose boundary is the database, not a role (the identity of --as does not matter there):
 * test/db/least-privilege.db.test.ts proves the app role is refused them.
 */
const DATABASE_BOUNDARY = ['migrate', 'grants'];
/** The shard worker: it runs only shards that an authorized `test` queued. */
const WORKERS = ['agent'];
/** Commands that only group sub-commands (each walked above). */
const GROUPS = ['policy'];
/** The operator's key pair for transfer packages: files on the operator's machine, no database, no role. */
const OPERATOR_FILES = ['keys', 'keys generate'];

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
  fake = new FakeSlack();
  await fake.start();
  ({ bot, url } = await startTestBot(env.ctx, fake));
  // the CLI runs in this process: its config comes from --config, its audit key from the environment
  process.env.TRIBUTARY_AUDIT_KEY = TEST_AUDIT_KEY;
  delete process.env.DATABASE_URL;
  delete process.env.TRIBUTARY_CONFIG;
});

afterAll(async () => {
  await bot?.stop();
  await fake?.stop();
  await env?.close();
});

describe('the CLI, as an identity without a role', () => {
  it('lists every command of the program', () => {
    const walked = new Set([...CLI_WALK.map((s) => s.command), ...DATABASE_BOUNDARY, ...WORKERS, ...GROUPS, ...OPERATOR_FILES]);
    const missing = commandPaths(buildProgram()).filter((c) => !walked.has(c));
    expect(missing, 'commands the role walk does not cover').toEqual([]);
  });

  it.each(CLI_WALK.map((s) => [s.argv.join(' '), s] as const))('%s', async (_name, step) => {
    const before = (await refusals()).length;
    process.exitCode = undefined;
    const code = await main(['--config', env.configFile, '--as', NOBODY, ...step.argv]);
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
const rationale = (block: string) => ({ [block]: { value: { type: 'plain_text_input', value: 'the role walk' } } });
const slash = (text: string) => () => slashBody(fake, text, NOBODY);
const button = (id: string, value: string) => () => actionBody(fake, NOBODY, id, value, card);
const submit = (callback: string, meta: Record<string, unknown>, block: string) => () => viewSubmissionBody(NOBODY, { callback_id: callback, private_metadata: JSON.stringify(meta) }, rationale(block));

/** `/release <sub>` → what it needs; the read-only ones answer without refusing. */
const SUBCOMMANDS: Record<string, string> = {
  status: 'status R2',
  conflicts: 'conflicts R2',
  audit: 'audit R2',
  coverage: 'coverage',
  tag: 'tag R2',
  consolidate: 'consolidate R2',
  review: 'review R2',
  validate: 'validate R2',
  load: 'load R2 --confirm',
  test: 'test R2 --tier 1',
  promote: 'promote R2',
  approve: 'approve R2',
  deploy: 'deploy R2',
  rollback: 'rollback R2',
};
const READ_ONLY = new Set(['status', 'conflicts', 'audit', 'coverage']);

const SLACK_WALK: SlackStep[] = [
  ...Object.entries(SUBCOMMANDS)
    .filter(([sub]) => !READ_ONLY.has(sub))
    .map(([, text]) => ({ name: `/release ${text}`, send: slash(text), refusal: /needs the/ })),
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
  { name: `modal ${VIEWS.decide}`, send: submit(VIEWS.decide, { release: 'R2', code: 'C-001', runId: 1, action: 'keep', version: 1 }, BLOCKS.rationale), refusal: /decide needs/, view: true },
  { name: `modal ${VIEWS.approve}`, send: submit(VIEWS.approve, { release: 'R2', runId: 1 }, BLOCKS.approveRationale), refusal: /approve needs the qa_lead role/, view: true },
  { name: `modal ${VIEWS.deployDecide}`, send: submit(VIEWS.deployDecide, { id: 1, release: 'R2', decision: 'go' }, BLOCKS.deployRationale), refusal: /go needs the release_manager role/, view: true },
  { name: `modal ${VIEWS.waiveFinding}`, send: submit(VIEWS.waiveFinding, { release: 'R2', code: 'F-001', runId: 1 }, BLOCKS.waiveRationale), refusal: /waive needs the qa_lead role/, view: true },
  // last: what they post in the background must not be taken for a refused command's post
  ...[...READ_ONLY].map((sub) => ({ name: `/release ${SUBCOMMANDS[sub]!}`, send: slash(SUBCOMMANDS[sub]!), refusal: null })),
];

describe('Slack, as a user without a role (signed requests)', () => {
  it('lists every /release sub-command, button and modal', () => {
    expect(Object.keys(SUBCOMMANDS).sort()).toEqual([...RELEASE_SUBCOMMANDS].sort());
    const walked = SLACK_WALK.map((s) => s.name);
    for (const id of Object.values(ACTIONS)) expect(walked.some((n) => n.startsWith(`button ${id}`)), id).toBe(true);
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
