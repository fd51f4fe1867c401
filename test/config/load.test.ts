import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { loadConfig } from '../../src/config/load.js';
import { DEFAULT_RULES } from '../../src/config/schema.js';
import { TributaryError } from '../../src/errors.js';
import { redact } from '../../src/log.js';

/** A valid config document; each test breaks one thing in a fresh copy (untyped, as YAML would be). */
function baseDoc() {
  return JSON.parse(JSON.stringify(BASE));
}

const BASE = {
  database: { url: 'postgres://postgres@127.0.0.1:5432/tributary' },
  releases: {
    R2: {
      features: {
        'FEAT-C': { priority: 'critical', owner: 'alice' },
        'FEAT-M': { priority: 'medium', owner: 'dan' },
      },
    },
  },
  environments: {
    'ST-1': { role: 'source', precedence: 1, schema: 'st1' },
    'ST-2': { role: 'source', precedence: 2, schema: 'st2' },
    master: { role: 'master', schema: 'master' },
  },
  dataset: {
    entities: {
      users: { primaryKey: 'id', naturalKeys: ['email'] },
      accounts: { primaryKey: 'id', references: [{ column: 'user_id', entity: 'users' }] },
    },
  },
};

let dir: string;
let n = 0;

function write(doc: unknown, name = `c${++n}.yml`): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, typeof doc === 'string' ? doc : stringify(doc));
  return file;
}

function loadError(file: string, env: NodeJS.ProcessEnv = {}): TributaryError {
  try {
    loadConfig({ file, env });
  } catch (err) {
    expect(err).toBeInstanceOf(TributaryError);
    return err as TributaryError;
  }
  throw new Error(`${file} loaded, but an error was expected`);
}

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tributary-config-'));
});

afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('config validation', () => {
  it('names the file and the path of a value of the wrong type', () => {
    const doc = baseDoc();
    doc.releases.R2.features['FEAT-C'].priority = 'urgent';
    const file = write(doc);
    const err = loadError(file);
    expect(err.code).toBe('config_invalid');
    expect(err.message).toContain(file);
    expect(err.message).toContain('releases.R2.features.FEAT-C.priority');
    expect(err.details).toMatchObject({ file, path: 'releases.R2.features.FEAT-C.priority' });

    const doc2 = baseDoc();
    doc2.environments['ST-2'].precedence = 'two';
    const err2 = loadError(write(doc2));
    expect(err2.code).toBe('config_invalid');
    expect(err2.message).toContain('environments.ST-2.precedence');

    const doc3 = baseDoc();
    doc3.dataset.entities.users.naturalKeys = ['email; drop table users'];
    const err3 = loadError(write(doc3));
    expect(err3.message).toContain('dataset.entities.users.naturalKeys[0]');
    expect(err3.message).toContain('plain SQL identifier');
  });

  it('lists the valid rule names for an unknown policy rule, and names LOG_LEVEL when it is not a level', () => {
    const doc = baseDoc();
    doc.policy = { rules: ['exact-duplicate', 'newest-win'] };
    const err = loadError(write(doc));
    expect(err.code).toBe('config_invalid');
    expect(err.message).toContain('policy.rules[1]: unknown rule "newest-win"; the rules are exact-duplicate, newest-wins, complementary-merge');
    const doc2 = baseDoc();
    doc2.policy = { rules: [{ rule: 'newest', enabled: false }] };
    expect(loadError(write(doc2)).message).toContain('policy.rules[0]: unknown rule "newest"; the rules are exact-duplicate');

    const level = loadError(write(baseDoc()), { LOG_LEVEL: 'bogus' });
    expect(level.code).toBe('config_invalid');
    expect(level.message).toBe('environment variable LOG_LEVEL: "bogus" is not a log level; use one of fatal, error, warn, info, debug, trace, silent');
    expect(loadConfig({ file: write(baseDoc()), env: { LOG_LEVEL: 'debug' } }).logLevel).toBe('debug');
  });

  it('names an unknown key', () => {
    const doc = baseDoc();
    doc.environments['ST-1'].precednce = 1;
    const err = loadError(write(doc));
    expect(err.code).toBe('config_invalid');
    expect(err.message).toContain('environments.ST-1');
    expect(err.message).toContain('precednce');
  });

  it('names a missing ${VAR} and where it is used', () => {
    const doc = baseDoc();
    doc.environments['ST-9'] = { role: 'source', precedence: 9, url: '${ST9_DATABASE_URL}', schema: 'st9' };
    const file = write(doc);
    const err = loadError(file, { OTHER: 'x' });
    expect(err.code).toBe('config_invalid');
    expect(err.message).toContain(file);
    expect(err.message).toContain('ST9_DATABASE_URL');
    expect(err.message).toContain('environments.ST-9.url');

    // an empty variable counts as missing
    expect(loadError(file, { ST9_DATABASE_URL: '' }).message).toContain('ST9_DATABASE_URL');
  });

  it('substitutes ${VAR} and ${VAR:-default}, and registers secrets so they are masked', () => {
    const doc = baseDoc();
    doc.environments['ST-9'] = { role: 'source', precedence: 9, url: '${ST9_DATABASE_URL}', schema: '${ST9_SCHEMA:-st9}' };
    const url = 'postgres://qa:Sup3rS3cret-Cfg@db.example:5432/st9';
    const config = loadConfig({ file: write(doc), env: { ST9_DATABASE_URL: url } });
    const st9 = config.envs.get('ST-9')!;
    expect(st9.url).toBe(url);
    expect(st9.schema).toBe('st9');
    expect(redact(`failed: ${url}`)).not.toContain('Sup3rS3cret-Cfg');
    expect(redact('the password is Sup3rS3cret-Cfg')).toBe('the password is ***');
  });

  it('names an unknown entity in references', () => {
    const doc = baseDoc();
    doc.dataset.entities.accounts.references = [{ column: 'user_id', entity: 'customers' }];
    const file = write(doc);
    const err = loadError(file);
    expect(err.code).toBe('config_invalid');
    expect(err.message).toContain(file);
    expect(err.message).toContain('dataset.entities.accounts.references[0].entity');
    expect(err.message).toContain('unknown entity "customers"');
    expect(err.message).toContain('users, accounts');
  });

  it('refuses a reference cycle', () => {
    const doc = baseDoc();
    doc.dataset.entities.users.references = [{ column: 'main_account_id', entity: 'accounts' }];
    const err = loadError(write(doc));
    expect(err.code).toBe('config_invalid');
    expect(err.message).toContain('reference cycle');
  });

  it('refuses a duplicate precedence, naming both envs', () => {
    const doc = baseDoc();
    doc.environments['ST-2'].precedence = 1;
    const err = loadError(write(doc));
    expect(err.code).toBe('config_invalid');
    expect(err.message).toContain('environments.ST-2.precedence');
    expect(err.message).toContain('precedence 1 is already used by ST-1');
  });

  it('refuses a source without precedence and a second master', () => {
    const doc = baseDoc();
    delete doc.environments['ST-2'].precedence;
    expect(loadError(write(doc)).message).toContain('environments.ST-2.precedence');

    const doc2 = baseDoc();
    doc2.environments.master2 = { role: 'master', schema: 'm2' };
    const err = loadError(write(doc2));
    expect(err.message).toContain('environments.master2.role');
    expect(err.message).toContain('only one master env');
  });

  it('loads an on-premises config without sources (staging and master only), with its trusted keys beside the config; refuses one without any env', () => {
    const doc = baseDoc();
    doc.environments = { staging: { role: 'staging', schema: 'staging' }, master: { role: 'master', schema: 'master' } };
    doc.transfer = { publicKeys: ['keys/cloud.pub', '-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----'] };
    const file = write(doc);
    const c = loadConfig({ file, env: { TRIBUTARY_SIGNING_KEY: '-----BEGIN PRIVATE KEY-----\\nsecret\\n-----END PRIVATE KEY-----' } });
    expect(c.sources).toEqual([]);
    expect(c.transfer.publicKeys[0]).toBe(path.join(dir, 'keys/cloud.pub'));
    expect(c.transfer.publicKeys[1]).toMatch(/^-----BEGIN PUBLIC KEY-----\n/);
    // the signing key is a secret: masked wherever it would be printed; \n stands for line breaks
    expect(c.transfer.signingKey).toBe('-----BEGIN PRIVATE KEY-----\nsecret\n-----END PRIVATE KEY-----');
    expect(redact(`key: ${c.transfer.signingKey}`)).not.toContain('secret');
    doc.environments = {};
    expect(loadError(write(doc)).message).toMatch(/environments: declare at least one env/);
  });

  it('refuses a key or tag column declared as an attribute', () => {
    const doc = baseDoc();
    doc.dataset.entities.users.core = ['role', 'created_by'];
    const err = loadError(write(doc));
    expect(err.message).toContain('dataset.entities.users.core[1]');
    expect(err.message).toContain('"created_by" is a key or tag column');
  });

  it('reports a missing file with how to point at one', () => {
    const file = path.join(dir, 'nope', 'tributary.yml');
    const err = loadError(file);
    expect(err.code).toBe('config_missing');
    expect(err.message).toContain(file);
    expect(err.message).toContain('--config');
  });

  it('reports YAML that does not parse with its line', () => {
    const file = write('releases:\n  R2: [unclosed\n');
    const err = loadError(file);
    expect(err.code).toBe('config_invalid');
    expect(err.message).toContain(file);
    expect(err.message).toMatch(/line \d+, column \d+/);
    expect(err.message).toContain('not valid YAML');
  });

  it('normalises a valid config: parents before children, sources by precedence, default policy', () => {
    const doc = baseDoc();
    doc.database = { dataDir: 'data/pg' };
    doc.environments = {
      'ST-3': { role: 'source', precedence: 3, schema: 'st3' },
      'ST-1': { role: 'source', precedence: 1, schema: 'st1' },
      staging: { role: 'staging', schema: 'staging' },
      'ST-2': { role: 'source', precedence: 2, url: 'postgres://qa@st2.example/st2', tls: { rejectUnauthorized: false } },
    };
    doc.dataset.entities = {
      transactions: { primaryKey: 'id', references: [{ column: 'account_id', entity: 'accounts', columns: ['currency'] }] },
      accounts: { table: 'account', primaryKey: 'id', naturalKeys: [['number', 'bank']], references: [{ column: 'user_id', entity: 'users' }] },
      users: { primaryKey: 'id', naturalKeys: ['email', 'username'], core: ['role'], ignore: ['updated_at'], timestamp: 'updated_at' },
    };
    const file = write(doc);
    const c = loadConfig({ file, env: {} });

    expect(c.file).toBe(file);
    expect(c.database).toEqual({ dataDir: path.join(dir, 'data/pg'), name: 'tributary' });
    expect(c.entities.map((e) => e.name)).toEqual(['users', 'accounts', 'transactions']);
    expect(c.sources.map((e) => e.name)).toEqual(['ST-1', 'ST-2', 'ST-3']);
    expect(c.envs.get('staging')).toEqual({ name: 'staging', role: 'staging', precedence: 0, schema: 'staging' });
    expect(c.envs.get('ST-2')).toEqual({ name: 'ST-2', role: 'source', precedence: 2, url: 'postgres://qa@st2.example/st2', tls: { rejectUnauthorized: false } });
    expect(c.policy).toEqual({ rules: DEFAULT_RULES, renameTemplate: '{value}-{env}', scoped: [] });
    expect(c.policy.rules).toEqual(['exact-duplicate', 'newest-wins', 'complementary-merge', 'core-conflict', 'feature-priority', 'env-precedence', 'equal-priority']);
    expect(c.tags).toEqual({ release: 'release', feature: 'feature', createdBy: 'created_by', createdAt: 'created_at' });
    expect(c.collect).toEqual({ concurrency: 4 });
    expect(c.roles).toEqual({ reviewer: [], qa_lead: [], release_manager: [] });

    const [users, accounts, transactions] = c.entities;
    expect(users).toEqual({
      name: 'users', table: 'users', primaryKey: 'id', naturalKeys: [['email'], ['username']], references: [],
      core: ['role'], ignore: ['updated_at'], timestamp: 'updated_at', tests: [],
    });
    expect(accounts).toMatchObject({ table: 'account', naturalKeys: [['number', 'bank']], timestamp: 'created_at', references: [{ column: 'user_id', entity: 'users', columns: [] }] });
    expect(transactions).toMatchObject({ naturalKeys: [], references: [{ column: 'account_id', entity: 'accounts', columns: ['currency'] }] });

    const r2 = c.releases.get('R2')!;
    expect([...r2.features.values()]).toEqual([
      { id: 'FEAT-C', priority: 'critical', owner: 'alice', deprecated: false },
      { id: 'FEAT-M', priority: 'medium', owner: 'dan', deprecated: false },
    ]);
  });

  it('reads scoped rules (sorted attributes and envs, one way to keep) and names the field of a bad one', () => {
    const doc = baseDoc();
    const rule = { name: 'keep-st-1-users-role', entity: 'users', kind: 'core-conflict', attributes: ['role', 'email'], envs: ['ST-2', 'ST-1'], keepEnv: 'ST-1' };
    doc.policy = { scoped: [rule] };
    expect(loadConfig({ file: write(doc) }).policy.scoped).toEqual([
      { name: 'keep-st-1-users-role', entity: 'users', kind: 'core-conflict', attributes: ['email', 'role'], envs: ['ST-1', 'ST-2'], choice: { keepEnv: 'ST-1' } },
    ]);
    const cases: [Record<string, unknown>, string][] = [
      [{ ...rule, keepFeature: 'FEAT-1' }, 'policy.scoped[0]: a scoped rule keeps one version: give exactly one of keepEnv, keepFeature, keepByRule (found keepEnv and keepFeature)'],
      [{ ...rule, keepEnv: 'ST-3' }, 'policy.scoped[0].keepEnv: ST-3 is not one of the rule\'s envs (ST-1, ST-2)'],
      [{ ...rule, entity: 'orders' }, 'policy.scoped[0].entity: unknown entity "orders"'],
      [{ ...rule, envs: ['ST-1', 'staging'], keepEnv: 'ST-1' }, 'policy.scoped[0].envs[1]: "staging" is not a source (ST) env'],
      [{ ...rule, name: 'newest-wins' }, 'policy.scoped[0].name: "newest-wins" is a policy rule\'s name'],
    ];
    for (const [bad, message] of cases) {
      const d = baseDoc();
      d.policy = { scoped: [bad] };
      expect(loadError(write(d)).message).toContain(message);
    }
    const twice = baseDoc();
    twice.policy = { scoped: [rule, rule] };
    expect(loadError(write(twice)).message).toContain('policy.scoped[1].name: a second scoped rule named "keep-st-1-users-role"');
  });

  it('applies configured policy rules, dropping disabled ones, and DATABASE_URL over the file', () => {
    const doc = baseDoc();
    doc.policy = { rules: ['exact-duplicate', { rule: 'newest-wins', enabled: false }, { rule: 'env-precedence' }], renameTemplate: '{value}+{n}' };
    const c = loadConfig({ file: write(doc), env: { DATABASE_URL: 'postgres://ops@prod.example/tributary', LOG_LEVEL: 'debug' } });
    expect(c.policy).toEqual({ rules: ['exact-duplicate', 'env-precedence'], renameTemplate: '{value}+{n}', scoped: [] });
    expect(c.database.url).toBe('postgres://ops@prod.example/tributary');
    expect(c.logLevel).toBe('debug');

    const bad = baseDoc();
    bad.policy = { rules: ['newest-wins', 'oldest-wins'] };
    const err = loadError(write(bad));
    expect(err.message).toContain('policy.rules[1]');
  });
});
