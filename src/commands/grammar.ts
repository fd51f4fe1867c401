import { suggest, TributaryError } from '../errors.js';

/**
 * The grammar both adapters share: a command's words as Slack sends them (quoted words, smart quotes,
 * HTML entities, mentions and channel links) split into positional arguments and flags, each flag checked
 * against what the command accepts; and "did you mean …?" for a name that does not exist.
 */

/** Slack's escapes and special forms, as the words a person typed: `<@U1|ana>` → `U1`, `<#C1|rel>` → `C1`. */
function decodeSlack(text: string): string {
  return text
    .replace(/<([@#])([UWCS][A-Z0-9]+)(?:\|[^>]*)?>/g, '$2')
    .replace(/<(https?:[^|>]+)(?:\|[^>]*)?>/g, '$1')
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&amp;/g, '&');
}

const QUOTES: Record<string, string> = { '"': '"', "'": "'", '\u201c': '\u201d', '\u201d': '\u201d', '\u2018': '\u2019', '\u2019': '\u2019' };

/** Splits into words; "two words", 'two words' and “smart quotes” make one word; don't stays one word. */
export function tokenize(raw: string): string[] {
  const text = decodeSlack(raw);
  const words: string[] = [];
  let i = 0;
  while (i < text.length) {
    while (i < text.length && /\s/.test(text[i]!)) i++;
    if (i >= text.length) break;
    let word = '';
    while (i < text.length && !/\s/.test(text[i]!)) {
      // an apostrophe inside a word is one (don't, the team’s), not a quote
      const close = word !== '' && (text[i] === "'" || text[i] === '\u2019') ? undefined : QUOTES[text[i]!];
      if (close) {
        const end = text.indexOf(close, i + 1);
        const alt = close === '\u201d' ? text.indexOf('"', i + 1) : -1;
        const stop = end < 0 ? alt : alt < 0 ? end : Math.min(end, alt);
        if (stop < 0) throw new TributaryError('usage', `an unclosed quote: ${text.slice(i)}`);
        word += text.slice(i + 1, stop);
        i = stop + 1;
      } else word += text[i++];
    }
    words.push(word);
  }
  return words;
}

export interface FlagSpec {
  /** Takes a value (`--env ST-3`), or is a switch (`--smoke`). */
  value: boolean;
  /** May be given more than once (`--merge a=1 --merge b=2`): its values in order. */
  many?: boolean;
}

export interface Grammar {
  /** e.g. `/release deploy R2 [--at <time>] [--bundle <n>]`, shown with every refusal. */
  usage: string;
  args: { name: string; required: boolean }[];
  flags: Record<string, FlagSpec>;
  /** The flags only the other adapter takes, and why: refused with the reason, not as unknown. */
  elsewhere?: Record<string, string>;
}

export interface ParsedWords {
  args: Record<string, string | undefined>;
  flags: Record<string, string | true | string[]>;
}

/** Parses a command's words by its grammar; an unknown flag, a missing value or an extra word is refused with the usage. */
export function parseWords(words: string[], g: Grammar): ParsedWords {
  const positional: string[] = [];
  const flags: Record<string, string | true | string[]> = {};
  const refuse = (why: string): never => {
    throw new TributaryError('usage', `${why}. Usage: ${g.usage}`);
  };
  for (let i = 0; i < words.length; i++) {
    const w = words[i]!;
    if (!w.startsWith('--')) {
      positional.push(w);
      continue;
    }
    const [name, inline] = w.slice(2).split(/=(.*)/s, 2) as [string, string | undefined];
    const spec = g.flags[name];
    if (!spec && g.elsewhere?.[name]) refuse(g.elsewhere[name]!);
    if (!spec) {
      const close = suggest(name, Object.keys(g.flags));
      refuse(`unknown flag --${name}${close ? ` (did you mean --${close}?)` : ''}`);
    }
    if (name in flags && !spec!.many) refuse(`--${name} given twice`);
    let value: string | true;
    if (!spec!.value) {
      if (inline !== undefined) refuse(`--${name} takes no value`);
      value = true;
    } else if (inline !== undefined) value = inline;
    else {
      const next = words[i + 1];
      if (next === undefined || next.startsWith('--')) refuse(`--${name} needs a value`);
      value = next!;
      i++;
    }
    flags[name] = spec!.many ? [...((flags[name] as string[] | undefined) ?? []), value as string] : value;
  }
  if (positional.length > g.args.length) refuse(`unexpected ${positional.slice(g.args.length).map((w) => `"${w}"`).join(', ')}`);
  const args: Record<string, string | undefined> = {};
  g.args.forEach((a, i) => {
    if (a.required && positional[i] === undefined) refuse(`missing ${a.name}`);
    args[a.name] = positional[i];
  });
  return { args, flags };
}
