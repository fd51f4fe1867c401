import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from '../helpers.js';

/**
 * Issue 19: src/engine keeps to functions of at most 60 lines, lines of at most 140 characters and no
 * non-null assertions, without exceptions. No comment in src/engine may turn these rules off: an
 * eslint-disable that names one of them, a bare eslint-disable (which turns off every rule), or an inline
 * `eslint` configuration comment for one of them. (eslint.config.js enforces the rules; this test keeps
 * them from being switched off file by file.)
 */
const STRICT_RULES = ['max-lines-per-function', 'max-len', '@typescript-eslint/no-non-null-assertion'];

const DIRECTIVE = /(?:\/\/|\/\*)\s*(eslint-disable-next-line|eslint-disable-line|eslint-disable|eslint)(?=[\s*]|$)(.*?)(?:\*\/|$)/gm;

/** Whether a rule named in a directive is one of the strict rules (with or without its plugin's prefix). */
function isStrict(rule: string): boolean {
  return STRICT_RULES.some((r) => rule === r || (r.includes('/') && rule === r.slice(r.indexOf('/') + 1)));
}

/** The directives in `text` that turn off a strict rule: their line and text. */
function strictRuleDirectives(text: string): { line: number; directive: string }[] {
  const found: { line: number; directive: string }[] = [];
  for (const m of text.matchAll(DIRECTIVE)) {
    const [directive, kind = '', rest = ''] = m;
    // a directive's own description follows " -- "
    const body = rest.split(/\s--\s/)[0]?.trim() ?? '';
    const rules =
      kind === 'eslint'
        ? body.split(',').map((part) => (part.includes(':') ? part.slice(0, part.indexOf(':')) : ''))
        : body.split(',');
    const named = rules.map((r) => r.trim().replace(/^['"]|['"]$/g, '')).filter(Boolean);
    const turnsOffEverything = kind !== 'eslint' && named.length === 0;
    if (turnsOffEverything || named.some(isStrict)) {
      found.push({ line: text.slice(0, m.index).split('\n').length, directive: directive.trim() });
    }
  }
  return found;
}

describe('directives that turn off the strict rules', () => {
  it('are found in every form: disable, disable-line, disable-next-line, bare, with a description, inline configuration', () => {
    const cases = [
      '// eslint-disable-next-line max-lines-per-function',
      '// eslint-disable-line max-len',
      '/* eslint-disable @typescript-eslint/no-non-null-assertion */',
      '// eslint-disable-next-line no-non-null-assertion',
      '// eslint-disable-next-line no-control-regex, max-len -- a long regex',
      '/* eslint-disable */',
      '// eslint-disable-next-line',
      '/* eslint max-len: off */',
      "/* eslint 'no-console': 'off', max-lines-per-function: ['error', { max: 200 }] */",
      "/* eslint 'max-len': 0 */",
    ];
    for (const c of cases) expect(strictRuleDirectives(`const a = 1;\n${c}\nconst b = 2;\n`), c).toEqual([{ line: 2, directive: c }]);
  });

  it('leave alone the directives for other rules and the comments that only mention eslint', () => {
    const text = [
      '// eslint-disable-next-line no-control-regex',
      '/* eslint-disable no-console -- max-len is not turned off here */',
      '/* eslint-enable */',
      '/* eslint-env node */',
      '// eslint.config.js holds the max-len rule',
      "const s = 'x';",
    ].join('\n');
    expect(strictRuleDirectives(text)).toEqual([]);
  });

  it('appear nowhere in src/engine', () => {
    const engine = path.join(ROOT, 'src/engine');
    const files = (fs.readdirSync(engine, { recursive: true }) as string[]).filter((f) => /\.[cm]?[jt]s$/.test(f));
    expect(files.length).toBeGreaterThan(50);
    const found = files.flatMap((f) =>
      strictRuleDirectives(fs.readFileSync(path.join(engine, f), 'utf8')).map((d) => `src/engine/${f}:${d.line}: ${d.directive}`),
    );
    expect(found).toEqual([]);
  });
});
