import { execFileSync } from 'node:child_process';
import path from 'node:path';

/**
 * Tests that start real processes run the compiled output (dist/), what users run: bring it up to date
 * first (an incremental build: a second or two when nothing changed), however the tests were started.
 */
export function setup(): void {
  const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
  execFileSync(process.execPath, [path.join(root, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json'], { cwd: root, stdio: 'inherit' });
}
