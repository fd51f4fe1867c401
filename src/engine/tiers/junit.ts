import fs from 'node:fs';
import type { XMLParser } from 'fast-xml-parser';
import { TributaryError } from '../../errors.js';
import { lazy, yamlLib } from '../../lazy.js';
import { must } from '../kernel/must.js';
import type { TestCaseResult, TestStatus } from './types.js';

/**
 * JUnit XML, the format every test runner can write: parsed into test cases with their features
 * (tags in names, JUnit properties, the mapping file), and written back as one merged document.
 *
 * Accepted as real runners write it: node:test (test cases straight under <testsuites>, nested
 * <testsuite>s for describe blocks, comments), pytest (features as <properties>), vitest (classname is
 * the file, the name joins describe blocks with " > "), JUnit/Maven Surefire (<error>, <skipped/>,
 * system-out, CDATA), Playwright.
 */

/** The feature mapping file: exact test names or ids, and /regex/ keys, to features and the smoke tag. */
export interface FeatureMapping {
  file: string;
  /** Exact test name or id → what it maps to. */
  exact: Map<string, MappingTarget>;
  /** `/regex/` keys in file order, each tried on the test's id and name. */
  patterns: { key: string; pattern: RegExp; target: MappingTarget }[];
}

export interface MappingTarget {
  features: string[];
  smoke: boolean;
}

export interface ParseJUnitOptions {
  /** The features the release plans know: a tag counts as a feature only when it is one of them. */
  knownFeatures?: Set<string>;
  mapping?: FeatureMapping;
}

/** Properties in this namespace are Tributary's own (written by writeJUnit); they are not kept in `properties`. */
const RESERVED_PREFIX = 'tributary.';
const MESSAGE_MAX = 500;
/** Without knownFeatures, a tag shaped like this is a feature id. */
const FEATURE_SHAPE = /^[A-Za-z][A-Za-z0-9_]*-\d+$/;
/** `@FEAT-101` (not inside an e-mail address) or `[FEAT-101]` / `[FEAT-101, smoke]`. */
const NAME_TAG = /(?<![A-Za-z0-9_.])@([A-Za-z][A-Za-z0-9_-]*)|\[([^\]\n]{1,200})\]/g;
const TAG_SPLIT = /[\s,]+/;
// eslint-disable-next-line no-control-regex
const ANSI = /\u001B\[[0-9;?]*[ -/]*[@-~]/g;

type XmlNode = Record<string, unknown>;

const fastXml = lazy<typeof import('fast-xml-parser')>('fast-xml-parser');
let parser: XMLParser | undefined;

const xmlParser = (): XMLParser => (parser ??= new (fastXml().XMLParser)({
  preserveOrder: true,
  ignoreAttributes: false,
  attributeNamePrefix: '',
  parseTagValue: false,
  parseAttributeValue: false,
  ignoreDeclaration: true,
  ignorePiTags: true,
  // numeric character references (&#10; in pytest's messages) are only decoded with it
  htmlEntities: true,
  trimValues: true,
}));

function invalid(file: string, what: string, line?: number, details: Record<string, unknown> = {}): TributaryError {
  return new TributaryError('junit_invalid', `${file}${line ? `:${line}` : ''}: ${what}`, { file, ...(line ? { line } : {}), ...details });
}

/** The one tag name of a preserveOrder node (every node also may carry ':@' attributes). */
function tagOf(node: XmlNode): string | undefined {
  for (const k in node) if (k !== ':@') return k;
  return undefined;
}

function childrenOf(node: XmlNode, tag: string): XmlNode[] {
  const c = node[tag];
  return Array.isArray(c) ? (c as XmlNode[]) : [];
}

function attrsOf(node: XmlNode): Record<string, string> {
  const a = node[':@'];
  return a && typeof a === 'object' ? (a as Record<string, string>) : {};
}

function textOf(children: XmlNode[]): string {
  let out = '';
  for (const c of children) {
    const t = c['#text'];
    if (t !== undefined) out += out ? `\n${String(t)}` : String(t);
  }
  return out;
}

function clean(s: string): string {
  return s.includes('\u001B') ? s.replace(ANSI, '') : s;
}

function firstLine(text: string): string | undefined {
  let start = 0;
  while (start <= text.length) {
    let end = text.indexOf('\n', start);
    if (end < 0) end = text.length;
    const line = text.slice(start, end).trim();
    if (line) return line;
    start = end + 1;
  }
  return undefined;
}

function cut(s: string): string {
  if (s.length <= MESSAGE_MAX) return s;
  const code = s.charCodeAt(MESSAGE_MAX - 1);
  return s.slice(0, code >= 0xd800 && code <= 0xdbff ? MESSAGE_MAX - 1 : MESSAGE_MAX);
}

/** Seconds (a float; Surefire once wrote "1,234.5") → whole milliseconds. */
function durationOf(time: string | undefined): number {
  if (!time) return 0;
  const s = Number.parseFloat(time.includes(',') ? time.replaceAll(',', '') : time);
  return Number.isFinite(s) && s > 0 ? Math.round(s * 1000) : 0;
}

/** Tags in a test or suite name: `@FEAT-101`, `[FEAT-101]`, `[FEAT-101, smoke]`. */
function nameTags(name: string, out: string[]): void {
  if (!name.includes('@') && !name.includes('[')) return;
  for (const m of name.matchAll(NAME_TAG)) {
    if (m[1] !== undefined) out.push(m[1]);
    else if (m[2] !== undefined) for (const part of m[2].split(TAG_SPLIT)) if (part) out.push(part);
  }
}

function splitList(value: string): string[] {
  const out: string[] = [];
  for (const part of value.split(TAG_SPLIT)) if (part) out.push(part);
  return out;
}

function stripTag(tag: string): string {
  return tag.startsWith('@') ? tag.slice(1) : tag;
}

class FeatureResolver {
  private readonly known?: Map<string, string>;

  constructor(known?: Set<string>) {
    if (known) {
      this.known = new Map();
      for (const f of known) {
        this.known.set(f, f);
        if (!this.known.has(f.toLowerCase())) this.known.set(f.toLowerCase(), f);
      }
    }
  }

  /** A tag (from a name or a tag property): the feature id it stands for, or undefined. */
  tag(tag: string): string | undefined {
    if (this.known) return this.known.get(tag) ?? this.known.get(tag.toLowerCase());
    return FEATURE_SHAPE.test(tag) ? tag : undefined;
  }

  /** An explicit feature (feature properties, the mapping): always a feature, spelled as the plan spells it. */
  explicit(id: string): string {
    return this.known?.get(id) ?? this.known?.get(id.toLowerCase()) ?? id;
  }
}

interface SuiteContext {
  tags: string[];
  file?: string;
}

interface ParseState {
  file: string;
  xml: string;
  resolver: FeatureResolver;
  mapping?: FeatureMapping;
  cases: TestCaseResult[];
  /** Testcase elements seen, in document order (for the line of a bad one). */
  seen: number;
}

/** The line of the n-th (1-based) `<testcase` in the document: only computed on the error path. */
function lineOfTestcase(xml: string, n: number): number | undefined {
  const re = /<testcase[\s/>]/g;
  let m: RegExpExecArray | null;
  let i = 0;
  while ((m = re.exec(xml))) {
    if (++i === n) {
      let line = 1;
      for (let p = xml.indexOf('\n'); p >= 0 && p < m.index; p = xml.indexOf('\n', p + 1)) line++;
      return line;
    }
  }
  return undefined;
}

function walkSuite(children: XmlNode[], ctx: SuiteContext, st: ParseState): void {
  for (const child of children) {
    const tag = tagOf(child);
    if (tag === 'testcase') readCase(child, ctx, st);
    else if (tag === 'testsuite' || tag === 'testsuites') {
      const a = attrsOf(child);
      const tags = [...ctx.tags];
      if (tag === 'testsuite' && a.name) nameTags(a.name, tags);
      walkSuite(childrenOf(child, tag), { tags, ...(a.file ? { file: a.file } : ctx.file ? { file: ctx.file } : {}) }, st);
    }
  }
}

function readCase(node: XmlNode, ctx: SuiteContext, st: ParseState): void {
  st.seen++;
  const a = attrsOf(node);
  const name = a.name;
  if (name === undefined) throw invalid(st.file, `<testcase> #${st.seen} has no name attribute`, lineOfTestcase(st.xml, st.seen));
  const classname = a.classname ?? '';
  const id = classname ? `${classname}::${name}` : name;
  const file = a.file ?? ctx.file;

  const d = caseDetails(node, [...ctx.tags], st);
  nameTags(name, d.tags);
  for (const raw of d.tags) {
    const t = stripTag(raw);
    if (t.toLowerCase() === 'smoke') d.smoke = true;
    else {
      const f = st.resolver.tag(t);
      if (f) d.features.push(f);
    }
  }
  if (st.mapping) applyMapping(st.mapping, id, name, d, st);

  const { features } = d;
  const c: TestCaseResult = {
    id,
    name,
    classname,
    status: d.status,
    durationMs: durationOf(a.time),
    features: features.length > 1 ? [...new Set(features)].sort() : features,
    smoke: d.smoke,
    // fromEntries defines own properties: a property named "__proto__" stays data
    properties: Object.fromEntries(d.properties),
  };
  if (file !== undefined) c.file = file;
  if (d.message !== undefined) c.message = d.message;
  st.cases.push(c);
}

/** What a test case's children say: its outcome, its properties, and the tags, features and smoke flag found so far. */
interface CaseDetails {
  status: TestStatus;
  message: string | undefined;
  properties: Map<string, string>;
  tags: string[];
  features: string[];
  smoke: boolean;
}

/** The case's outcome (a failure wins over an error, an error over a skip) and its properties. */
function caseDetails(node: XmlNode, tags: string[], st: ParseState): CaseDetails {
  const d: CaseDetails = { status: 'passed', message: undefined, properties: new Map(), tags, features: [], smoke: false };
  let rank = 0;
  for (const child of childrenOf(node, 'testcase')) {
    const tag = tagOf(child);
    // a failure wins over an error, an error over a skip
    const r = tag === 'failure' ? 3 : tag === 'error' ? 2 : tag === 'skipped' ? 1 : 0;
    if (r > rank && tag !== undefined) {
      rank = r;
      d.status = r === 3 ? 'failed' : r === 2 ? 'errored' : 'skipped';
      const attr = attrsOf(child).message;
      const msg = attr?.trim() ? attr.trim() : firstLine(textOf(childrenOf(child, tag)));
      d.message = msg ? cut(clean(msg)) : undefined;
    } else if (tag === 'properties') {
      for (const p of childrenOf(child, 'properties')) readProperty(p, d, st);
    }
  }
  return d;
}

/** A <property>: features, tags and the smoke flag Tributary reads, and every other one kept as data. */
function readProperty(p: XmlNode, d: CaseDetails, st: ParseState): void {
  if (tagOf(p) !== 'property') return;
  const pa = attrsOf(p);
  const pname = pa.name;
  if (!pname) return;
  const value = pa.value ?? textOf(childrenOf(p, 'property'));
  const lname = pname.toLowerCase();
  if (lname === 'feature' || lname === 'features' || lname === 'tributary.feature') {
    for (const f of splitList(value)) d.features.push(st.resolver.explicit(stripTag(f)));
  } else if (lname === 'tag' || lname === 'tags') {
    d.tags.push(...splitList(value));
  } else if (lname === 'tributary.smoke') {
    if (/^(true|1|yes)$/i.test(value.trim())) d.smoke = true;
  }
  if (!lname.startsWith(RESERVED_PREFIX)) {
    const before = d.properties.get(pname);
    d.properties.set(pname, before === undefined ? value : `${before}, ${value}`);
  }
}

/** The features (and smoke) the mapping file gives the test, by its id, its name or a pattern. */
function applyMapping(m: FeatureMapping, id: string, name: string, d: CaseDetails, st: ParseState): void {
  const hits: MappingTarget[] = [];
  const byId = m.exact.get(id);
  if (byId) hits.push(byId);
  const byName = id !== name ? m.exact.get(name) : undefined;
  if (byName) hits.push(byName);
  for (const p of m.patterns) if (p.pattern.test(id) || p.pattern.test(name)) hits.push(p.target);
  for (const h of hits) {
    if (h.smoke) d.smoke = true;
    for (const f of h.features) d.features.push(st.resolver.explicit(f));
  }
}

/**
 * Parses one JUnit XML document. Malformed XML (or a document that is no JUnit XML) is a
 * TributaryError('junit_invalid') whose message names the file and, when known, the line.
 */
export function parseJUnit(xml: string, file: string, opts: ParseJUnitOptions = {}): TestCaseResult[] {
  const text = xml.charCodeAt(0) === 0xfeff ? xml.slice(1) : xml;
  if (!text.trim()) throw invalid(file, 'the file is empty: no JUnit XML');
  const v = fastXml().XMLValidator.validate(text);
  if (v !== true) throw invalid(file, v.err.msg, v.err.line || 1, { column: v.err.col, reason: v.err.code });
  let doc: XmlNode[];
  try {
    doc = xmlParser().parse(text) as XmlNode[];
  } catch (err) {
    throw invalid(file, (err as Error).message);
  }
  const root = doc.find((n) => {
    const t = tagOf(n);
    return t !== undefined && t !== '#text';
  });
  const rootTag = root ? tagOf(root) : undefined;
  if (!root || (rootTag !== 'testsuites' && rootTag !== 'testsuite')) {
    throw invalid(file, `not JUnit XML: the root element is ${rootTag ? `<${rootTag}>` : 'missing'}, expected <testsuites> or <testsuite>`);
  }
  const st: ParseState = { file, xml: text, resolver: new FeatureResolver(opts.knownFeatures), cases: [], seen: 0 };
  if (opts.mapping) st.mapping = opts.mapping;
  walkSuite([root], { tags: [] }, st);
  return st.cases;
}

function mappingError(file: string, at: string, reason: string): TributaryError {
  return new TributaryError('config_invalid', `${file}: ${at ? `${at}: ` : ''}${reason}`, { file, path: at });
}

const REGEX_KEY = /^\/(.+)\/([a-z]*)$/s;

/**
 * Loads the feature mapping file:
 *
 * ```yaml
 * tests:
 *   "checkout > pays by card": [FEAT-101, smoke]   # exact test name or id
 *   "/^refunds /": [FEAT-102]                      # a regular expression, tried on id and name
 * ```
 */
export function loadMapping(file: string): FeatureMapping {
  let source: string;
  try {
    source = fs.readFileSync(file, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') throw new TributaryError('config_missing', `${file}: the feature mapping file does not exist`, { file });
    throw mappingError(file, '', `cannot read the feature mapping file: ${e.message}`);
  }
  const doc = yamlLib().parseDocument(source);
  const [e] = doc.errors;
  if (e) {
    const line = e.linePos?.[0]?.line;
    throw mappingError(file, line ? `line ${line}` : '', e.message.split('\n')[0] ?? 'invalid YAML');
  }
  const data: unknown = doc.toJS();
  const mapping: FeatureMapping = { file, exact: new Map(), patterns: [] };
  if (data === null || data === undefined) return mapping;
  if (typeof data !== 'object' || Array.isArray(data)) throw mappingError(file, '', 'expected a mapping with a "tests" key');
  for (const key of Object.keys(data)) {
    if (key !== 'tests') throw mappingError(file, key, 'unknown key (the mapping file has only "tests")');
  }
  const tests = (data as Record<string, unknown>).tests;
  if (tests === null || tests === undefined) return mapping;
  if (typeof tests !== 'object' || Array.isArray(tests)) {
    throw mappingError(file, 'tests', 'expected a mapping of test name, id or /regex/ to a list of features (and smoke)');
  }
  for (const [key, value] of Object.entries(tests as Record<string, unknown>)) {
    const at = `tests["${key}"]`;
    const items = typeof value === 'string' ? [value] : value;
    if (!Array.isArray(items) || items.length === 0 || !items.every((i) => typeof i === 'string' && i.trim() !== '')) {
      throw mappingError(file, at, 'expected a list of feature ids (and smoke), e.g. [FEAT-101, smoke]');
    }
    const target: MappingTarget = { features: [], smoke: false };
    for (const item of items as string[]) {
      const t = stripTag(item.trim());
      if (t.toLowerCase() === 'smoke') target.smoke = true;
      else if (/\s/.test(t)) throw mappingError(file, at, `"${item}" is not a feature id`);
      else if (!target.features.includes(t)) target.features.push(t);
    }
    const rx = REGEX_KEY.exec(key);
    if (rx) {
      let pattern: RegExp;
      try {
        const [, source, flags] = rx;
        pattern = new RegExp(must(source, `the pattern of ${at}`), must(flags, `the flags of ${at}`).replace(/[gy]/g, ''));
      } catch (err) {
        throw mappingError(file, at, `invalid regular expression: ${(err as Error).message}`);
      }
      mapping.patterns.push({ key, pattern, target });
    } else {
      mapping.exact.set(key, target);
    }
  }
  return mapping;
}

// XML 1.0 cannot carry these at all, not even as character references.
// eslint-disable-next-line no-control-regex
const XML_INVALID = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]/g;
const ATTR_SPECIAL = /[&<>"\n\r\t]/g;
const TEXT_SPECIAL = /[&<>]/g;
const ESCAPES: Record<string, string> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  '\n': '&#10;',
  '\r': '&#13;',
  '\t': '&#9;',
};
const escape = (c: string): string => must(ESCAPES[c], 'an XML escape for the character matched');

function xmlSafe(s: string): string {
  return clean(s).replace(XML_INVALID, '');
}

function attr(s: string): string {
  return xmlSafe(s).replace(ATTR_SPECIAL, escape);
}

function text(s: string): string {
  return xmlSafe(s).replace(TEXT_SPECIAL, escape);
}

function seconds(ms: number): string {
  return (Math.max(0, ms) / 1000).toFixed(3);
}

/**
 * One merged JUnit XML document of many cases (all shards of a run): testsuites/testsuite with totals,
 * each case's properties plus its features (`tributary.feature`) and smoke tag (`tributary.smoke`), and
 * failure/error/skipped elements. parseJUnit reads it back to the same cases.
 */
export function writeJUnit(cases: TestCaseResult[], suiteName: string): string {
  let failures = 0;
  let errors = 0;
  let skipped = 0;
  let totalMs = 0;
  const body: string[] = [];
  for (const c of cases) {
    if (c.status === 'failed') failures++;
    else if (c.status === 'errored') errors++;
    else if (c.status === 'skipped') skipped++;
    totalMs += c.durationMs;
    let open = `    <testcase name="${attr(c.name)}" classname="${attr(c.classname)}"`;
    if (c.file !== undefined) open += ` file="${attr(c.file)}"`;
    open += ` time="${seconds(c.durationMs)}"`;
    const inner: string[] = [];
    const props: string[] = [];
    for (const [k, v] of Object.entries(c.properties)) {
      if (!k.toLowerCase().startsWith(RESERVED_PREFIX)) props.push(`        <property name="${attr(k)}" value="${attr(v)}"/>`);
    }
    for (const f of c.features) props.push(`        <property name="tributary.feature" value="${attr(f)}"/>`);
    if (c.smoke) props.push('        <property name="tributary.smoke" value="true"/>');
    if (props.length > 0) inner.push('      <properties>', ...props, '      </properties>');
    if (c.status !== 'passed') {
      const el = c.status === 'failed' ? 'failure' : c.status === 'errored' ? 'error' : 'skipped';
      if (c.message !== undefined && c.message !== '') {
        inner.push(`      <${el} message="${attr(c.message)}">${text(c.message)}</${el}>`);
      } else {
        inner.push(`      <${el}/>`);
      }
    }
    body.push(inner.length > 0 ? `${open}>\n${inner.join('\n')}\n    </testcase>` : `${open}/>`);
  }
  const totals = `tests="${cases.length}" failures="${failures}" errors="${errors}" skipped="${skipped}" time="${seconds(totalMs)}"`;
  return [
    '<?xml version="1.0" encoding="UTF-8"?>',
    `<testsuites name="${attr(suiteName)}" ${totals}>`,
    `  <testsuite name="${attr(suiteName)}" ${totals}>`,
    ...body,
    '  </testsuite>',
    '</testsuites>',
    '',
  ].join('\n');
}
