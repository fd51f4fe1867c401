import js from '@eslint/js';
import { createNodeResolver, importX } from 'eslint-plugin-import-x';
import tseslint from 'typescript-eslint';
import noImportCycle from './lint/no-import-cycle.js';

/**
 * The engine's phases (src/engine/<phase>): another module imports a phase only through its entry module
 * (index.ts). src/engine/kernel holds what every phase uses and imports no phase.
 */
export const PHASES = ['gate', 'consolidate', 'review', 'validate', 'load', 'transfer', 'tiers', 'promote', 'deploy', 'nightly', 'report'];

/** The layers, lowest first: a module imports its own layer and the ones below it, never one above. */
const BASE = ['./src/config', './src/db', './src/errors.ts', './src/log.ts', './src/lazy.ts'];
const ABOVE_ENGINE = ['./src/views', './src/commands', './src/slack', './src/cli', './src/demo', './src/start.ts'];
const ADAPTERS = ['./src/slack', './src/cli', './src/demo', './src/start.ts'];

const OUTSIDE_ENGINE = ['./src/cli', './src/commands', './src/slack', './src/views', './src/config', './src/db', './src/demo', './src/start.ts', './src/errors.ts', './src/log.ts', './src/lazy.ts', './bench'];
const phaseZones = PHASES.map((p) => ({
  target: [...PHASES.filter((q) => q !== p).map((q) => `./src/engine/${q}`), './src/engine/kernel', ...OUTSIDE_ENGINE],
  from: `./src/engine/${p}`,
  except: ['./index.ts'],
  message: `Import the ${p} phase through its entry module (src/engine/${p}/index.ts).`,
}));

const layerZones = [
  { target: BASE, from: ['./src/engine', ...ABOVE_ENGINE], message: 'config, db, log and errors sit below the engine: they import nothing above them.' },
  { target: './src/engine', from: ABOVE_ENGINE, message: 'The engine knows nothing of views, commands or adapters.' },
  { target: './src/engine/kernel', from: PHASES.map((p) => `./src/engine/${p}`), message: 'The kernel imports no phase.' },
  { target: './src/views', from: ['./src/commands', './src/cli', './src/demo', './src/start.ts', './src/db'], message: 'Views are pure functions of domain objects.' },
  // views build Block Kit with the Slack identifiers, which live in one module (src/slack/ids.ts)
  { target: './src/views', from: './src/slack', except: ['./ids.ts'], message: 'Views use only the Slack identifiers of the Slack adapter.' },
  { target: './src/commands', from: ADAPTERS, message: 'The command table serves the adapters: it imports none of them (Slack, the CLI, the demo, the start script).' },
];

export default tseslint.config(
  { ignores: ['node_modules/**', '.tributary/**', 'bin/**', 'dist/**', 'test/fixtures/lint/**', '.restructure/**'] },
  js.configs.recommended,
  {
    // plain Node scripts: the demo's test suite and the runners' stand-ins in tests and benchmarks
    files: ['**/*.mjs'],
    languageOptions: { globals: { process: 'readonly', performance: 'readonly', console: 'readonly', URL: 'readonly', setInterval: 'readonly', setTimeout: 'readonly' } },
  },
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-restricted-imports': 'off',
    },
  },
  {
    files: ['src/**/*.ts', 'bench/**/*.ts'],
    plugins: { 'import-x': importX, tributary: { rules: { 'no-import-cycle': noImportCycle } } },
    settings: {
      'import-x/resolver-next': [createNodeResolver({ extensions: ['.ts', '.js', '.mjs'], extensionAlias: { '.js': ['.ts', '.js'] } })],
      'import-x/extensions': ['.ts', '.js', '.mjs'],
      'import-x/parsers': { '@typescript-eslint/parser': ['.ts'] },
    },
    rules: {
      'import-x/no-cycle': ['error', { ignoreExternal: true }],
      // import-x/no-cycle skips type-only imports; this one follows them too
      'tributary/no-import-cycle': 'error',
      'import-x/no-restricted-paths': ['error', { zones: [...phaseZones, ...layerZones] }],
    },
  },
  {
    // the engine keeps functions short (at most 60 lines, blank lines and comments not counted), lines at
    // most 140 characters and no non-null assertions (a check that says what it expected instead:
    // src/engine/kernel/must.ts); test/lint/strict-directives.test.ts refuses an eslint-disable of these
    files: ['src/engine/**/*.ts'],
    rules: {
      'max-lines-per-function': ['error', { max: 60, skipBlankLines: true, skipComments: true }],
      'max-len': ['error', { code: 140 }],
      '@typescript-eslint/no-non-null-assertion': 'error',
    },
  },
  {
    files: ['src/engine/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [{ group: ['@slack/*'], message: 'The engine knows nothing of Slack.' }] }],
      // where each Slack message was posted is the Slack adapter's one record (src/slack/messages.ts)
      'no-restricted-syntax': [
        'error',
        { selector: 'Literal[value=/slack_messages/]', message: 'The engine knows nothing of Slack: slack_messages is the Slack adapter\'s (src/slack/messages.ts).' },
        { selector: 'TemplateElement[value.raw=/slack_messages/]', message: 'The engine knows nothing of Slack: slack_messages is the Slack adapter\'s (src/slack/messages.ts).' },
      ],
    },
  },
  {
    files: ['src/commands/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: [{ name: 'commander', message: 'The command table knows no adapter: commander is wired in src/cli.' }],
          patterns: [{ group: ['@slack/*'], message: 'The command table knows no adapter: Slack listeners live in src/slack.' }],
        },
      ],
    },
  },
  {
    files: ['src/views/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { paths: ['knex', 'objection', 'pg'], patterns: [{ group: ['../db/*'], message: 'Views are pure functions: no I/O.' }] }],
    },
  },
);
