import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../../src/config/load.js';
import { openDatabase } from '../../../src/db/connect.js';
import { eventHash, recordAudit } from '../../../src/engine/kernel/audit.js';
import { verifyChain } from '../../../src/engine/report/auditTrail.js';
import { TEST_AUDIT_KEY, testEnv, type TestEnv } from '../../helpers.js';
import { cli, output } from '../../process.js';

/**
 * One test per way of tampering with the audit trail (issue 16): whoever can write the table (here the
 * owner, who can switch the append-only trigger off) cannot change it unnoticed without the key.
 */
let env: TestEnv;

interface Row {
  id: number;
  seq: number | null;
  at: string;
  actor: string;
  action: string;
  release: string | null;
  subject: string | null;
  details: unknown;
  prev_hash: string | null;
  hash: string | null;
}

const AT = `to_char(at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;

async function chain(): Promise<Row[]> {
  return (await env.sql(`select id, seq, ${AT} as at, actor, action, release, subject, details, prev_hash, hash from audit_events order by seq`)).rows;
}

/** The owner switches the append-only trigger off, changes rows, and switches it on again. */
async function tamper(...statements: string[]): Promise<void> {
  await env.sql('alter table audit_events disable trigger user');
  try {
    for (const s of statements) await env.sql(s);
  } finally {
    await env.sql('alter table audit_events enable trigger user');
  }
}

async function broken() {
  const report = await verifyChain(env.db.control);
  expect(report.intact).toBe(false);
  return report.broken!;
}

beforeEach(async () => {
  env = await testEnv(1);
  for (const [i, action] of ['tag.lock', 'consolidate.finish', 'decision', 'validate.finish', 'load.finish'].entries()) {
    await recordAudit(env.db.control, { actor: `U_${i}`, action, release: 'R2', subject: `s${i}`, details: { n: i } });
  }
  expect(await verifyChain(env.db.control)).toMatchObject({ intact: true, events: 5 });
});
afterEach(async () => {
  await env?.close();
});

describe('audit verify detects each kind of tampering', () => {
  it.each([
    ['payload', `details = '{"n": 99}'`],
    ['actor', `actor = 'U_SOMEONE_ELSE'`],
    ['time', `at = at - interval '1 hour'`],
    ['release', `release = 'R1'`],
  ])('an event whose %s was altered', async (_what, set) => {
    const third = (await chain())[2]!;
    await tamper(`update audit_events set ${set} where id = ${third.id}`);
    expect(await broken()).toMatchObject({ kind: 'altered', seq: 3, id: third.id });
  });

  it('an event deleted', async () => {
    await tamper(`delete from audit_events where seq = 2`);
    expect(await broken()).toMatchObject({ kind: 'missing', seq: 2 });
  });

  it('two events swapped: their ids, or their positions', async () => {
    const [, b, , d] = await chain();
    await tamper(`update audit_events set id = -1 where id = ${b!.id}`, `update audit_events set id = ${b!.id} where id = ${d!.id}`, `update audit_events set id = ${d!.id} where id = -1`);
    expect(await broken()).toMatchObject({ kind: 'reordered' });
    await tamper(`update audit_events set id = -1 where id = ${d!.id}`, `update audit_events set id = ${d!.id} where id = ${b!.id}`, `update audit_events set id = ${b!.id} where id = -1`);
    expect((await verifyChain(env.db.control)).intact).toBe(true);
    await tamper(`update audit_events set seq = -1 where id = ${b!.id}`, `update audit_events set seq = 2 where id = ${d!.id}`, `update audit_events set seq = 4 where id = ${b!.id}`);
    expect((await broken()).kind).toMatch(/reordered|unlinked|altered/);
  });

  it('an event deleted and the rest renumbered to close the gap', async () => {
    await tamper(`delete from audit_events where seq = 2`, `update audit_events set seq = seq - 1 where seq > 2`);
    // the renumbered event links to a hash that is gone
    expect(await broken()).toMatchObject({ kind: 'unlinked', seq: 2 });
  });

  it('an event unchained in the middle (its seq and hash removed)', async () => {
    await tamper(`update audit_events set seq = null, hash = null where seq = 3`);
    expect(await broken()).toMatchObject({ kind: 'missing', seq: 3 });
  });

  it('an event unchained at the end', async () => {
    const last = (await chain())[4]!;
    await tamper(`update audit_events set seq = null, hash = null where id = ${last.id}`);
    expect(await broken()).toMatchObject({ kind: 'unchained', id: last.id });
  });

  it('a forged event appended (hash computed without the key)', async () => {
    const head = (await chain())[4]!;
    const forged = { seq: 6, at: head.at, actor: 'U_FORGER', action: 'approve', release: 'R2', subject: null, details: {}, prevHash: head.hash };
    const hash = eventHash('a-guessed-key-0123456789', forged);
    await env.sql(`insert into audit_events (seq, at, actor, action, release, details, prev_hash, hash) values (6, $1, 'U_FORGER', 'approve', 'R2', '{}', $2, $3)`, [head.at, head.hash, hash]);
    expect(await broken()).toMatchObject({ kind: 'altered', seq: 6 });
  });

  it.each([[0], [-5], [1_000_000]])('a forged event outside the chain (NULL seq, id %i)', async (id) => {
    await env.sql(`insert into audit_events (id, at, actor, action, release, details) values ($1, now(), 'U_FORGER', 'approve', 'R2', '{}')`, [id]);
    expect(await broken()).toMatchObject({ kind: 'unchained', id });
    // the CLI says so too, with --head as without it
    const head = (await chain()).filter((r) => r.seq !== null).pop()!;
    const r = await cli(['--config', env.configFile, 'audit', 'verify', '--head', head.hash!]);
    expect(r.code, output(r)).toBe(3);
    expect(r.stdout).toContain(`event id ${id}`);
  });

  it('the newest events removed: caught with --head, and said to be unchecked without it', async () => {
    const head = (await chain())[4]!;
    await tamper(`delete from audit_events where seq >= 4`);
    expect((await verifyChain(env.db.control, { head: head.hash! })).broken).toMatchObject({ kind: 'witness' });
    const plain = await cli(['--config', env.configFile, 'audit', 'verify']);
    expect(plain.code, output(plain)).toBe(0);
    expect(plain.stdout).toContain('not checked: the removal of the newest events');
    const witnessed = await cli(['--config', env.configFile, 'audit', 'verify', '--head', head.hash!]);
    expect(witnessed.code, output(witnessed)).toBe(3);
  });
});

describe('the audit key', () => {
  it('a process with another TRIBUTARY_AUDIT_KEY is refused before it writes anything', async () => {
    const config = loadConfig({ file: env.configFile, env: { TRIBUTARY_AUDIT_KEY: `${TEST_AUDIT_KEY}-other` } });
    const other = await openDatabase(config);
    try {
      await expect(recordAudit(other.control, { actor: 'U_X', action: 'note' })).rejects.toThrow(/TRIBUTARY_AUDIT_KEY does not match the audit chain/);
    } finally {
      await other.close();
    }
    expect((await chain()).length).toBe(5);
    expect(await verifyChain(env.db.control)).toMatchObject({ intact: true, events: 5 });

    // the CLI the same way: a state-changing command exits 2 naming the variable, the chain unchanged
    const r = await cli(['--config', env.configFile, 'tag', 'R2'], { env: { TRIBUTARY_AUDIT_KEY: `${TEST_AUDIT_KEY}-other` } });
    expect(r.code, output(r)).toBe(2);
    expect(r.stderr).toContain('TRIBUTARY_AUDIT_KEY does not match');
    expect((await chain()).length).toBe(5);
  });

  it('events recorded as predating the chain are not flagged; one more is', async () => {
    // an install whose events predate the chain: the origin recorded them (ids 1–5 here, simulated)
    await env.sql(`alter table audit_chain_origin disable trigger user`);
    await env.sql(`update audit_chain_origin set unchained_events = 1, unchained_min_id = -10, unchained_max_id = -10`);
    await env.sql(`alter table audit_chain_origin enable trigger user`);
    await env.sql(`insert into audit_events (id, at, actor, action, details) values (-10, now(), 'old', 'old', '{}')`);
    expect(await verifyChain(env.db.control)).toMatchObject({ intact: true, unchained: 1 });
    await env.sql(`insert into audit_events (id, at, actor, action, details) values (-11, now(), 'old', 'old', '{}')`);
    expect(await broken()).toMatchObject({ kind: 'unchained', id: -11 });
  });
});
