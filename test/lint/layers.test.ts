import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { expect, it } from 'vitest';
import { ROOT } from '../helpers.js';

/**
 * The layout rules are lint rules (eslint.config.js): run the project's lint on committed fixtures that
 * each break one rule, and expect each error. import-x/no-restricted-paths resolves its zones from the
 * working directory, so the lint runs in the fixtures' folder, as `npm run lint` runs in the project's.
 */
const FIXTURES = path.join(ROOT, 'test/fixtures/lint');

interface Message {
  file: string;
  rule: string;
  message: string;
}

function lintFixtures(): Message[] {
  const res = spawnSync(process.execPath, [path.join(ROOT, 'node_modules/eslint/bin/eslint.js'), '--config', path.join(ROOT, 'eslint.config.js'), '--format', 'json', '.'], {
    cwd: FIXTURES,
    encoding: 'utf8',
  });
  expect(res.status, res.stderr).toBe(1);
  const results = JSON.parse(res.stdout) as { filePath: string; messages: { ruleId: string; message: string }[] }[];
  return results.flatMap((r) => r.messages.map((m) => ({ file: path.relative(FIXTURES, r.filePath), rule: m.ruleId, message: m.message })));
}

it('reports each broken layout rule in the fixtures, and nothing in the files that keep them', () => {
  const messages = lintFixtures();
  const by = (file: string) => messages.filter((m) => m.file === file).map((m) => `${m.rule}: ${m.message}`);
  // a cycle of value imports: the maintained rule and ours
  expect(by('src/engine/kernel/cycle-a.ts')).toEqual(
    expect.arrayContaining([expect.stringMatching(/^import-x\/no-cycle/), expect.stringMatching(/^tributary\/no-import-cycle: Import cycle: src\/engine\/kernel\/cycle-a.ts → src\/engine\/kernel\/cycle-b.ts → /)]),
  );
  // a cycle through type-only imports, which import-x/no-cycle does not follow
  expect(by('src/engine/kernel/type-a.ts')).toEqual([expect.stringMatching(/^tributary\/no-import-cycle: Import cycle: src\/engine\/kernel\/type-a.ts → src\/engine\/kernel\/type-b.ts/)]);
  // the engine knows nothing of Slack
  expect(by('src/engine/gate/slack.ts')).toEqual([expect.stringMatching(/^no-restricted-imports: .*@slack\/bolt.*The engine knows nothing of Slack/)]);
  // nor where a Slack message was posted: that record is the Slack adapter's
  expect(by('src/engine/nightly/placement.ts')).toEqual([
    expect.stringMatching(/^no-restricted-syntax: The engine knows nothing of Slack: slack_messages is the Slack adapter's/),
    expect.stringMatching(/^no-restricted-syntax: The engine knows nothing of Slack: slack_messages is the Slack adapter's/),
  ]);
  // a phase imports another phase only through its entry module
  expect(by('src/engine/review/internals.ts')).toEqual([expect.stringMatching(/^import-x\/no-restricted-paths: .*consolidate\/detect\.js.*entry module \(src\/engine\/consolidate\/index\.ts\)/)]);
  expect(by('src/engine/review/entry.ts')).toEqual([]);
  // the kernel imports no phase, not even through its entry module
  expect(by('src/engine/kernel/phase.ts')).toEqual([expect.stringMatching(/^import-x\/no-restricted-paths: .*The kernel imports no phase/)]);
  expect(by('src/engine/consolidate/detect.ts')).toEqual([]);
  // the command table knows no adapter: neither Slack, nor commander, nor the adapters' modules
  expect(by('src/commands/slack.ts')).toEqual([expect.stringMatching(/^no-restricted-imports: .*@slack\/bolt.*Slack listeners live in src\/slack/)]);
  expect(by('src/commands/commander.ts')).toEqual([expect.stringMatching(/^no-restricted-imports: .*commander.*wired in src\/cli/)]);
  expect(by('src/commands/adapter.ts')).toEqual([expect.stringMatching(/^import-x\/no-restricted-paths: .*imports none of them/)]);
  expect(by('src/slack/listener.ts')).toEqual([]);
});
