#!/usr/bin/env node
// The CLI as compiled to dist/ (npm install and npm ci build it through the prepare script).
import fs from 'node:fs';

const entry = new URL('../dist/src/cli/main.js', import.meta.url);
if (!fs.existsSync(entry)) {
  process.stderr.write('tributary: the CLI is not built yet: run `npm run build` (npm install does it)\n');
  process.exit(2);
}
const { run } = await import(entry.href);
run(process.argv.slice(2));
