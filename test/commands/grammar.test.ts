import { describe, expect, it } from 'vitest';
import { parseWords, tokenize, type Grammar } from '../../src/commands/grammar.js';
import { suggest, TributaryError, unknownName } from '../../src/errors.js';

const deploy: Grammar = {
  usage: '/release deploy R2 [--at <time>] [--bundle <n>]',
  args: [{ name: 'release', required: true }],
  flags: { at: { value: true }, bundle: { value: true } },
};
const test: Grammar = { usage: '/release test R2 --tier 1|2 | --smoke', args: [{ name: 'release', required: true }], flags: { tier: { value: true }, smoke: { value: false }, rationale: { value: true } } };

function refusal(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(TributaryError);
    expect((err as TributaryError).code).toBe('usage');
    return (err as Error).message;
  }
  throw new Error('expected a refusal');
}

describe('tokenize', () => {
  it('keeps quoted words together, straight or smart, and reads what Slack escapes', () => {
    expect(tokenize('approve R2 --rationale "two words"')).toEqual(['approve', 'R2', '--rationale', 'two words']);
    expect(tokenize('approve R2 --rationale \u201cQA signed off\u201d')).toEqual(['approve', 'R2', '--rationale', 'QA signed off']);
    expect(tokenize("x --rationale don't \"stop now\" the team\u2019s")).toEqual(['x', '--rationale', "don't", 'stop now', 'the', 'team\u2019s']);
    expect(tokenize('x --rationale \u2018single smart\u2019')).toEqual(['x', '--rationale', 'single smart']);
    expect(tokenize('decide C-1 --rationale "a &amp; b &lt;ok&gt;"')).toEqual(['decide', 'C-1', '--rationale', 'a & b <ok>']);
    expect(tokenize('assign <@U0123ABC|dana> in <#C042XYZ|release>')).toEqual(['assign', 'U0123ABC', 'in', 'C042XYZ']);
    expect(tokenize('  status   R2  ')).toEqual(['status', 'R2']);
    expect(refusal(() => tokenize('x --rationale "open'))).toContain('an unclosed quote');
  });
});

describe('parseWords', () => {
  it('reads arguments and flags by the grammar', () => {
    expect(parseWords(['R2', '--bundle', '1'], deploy)).toEqual({ args: { release: 'R2' }, flags: { bundle: '1' } });
    expect(parseWords(['R2', '--at=2026-12-05T22:00Z'], deploy)).toEqual({ args: { release: 'R2' }, flags: { at: '2026-12-05T22:00Z' } });
    expect(parseWords(['R2', '--smoke', '--rationale', 'two words'], test)).toEqual({ args: { release: 'R2' }, flags: { smoke: true, rationale: 'two words' } });
  });

  it('refuses what it does not understand, with the usage: never ignores it', () => {
    expect(refusal(() => parseWords(['R2', '--bundel', '1'], deploy))).toBe('unknown flag --bundel (did you mean --bundle?). Usage: /release deploy R2 [--at <time>] [--bundle <n>]');
    expect(refusal(() => parseWords(['R2', '--force'], deploy))).toBe('unknown flag --force. Usage: /release deploy R2 [--at <time>] [--bundle <n>]');
    expect(refusal(() => parseWords(['R2', 'R3'], deploy))).toContain('unexpected "R3"');
    expect(refusal(() => parseWords([], deploy))).toContain('missing release');
    expect(refusal(() => parseWords(['R2', '--bundle'], deploy))).toContain('--bundle needs a value');
    expect(refusal(() => parseWords(['R2', '--bundle', '--at', 'x'], deploy))).toContain('--bundle needs a value');
    expect(refusal(() => parseWords(['R2', '--smoke=yes'], test))).toContain('--smoke takes no value');
    expect(refusal(() => parseWords(['R2', '--tier', '1', '--tier', '2'], test))).toContain('--tier given twice');
  });
});

describe('suggest', () => {
  it('finds the name meant: other case first, then a small edit distance; nothing far off', () => {
    expect(suggest('r2', ['R1', 'R2'])).toBe('R2');
    expect(suggest('R22', ['R1', 'R2'])).toBe('R2');
    expect(suggest('R3', ['R1', 'R2'])).toBeUndefined();
    expect(unknownName('unknown_release', 'release', 'R3', ['R1', 'R2']).message).toBe('unknown release "R3": did you mean R1 or R2?');
    expect(suggest('staging', ['ST-1', 'staging', 'master'])).toBe('staging');
    expect(suggest('prodution', ['staging', 'production'])).toBe('production');
    expect(suggest('FEAT-11', ['FEAT-101', 'FEAT-102'])).toBe('FEAT-101');
    expect(suggest('banana', ['R1', 'R2'])).toBeUndefined();
    const e = unknownName('unknown_release', 'release', 'r2', ['R1', 'R2']);
    expect(e.code).toBe('unknown_release');
    expect(e.message).toBe('unknown release "r2": did you mean R2?');
    expect(unknownName('unknown_env', 'env', 'qa', ['ST-1', 'staging']).message).toBe('unknown env "qa": the envs are ST-1, staging');
  });
});
