import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { generatedDocs } from '../../scripts/docs.js';
import { configSchema } from '../../src/config/schema.js';
import { ROOT } from '../helpers.js';

/** docs/ stays true: generated files match the code, the configuration reference the schema, links resolve. */

interface Leaf {
  path: string;
  default?: unknown;
}

type JsonSchema = { type?: string; properties?: Record<string, JsonSchema>; additionalProperties?: JsonSchema | boolean; items?: JsonSchema; anyOf?: JsonSchema[]; oneOf?: JsonSchema[]; default?: unknown };

const DEPLOY_COMMANDS = /^deploy\.commands\.[A-Za-z]+/;

/** Every leaf key the schema accepts, named as the docs name them (`<R>`, `<env>`, `[]` …). */
function schemaLeaves(): Map<string, Leaf> {
  const leaves = new Map<string, Leaf>();
  const placeholder: Record<string, string> = { releases: '<R>', features: '<F>', environments: '<env>', entities: '<entity>' };
  const walk = (s: JsonSchema | undefined, p: string, parentKey: string): void => {
    if (!s) return;
    const alternatives = s.anyOf ?? s.oneOf;
    if (alternatives) {
      // a deployer command is a string or { run, timeoutSeconds }: the key itself is documented too
      if (alternatives.some((a) => a.type !== 'object')) leaves.set(p, { path: p });
      for (const a of alternatives) if (a.type === 'object') walk(a, p, parentKey);
      return;
    }
    if (s.type === 'object' && (s.properties || typeof s.additionalProperties === 'object')) {
      for (const [k, v] of Object.entries(s.properties ?? {})) walk(v, p ? `${p}.${k}` : k, k);
      if (typeof s.additionalProperties === 'object') walk(s.additionalProperties, `${p}.${placeholder[parentKey] ?? '<*>'}`, '');
      return;
    }
    if (s.type === 'array' && s.items?.type === 'object') return walk(s.items, `${p}[]`, parentKey);
    leaves.set(p, { path: p, ...(s.default !== undefined ? { default: s.default } : {}) });
  };
  walk(z.toJSONSchema(configSchema, { io: 'input', unrepresentable: 'any' }) as JsonSchema, '', '');
  const named = new Map<string, Leaf>();
  for (const leaf of leaves.values()) {
    const p = leaf.path.replace(DEPLOY_COMMANDS, 'deploy.commands.<command>');
    named.set(p, { ...leaf, path: p });
  }
  return named;
}

/** The rows of docs/configuration.md's key tables: key → the default cell. */
function documentedKeys(): Map<string, string> {
  const text = fs.readFileSync(path.join(ROOT, 'docs/configuration.md'), 'utf8');
  const rows = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^\| `([a-zA-Z][^`]*)` \|([^|]*)\|/.exec(line);
    if (m && /^[a-z]+\./.test(m[1]!)) rows.set(m[1]!, m[2]!.trim());
  }
  return rows;
}

describe('docs/configuration.md', () => {
  it('documents every key the config schema accepts, and no other', () => {
    const schema = [...schemaLeaves().keys()].sort();
    const documented = [...documentedKeys().keys()].sort();
    expect(documented.filter((k) => !schema.includes(k)), 'documented but unknown to the schema').toEqual([]);
    expect(schema.filter((k) => !documented.includes(k)), 'in the schema but not documented').toEqual([]);
  });

  it('shows each default the schema applies', () => {
    const docs = documentedKeys();
    const wrong: string[] = [];
    for (const leaf of schemaLeaves().values()) {
      if (leaf.default === undefined) continue;
      const cell = docs.get(leaf.path) ?? '';
      const literal = /^`([^`]*)`$/.exec(cell)?.[1];
      if (literal === undefined) {
        // a default in words (a long list, "every day") must still be given
        if (!cell) wrong.push(`${leaf.path}: no default shown (the schema's is ${JSON.stringify(leaf.default)})`);
        continue;
      }
      const expected = Array.isArray(leaf.default) && leaf.default.length === 0 ? '[]' : String(leaf.default);
      if (literal !== expected) wrong.push(`${leaf.path}: shows ${literal}, the schema's is ${expected}`);
    }
    expect(wrong).toEqual([]);
  });
});

/** Config keys the hand-written docs name in backticks (`testing.dispatch`, `deploy.commands`), by file. */
function keysNamedIn(file: string): string[] {
  const tops = Object.keys(configSchema.shape);
  const text = fs.readFileSync(path.join(ROOT, file), 'utf8');
  const keys = [...text.matchAll(/`([a-z][A-Za-z]*(?:\.[A-Za-z0-9_<>[\]-]+)+)/g)].map((m) => m[1]!);
  return [...new Set(keys.filter((k) => tops.includes(k.split('.')[0]!)))];
}

/** A key the docs name is a schema leaf, or an object above some (`deploy.commands`); `<env>`, `R2` fill placeholders. */
function inSchema(key: string, leaves: string[]): boolean {
  const want = key.replace(/\[\]/g, '').split('.');
  return leaves.some((leaf) => {
    const have = leaf.replace(/\[\]/g, '').split('.');
    return want.length <= have.length && want.every((w, i) => have[i] === w || /^<.*>$/.test(have[i]!));
  });
}

describe('the hand-written docs', () => {
  it('name only config keys the schema has', () => {
    const leaves = [...schemaLeaves().keys()];
    const unknown: string[] = [];
    const named: string[] = [];
    for (const file of ['README.md', 'docs/operations.md', 'docs/architecture.md', 'docs/commands-guide.md', 'docs/slack.md', 'docs/policy.md']) {
      for (const key of keysNamedIn(file)) {
        named.push(key);
        if (!inSchema(key, leaves)) unknown.push(`${file}: ${key}`);
      }
    }
    expect(unknown).toEqual([]);
    // the check sees the keys at all
    expect(named).toEqual(expect.arrayContaining(['testing.dispatch', 'deploy.bundleDir', 'archive.dir']));
  });
});

describe('README', () => {
  it('is short, and its first screen says what Tributary is, how to run it and where connecting Slack is', () => {
    const lines = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8').split('\n');
    expect(lines.length).toBeLessThanOrEqual(150);
    const first = lines.slice(0, 40).join('\n');
    expect(first).toMatch(/^# Tributary\n\nTributary merges a release's test data/);
    expect(first).toContain('npm install && npm run demo');
    expect(first).toContain('npm test');
    expect(first).toContain('(#connect-slack)');
  });
});

describe('generated docs', () => {
  it('are committed as npm run docs generates them', () => {
    for (const [file, content] of Object.entries(generatedDocs())) {
      expect(fs.readFileSync(path.join(ROOT, file), 'utf8'), `${file} is stale: run npm run docs`).toBe(content);
    }
  });
});

/** Slug of a Markdown heading, as GitHub makes it. */
function slug(heading: string): string {
  return heading.trim().toLowerCase().replace(/[`*_]/g, '').replace(/[^\p{L}\p{N} -]/gu, '').replace(/ /g, '-');
}

describe('links', () => {
  it('every relative link in the README and docs/ resolves, anchors included', () => {
    const files = ['README.md', ...fs.readdirSync(path.join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];
    const broken: string[] = [];
    for (const file of files) {
      const text = fs.readFileSync(path.join(ROOT, file), 'utf8').replace(/```[\s\S]*?```/g, '');
      for (const m of text.matchAll(/\[[^\]]*\]\(([^)\s]+)\)/g)) {
        const target = m[1]!;
        if (/^[a-z]+:/.test(target)) continue;
        const [rel, anchor] = target.split('#');
        const resolved = rel ? path.join(path.dirname(path.join(ROOT, file)), rel) : path.join(ROOT, file);
        if (!fs.existsSync(resolved)) {
          broken.push(`${file}: ${target} (no such file)`);
          continue;
        }
        if (anchor && resolved.endsWith('.md')) {
          const headings = [...fs.readFileSync(resolved, 'utf8').matchAll(/^#+ (.+)$/gm)].map((h) => slug(h[1]!));
          if (!headings.includes(anchor)) broken.push(`${file}: ${target} (no such heading)`);
        }
      }
    }
    expect(broken).toEqual([]);
  });
  it('every docs/ page (and "section") the code points users to exists', () => {
    const sources = (dir: string): string[] =>
      fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? sources(path.join(dir, e.name)) : e.name.endsWith('.ts') ? [path.join(dir, e.name)] : []));
    const broken: string[] = [];
    let pointers = 0;
    for (const file of sources(path.join(ROOT, 'src'))) {
      const text = fs.readFileSync(file, 'utf8');
      for (const m of text.matchAll(/docs\/([a-z-]+\.md)(?:, "([^"]+)")?/g)) {
        pointers += 1;
        const where = `${path.relative(ROOT, file)}: docs/${m[1]}${m[2] ? `, "${m[2]}"` : ''}`;
        const doc = path.join(ROOT, 'docs', m[1]!);
        if (!fs.existsSync(doc)) {
          broken.push(`${where} (no such file)`);
          continue;
        }
        const headings = [...fs.readFileSync(doc, 'utf8').matchAll(/^#+ (.+)$/gm)].map((h) => h[1]!.trim());
        if (m[2] && !headings.some((h) => h.startsWith(m[2]!))) broken.push(`${where} (no such section)`);
      }
      if (/README[ ,]+"/.test(text)) broken.push(`${path.relative(ROOT, file)}: points to a README section (the README is short: point to docs/)`);
    }
    expect(broken).toEqual([]);
    expect(pointers).toBeGreaterThan(5);
  });
});
