import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { TributaryError } from '../../../src/errors.js';
import { loadMapping, parseJUnit, writeJUnit } from '../../../src/engine/tiers/junit.js';
import type { TestCaseResult } from '../../../src/engine/tiers/types.js';

/** JUnit XML as real runners write it (captured from node:test, pytest 9 and vitest 4 runs; Surefire 3 by its schema). */

const NODE_TEST = `<?xml version="1.0" encoding="utf-8"?>
<testsuites>
	<testcase name="adds @FEAT-101" time="0.000686" classname="test"/>
	<testsuite name="checkout [FEAT-102]" time="0.002498" disabled="0" errors="0" tests="5" failures="1" skipped="2" hostname="vm">
		<testcase name="pays &lt;card> &amp; cash @smoke" time="0.000160" classname="test"/>
		<testcase name="fails" time="0.000800" classname="test" failure="Expected values to be strictly equal:1 !== 2">
			<failure type="testCodeFailure" message="Expected values to be strictly equal:1 !== 2">
Error [ERR_TEST_FAILURE]: Expected values to be strictly equal:

1 !== 2

    at async Promise.all (index 0) {
  code: 'ERR_TEST_FAILURE',
  failureType: 'testCodeFailure',
  cause: AssertionError [ERR_ASSERTION]: Expected values to be strictly equal:
      at TestContext.&lt;anonymous> (file:///tmp/jx/a.test.mjs:6:30)
}
			</failure>
		</testcase>
		<testcase name="skipped one" time="0.000070" classname="test">
			<skipped type="skipped" message="not now"/>
		</testcase>
		<testcase name="todo one" time="0.000094" classname="test">
			<skipped type="todo" message="true"/>
		</testcase>
		<testsuite name="inner" time="0.000173" disabled="0" errors="0" tests="1" failures="0" skipped="0" hostname="vm">
			<testcase name="deep" time="1.250087" classname="test"/>
		</testsuite>
	</testsuite>
	<testcase name="throws" time="0.000117" classname="test" failure="boomsecond line">
		<failure type="testCodeFailure">
[Error [ERR_TEST_FAILURE]: boom
second line] {
  code: 'ERR_TEST_FAILURE',
}
		</failure>
	</testcase>
	<!-- tests 7 -->
	<!-- suites 2 -->
	<!-- pass 3 -->
	<!-- fail 2 -->
	<!-- cancelled 0 -->
	<!-- skipped 1 -->
	<!-- todo 1 -->
	<!-- duration_ms 78.158212 -->
</testsuites>
`;

const PYTEST = `<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests"><testsuite name="pytest" errors="1" failures="1" skipped="1" tests="6" time="0.023" timestamp="2026-11-25T14:17:57.919501+00:00" hostname="vm"><testcase classname="tests.test_x" name="test_ok" file="tests/test_x.py" line="1" time="0.412"><properties><property name="feature" value="FEAT-101" /></properties></testcase><testcase classname="tests.test_x" name="test_fail" file="tests/test_x.py" line="3" time="0.000"><properties><property name="features" value="FEAT-101, FEAT-102" /><property name="owner" value="qa" /></properties><failure message="AssertionError: one is not two&#10;assert 1 == 2">record_property = &lt;function record_property.&lt;locals&gt;.append_property at 0x7f9c3999e8e0&gt;

    def test_fail(record_property):
        record_property("features", "FEAT-101, FEAT-102")
&gt;       assert 1 == 2, "one is not two"
E       AssertionError: one is not two

tests/test_x.py:6: AssertionError</failure></testcase><testcase classname="tests.test_x" name="test_skip" file="tests/test_x.py" line="6" time="0.000"><skipped type="pytest.skip" message="later">/tmp/jx/tests/test_x.py:7: later</skipped></testcase><testcase classname="tests.test_x" name="test_err" file="tests/test_x.py" line="12" time="0.000"><error message="failed on setup with &quot;RuntimeError: fixture broke&quot;">@pytest.fixture
    def broken():
&gt;       raise RuntimeError("fixture broke")
E       RuntimeError: fixture broke</error></testcase><testcase classname="tests.test_x" name="test_param[1-2]" file="tests/test_x.py" line="14" time="0.000"><properties><property name="tags" value="smoke,FEAT-103" /></properties></testcase><testcase classname="tests.test_x.TestGroup" name="test_in_class" file="tests/test_x.py" line="18" time="0.000" /></testsuite></testsuites>`;

const VITEST = `<?xml version="1.0" encoding="UTF-8" ?>
<testsuites name="vitest tests" tests="4" failures="1" errors="0" time="0.006208134">
    <testsuite name="b.test.ts" timestamp="2026-11-25T14:18:06.764Z" hostname="vm" tests="4" failures="1" errors="0" skipped="1" time="0.006208134">
        <testcase classname="test/b.test.ts" name="checkout [FEAT-102] &gt; card &gt; pays @smoke" time="0.001024939">
        </testcase>
        <testcase classname="test/b.test.ts" name="checkout [FEAT-102] &gt; card &gt; fails" time="0.004076626">
            <failure message="expected 1 to be 2 // Object.is equality" type="AssertionError">
AssertionError: expected 1 to be 2 // Object.is equality

- Expected
+ Received

 ❯ b.test.ts:5:35
            </failure>
        </testcase>
        <testcase classname="test/b.test.ts" name="checkout [FEAT-102] &gt; card &gt; skipped" time="0">
            <skipped/>
        </testcase>
        <testcase classname="test/b.test.ts" name="top level" time="0.000110355">
        </testcase>
    </testsuite>
</testsuites>
`;

const SUREFIRE = `<?xml version="1.0" encoding="UTF-8"?>
<testsuite xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:noNamespaceSchemaLocation="https://maven.apache.org/surefire/maven-surefire-plugin/xsd/surefire-test-report-3.0.xsd" version="3.0" name="com.example.PaymentTest" time="1,234.5" tests="4" errors="1" skipped="1" failures="1">
  <properties>
    <property name="java.version" value="17.0.2"/>
    <property name="feature" value="FEAT-999"/>
  </properties>
  <testcase name="refundsInFull" classname="com.example.PaymentTest" time="1,234.5"/>
  <testcase name="rejectsExpiredCard" classname="com.example.PaymentTest" time="0.012">
    <failure message="expected: &lt;DECLINED&gt; but was: &lt;APPROVED&gt;" type="org.opentest4j.AssertionFailedError"><![CDATA[org.opentest4j.AssertionFailedError: expected: <DECLINED> but was: <APPROVED>
	at com.example.PaymentTest.rejectsExpiredCard(PaymentTest.java:42)]]></failure>
    <system-out><![CDATA[charging <card> & logging]]></system-out>
  </testcase>
  <testcase name="connectsToGateway" classname="com.example.PaymentTest" time="0.003">
    <error type="java.net.ConnectException"><![CDATA[

java.net.ConnectException: Connection refused
	at java.base/sun.nio.ch.Net.connect0(Native Method)]]></error>
    <system-err><![CDATA[WARN retrying]]></system-err>
  </testcase>
  <testcase name="settlesOvernight" classname="com.example.PaymentTest" time="0">
    <skipped/>
  </testcase>
</testsuite>
`;

const byName = (cases: TestCaseResult[], name: string): TestCaseResult => {
  const c = cases.find((x) => x.name === name);
  if (!c) throw new Error(`no case named ${name}`);
  return c;
};

function thrown(fn: () => unknown): TributaryError {
  try {
    fn();
  } catch (err) {
    if (err instanceof TributaryError) return err;
    throw err;
  }
  throw new Error('expected a TributaryError');
}

const dirs: string[] = [];
function tmpFile(name: string, content: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tributary-junit-'));
  dirs.push(dir);
  const file = path.join(dir, name);
  fs.writeFileSync(file, content);
  return file;
}
afterAll(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

describe('parseJUnit: JUnit XML as real runners write it', () => {
  it('node:test: cases straight under <testsuites>, nested suites (their tags apply), skipped and todo, comments', () => {
    const cases = parseJUnit(NODE_TEST, 'node.xml');
    expect(cases.map((c) => c.name)).toEqual(['adds @FEAT-101', 'pays <card> & cash @smoke', 'fails', 'skipped one', 'todo one', 'deep', 'throws']);
    expect(byName(cases, 'adds @FEAT-101')).toEqual({
      id: 'test::adds @FEAT-101',
      name: 'adds @FEAT-101',
      classname: 'test',
      status: 'passed',
      durationMs: 1,
      features: ['FEAT-101'],
      smoke: false,
      properties: {},
    });
    const pays = byName(cases, 'pays <card> & cash @smoke');
    expect([pays.status, pays.smoke, pays.features]).toEqual(['passed', true, ['FEAT-102']]);
    const fails = byName(cases, 'fails');
    expect([fails.status, fails.message, fails.features]).toEqual(['failed', 'Expected values to be strictly equal:1 !== 2', ['FEAT-102']]);
    expect(byName(cases, 'skipped one')).toMatchObject({ status: 'skipped', message: 'not now' });
    expect(byName(cases, 'todo one').status).toBe('skipped');
    expect(byName(cases, 'deep')).toMatchObject({ status: 'passed', durationMs: 1250, features: ['FEAT-102'] });
    // no message attribute: the first non-empty line of the body
    expect(byName(cases, 'throws')).toMatchObject({ status: 'failed', message: '[Error [ERR_TEST_FAILURE]: boom', features: [] });
  });

  it('pytest: classname.module, features as properties, &#10; in messages, error, skipped, tags property, file kept', () => {
    const cases = parseJUnit(PYTEST, 'py.xml');
    expect(cases).toHaveLength(6);
    expect(byName(cases, 'test_ok')).toEqual({
      id: 'tests.test_x::test_ok',
      name: 'test_ok',
      classname: 'tests.test_x',
      file: 'tests/test_x.py',
      status: 'passed',
      durationMs: 412,
      features: ['FEAT-101'],
      smoke: false,
      properties: { feature: 'FEAT-101' },
    });
    expect(byName(cases, 'test_fail')).toMatchObject({
      status: 'failed',
      message: 'AssertionError: one is not two\nassert 1 == 2',
      features: ['FEAT-101', 'FEAT-102'],
      properties: { features: 'FEAT-101, FEAT-102', owner: 'qa' },
    });
    expect(byName(cases, 'test_skip')).toMatchObject({ status: 'skipped', message: 'later' });
    expect(byName(cases, 'test_err')).toMatchObject({ status: 'errored', message: 'failed on setup with "RuntimeError: fixture broke"' });
    // a parametrised name "[1-2]" is no feature tag; the tags property carries smoke and a feature
    expect(byName(cases, 'test_param[1-2]')).toMatchObject({ features: ['FEAT-103'], smoke: true });
    expect(byName(cases, 'test_in_class').id).toBe('tests.test_x.TestGroup::test_in_class');
  });

  it('vitest: classname is the file, describe blocks joined with " > ", <skipped/>, whitespace-only bodies', () => {
    const cases = parseJUnit(VITEST, 'vitest.xml');
    expect(cases.map((c) => [c.id, c.status, c.features, c.smoke])).toEqual([
      ['test/b.test.ts::checkout [FEAT-102] > card > pays @smoke', 'passed', ['FEAT-102'], true],
      ['test/b.test.ts::checkout [FEAT-102] > card > fails', 'failed', ['FEAT-102'], false],
      ['test/b.test.ts::checkout [FEAT-102] > card > skipped', 'skipped', ['FEAT-102'], false],
      ['test/b.test.ts::top level', 'passed', [], false],
    ]);
    expect(cases[1]!.message).toBe('expected 1 to be 2 // Object.is equality');
    expect(cases[2]!.message).toBeUndefined();
    expect(cases[0]!.durationMs).toBe(1);
  });

  it('JUnit/Maven Surefire: <testsuite> root, <error> with CDATA body, <skipped/>, system-out, suite properties stay out of cases', () => {
    const cases = parseJUnit(SUREFIRE, 'TEST-com.example.PaymentTest.xml');
    expect(cases.map((c) => [c.name, c.status])).toEqual([
      ['refundsInFull', 'passed'],
      ['rejectsExpiredCard', 'failed'],
      ['connectsToGateway', 'errored'],
      ['settlesOvernight', 'skipped'],
    ]);
    expect(cases[0]).toMatchObject({ id: 'com.example.PaymentTest::refundsInFull', durationMs: 1_234_500, features: [], properties: {} });
    expect(cases[1]!.message).toBe('expected: <DECLINED> but was: <APPROVED>');
    expect(cases[2]!.message).toBe('java.net.ConnectException: Connection refused');
    expect(cases[3]!.message).toBeUndefined();
  });

  it('trims long messages to 500 characters, and names without a classname are the id', () => {
    const long = 'x'.repeat(2000);
    const [c] = parseJUnit(`<testsuite><testcase name="solo"><failure message="${long}"/></testcase></testsuite>`, 'a.xml');
    expect(c!.id).toBe('solo');
    expect(c!.message).toHaveLength(500);
  });
});

describe('parseJUnit: features', () => {
  const xml = `<testsuites><testsuite name="s">
    <testcase classname="c" name="a [FEAT-101] [SMOKE]"/>
    <testcase classname="c" name="b @feat-102 @Smoke mail me@example.com"/>
    <testcase classname="c" name="c [FEAT-7, FEAT-101]"><properties><property name="tributary.feature" value="FEAT-300"/><property name="tag" value="@FEAT-101"/></properties></testcase>
    <testcase classname="c" name="d [WIP-1]"/>
    <testcase classname="c" name="e"><properties><property name="tags" value="smoke, nightly"/></properties></testcase>
  </testsuite></testsuites>`;

  it('without knownFeatures any tag shaped like a feature id counts; smoke in any case; deduped and sorted', () => {
    const cases = parseJUnit(xml, 'f.xml');
    expect(cases.map((c) => [c.name.split(' ')[0], c.features, c.smoke])).toEqual([
      ['a', ['FEAT-101'], true],
      ['b', ['feat-102'], true],
      ['c', ['FEAT-101', 'FEAT-300', 'FEAT-7'], false],
      ['d', ['WIP-1'], false],
      ['e', [], true],
    ]);
    // Tributary's own properties are not the runner's
    expect(cases[2]!.properties).toEqual({ tag: '@FEAT-101' });
  });

  it('with knownFeatures only known ones count (spelled as the plan spells them); explicit feature properties always count', () => {
    const cases = parseJUnit(xml, 'f.xml', { knownFeatures: new Set(['FEAT-101', 'FEAT-102']) });
    expect(cases.map((c) => c.features)).toEqual([['FEAT-101'], ['FEAT-102'], ['FEAT-101', 'FEAT-300'], [], []]);
  });

  it('the mapping file adds features and smoke by exact name, exact id or /regex/', () => {
    const file = tmpFile(
      'mapping.yml',
      ['tests:', '  "e": [FEAT-201]', '  "c::d [WIP-1]": [FEAT-202, smoke]', '  "/^[ab] /i": [FEAT-203]', '  "/nomatch$/": FEAT-204', ''].join('\n'),
    );
    const mapping = loadMapping(file);
    expect(mapping.exact.size).toBe(2);
    expect(mapping.patterns.map((p) => p.key)).toEqual(['/^[ab] /i', '/nomatch$/']);
    const cases = parseJUnit(xml, 'f.xml', { knownFeatures: new Set(['FEAT-101', 'FEAT-201', 'FEAT-202', 'FEAT-203']), mapping });
    expect(cases.map((c) => [c.features, c.smoke])).toEqual([
      [['FEAT-101', 'FEAT-203'], true],
      [['FEAT-203'], true],
      [['FEAT-101', 'FEAT-300'], false],
      [['FEAT-202'], true],
      [['FEAT-201'], true],
    ]);
  });
});

describe('parseJUnit: malformed documents', () => {
  it('names the file and the line of malformed XML', () => {
    const xml = '<?xml version="1.0"?>\n<testsuites>\n  <testsuite name="s">\n    <testcase name="a" classname="c">\n  </testsuite>\n</testsuites>\n';
    const err = thrown(() => parseJUnit(xml, '/work/out/shard-3.xml'));
    expect(err.code).toBe('junit_invalid');
    expect(err.message).toMatch(/^\/work\/out\/shard-3\.xml:5: .*testcase/);
    expect(err.details).toMatchObject({ file: '/work/out/shard-3.xml', line: 5 });
  });

  it('a truncated file (the runner died mid-write) and an empty file', () => {
    const truncated = PYTEST.slice(0, PYTEST.indexOf('<testcase classname="tests.test_x" name="test_skip"'));
    const err = thrown(() => parseJUnit(truncated, 'cut.xml'));
    expect(err.code).toBe('junit_invalid');
    expect(err.message).toMatch(/^cut\.xml:\d+: /);
    expect(thrown(() => parseJUnit('  \n', 'empty.xml')).message).toBe('empty.xml: the file is empty: no JUnit XML');
    expect(thrown(() => parseJUnit('not xml at all', 'text.xml')).message).toMatch(/^text\.xml:1: /);
  });

  it('rejects a document without a <testsuites>/<testsuite> root, naming the file', () => {
    const err = thrown(() => parseJUnit('<?xml version="1.0"?>\n<html><body>502 Bad Gateway</body></html>', 'report.xml'));
    expect(err.code).toBe('junit_invalid');
    expect(err.message).toBe('report.xml: not JUnit XML: the root element is <html>, expected <testsuites> or <testsuite>');
  });

  it('rejects a testcase without a name, with its line', () => {
    const err = thrown(() => parseJUnit('<testsuites>\n<testsuite>\n<testcase name="ok"/>\n<testcase classname="c"/>\n</testsuite>\n</testsuites>', 'n.xml'));
    expect(err.message).toBe('n.xml:4: <testcase> #2 has no name attribute');
  });
});

describe('loadMapping', () => {
  it('a bad regular expression names the file and the key', () => {
    const file = tmpFile('bad-regex.yml', 'tests:\n  "/checkout(/": [FEAT-101]\n');
    const err = thrown(() => loadMapping(file));
    expect(err.code).toBe('config_invalid');
    expect(err.message).toContain(`${file}: tests["/checkout(/"]: invalid regular expression`);
  });

  it('a wrong shape names the file and the key', () => {
    const cases: [string, string][] = [
      ['tests:\n  "a": { feature: FEAT-1 }\n', 'tests["a"]: expected a list'],
      ['tests:\n  "a": []\n', 'tests["a"]: expected a list'],
      ['tests:\n  "a": [FEAT-1, 7]\n', 'tests["a"]: expected a list'],
      ['tests: [a, b]\n', 'tests: expected a mapping'],
      ['test:\n  a: [FEAT-1]\n', 'test: unknown key'],
      ['- a\n', 'expected a mapping with a "tests" key'],
      ['tests:\n  a: [FEAT-1\n', 'line'],
    ];
    for (const [content, expected] of cases) {
      const file = tmpFile('shape.yml', content);
      const err = thrown(() => loadMapping(file));
      expect(err.code).toBe('config_invalid');
      expect(err.message.startsWith(`${file}: `)).toBe(true);
      expect(err.message).toContain(expected);
    }
  });

  it('a missing file says so; an empty one maps nothing', () => {
    const err = thrown(() => loadMapping('/nonexistent/mapping.yml'));
    expect(err.code).toBe('config_missing');
    expect(err.message).toContain('/nonexistent/mapping.yml');
    const empty = loadMapping(tmpFile('empty.yml', ''));
    expect([empty.exact.size, empty.patterns.length]).toEqual([0, 0]);
  });
});

describe('writeJUnit', () => {
  it('writes one merged document that parseJUnit reads back identically', () => {
    const cases = [...parseJUnit(NODE_TEST, 'node.xml'), ...parseJUnit(PYTEST, 'py.xml'), ...parseJUnit(VITEST, 'v.xml'), ...parseJUnit(SUREFIRE, 's.xml')];
    const tricky: TestCaseResult = {
      id: 'a&b <c>::quote " apos \' tab\there',
      name: 'quote " apos \' tab\there',
      classname: 'a&b <c>',
      file: 'dir/"odd" & <file>.ts',
      status: 'errored',
      durationMs: 98_765,
      message: 'line one\r\nline two ]]> <done> & "x"',
      features: ['FEAT-1', 'FEAT-2'],
      smoke: true,
      // fromEntries makes "__proto__" an own property, as parseJUnit does
      properties: Object.fromEntries([
        ['multi\nline', 'a\nb'],
        ['empty', ''],
        ['__proto__', 'kept'],
      ]),
    };
    const all = [...cases, tricky];
    const xml = writeJUnit(all, 'R2 tier 1 & "friends"');
    expect(xml).toMatch(/^<\?xml version="1.0" encoding="UTF-8"\?>\n<testsuites name="R2 tier 1 &amp; &quot;friends&quot;" tests="22" failures="5" errors="3" skipped="5" time="/);
    const back = parseJUnit(xml, 'merged.xml');
    expect(back).toEqual(all);
    expect(back[back.length - 1]!.properties.__proto__).toBe('kept');
    // and again: stable
    expect(writeJUnit(back, 'R2 tier 1 & "friends"')).toBe(xml);
  });

  it('keeps out what XML cannot carry (terminal colours, control characters)', () => {
    const c: TestCaseResult = { id: 'x', name: 'x', classname: '', status: 'failed', durationMs: 0, message: '\u001b[31mred\u001b[39m\u0007 text', features: [], smoke: false, properties: {} };
    const [back] = parseJUnit(writeJUnit([c], 's'), 'm.xml');
    expect(back!.message).toBe('red text');
  });
});

describe('parseJUnit at size', () => {
  it('parses 10,000 test cases correctly, fast', () => {
    const parts: string[] = ['<?xml version="1.0" encoding="UTF-8"?>', '<testsuites>'];
    for (let s = 0; s < 100; s++) {
      parts.push(`<testsuite name="suite ${s}" tests="100">`);
      for (let i = 0; i < 100; i++) {
        const n = s * 100 + i;
        const body =
          n % 10 === 0
            ? `<failure message="expected &lt;${n}&gt; &amp; more">trace ${n}</failure>`
            : n % 10 === 1
              ? '<skipped/>'
              : n % 10 === 2
                ? `<error>\n\nboom ${n}\n</error>`
                : '';
        const props = n % 3 === 0 ? `<properties><property name="feature" value="FEAT-${n % 40}"/></properties>` : '';
        parts.push(`<testcase classname="pkg.Mod${s}" name="case ${n} [FEAT-${n % 50}]${n % 7 === 0 ? ' @smoke' : ''}" time="${(n % 1000) / 1000}">${props}${body}</testcase>`);
      }
      parts.push('</testsuite>');
    }
    parts.push('</testsuites>');
    const xml = parts.join('\n');
    const t0 = performance.now();
    const cases = parseJUnit(xml, 'big.xml');
    const ms = performance.now() - t0;
    expect(cases).toHaveLength(10_000);
    expect(new Set(cases.map((c) => c.id)).size).toBe(10_000);
    const count = (s: string) => cases.filter((c) => c.status === s).length;
    expect([count('passed'), count('failed'), count('skipped'), count('errored')]).toEqual([7000, 1000, 1000, 1000]);
    expect(cases.filter((c) => c.smoke)).toHaveLength(1429);
    expect(cases[4272]).toEqual({
      id: 'pkg.Mod42::case 4272 [FEAT-22]',
      name: 'case 4272 [FEAT-22]',
      classname: 'pkg.Mod42',
      status: 'errored',
      durationMs: 272,
      message: 'boom 4272',
      features: ['FEAT-22', 'FEAT-32'],
      smoke: false,
      properties: { feature: 'FEAT-32' },
    });
    expect(cases[9990]).toMatchObject({ status: 'failed', message: 'expected <9990> & more', durationMs: 990 });
    // the benchmark's bar is 1 s on a quiet machine; this only catches quadratic work on a busy one
    expect(ms).toBeLessThan(3000);
  });
});
