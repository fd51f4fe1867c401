import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { ROOT } from '../helpers.js';

/**
 * `npm run demo` as a newcomer runs it: the compiled demo on its own embedded PostgreSQL (password
 * authentication, as on a fresh clone), in a directory of its own holding the demo's config and files.
 * It must take R2 through every step to the end, then review R3 at scale.
 */
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tributary-demo-'));
fs.chmodSync(dir, 0o755);

afterAll(async () => {
  // the demo stops its server when it ends; a failed run may have left it: stop it through its postmaster
  const pidFile = path.join(dir, '.tributary/pg/pgdata/postmaster.pid');
  if (fs.existsSync(pidFile)) {
    try {
      process.kill(Number(fs.readFileSync(pidFile, 'utf8').split('\n')[0]), 'SIGINT');
    } catch {
      // already gone
    }
    for (let i = 0; i < 300 && fs.existsSync(pidFile); i++) await new Promise((r) => setTimeout(r, 100));
  }
  fs.rmSync(dir, { recursive: true, force: true });
});

it('npm run demo goes from tag & lock, through the two-sided transfer, to the rolled-back deployment and the audit summary, on the embedded server', async () => {
  fs.copyFileSync(path.join(ROOT, 'tributary.yml'), path.join(dir, 'tributary.yml'));
  fs.symlinkSync(path.join(ROOT, 'demo'), path.join(dir, 'demo'));
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of ['DATABASE_URL', 'TRIBUTARY_CONFIG', 'TRIBUTARY_AUDIT_KEY', 'TRIBUTARY_FAILPOINTS']) delete env[k];
  const child = spawn(process.execPath, [path.join(ROOT, 'dist/src/demo/run.js')], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  expect(code, out).toBe(0);
  expect(out).toMatch(/conflicts detected\s+14/);
  expect(out).toMatch(/auto-resolved\s+8 \(57\.1%\)/);
  // what the rules decided is listed with its rules, and one of them is overruled by a reviewer
  expect(out).toMatch(/Automatic resolutions of R2 \(run #\d+\): 8 — /);
  expect(out).toMatch(/A-\d{3} {2}newest-wins +users email=ivan@corp\.example/);
  expect(out).toMatch(/overruled by cli:demo-reviewer: keep version 1 — demo: ST-1's Ivan is the reference profile/);
  expect(out).toMatch(/by newest-wins\s+\d+/);
  // the hybrid estate: exported on this control database, imported on a second one with no ST envs
  expect(out).toMatch(/Cloud side: Exported R2 \(run #\d+\) to .*signed by key [0-9a-f]{16}/);
  expect(out).toMatch(/Imported R2 \(cloud run #\d+, here run #\d+\) into staging .*verified against the signed manifest/);
  expect(out).toMatch(/Travelled chain intact: \d+ event\(s\) of R2 from package/);
  expect(out).toContain('R2 tier 1 on staging');
  expect(out).toContain('Identical; the app runs r2-1.0.0 again.');
  expect(out).toContain('Try: npx tributary why users 1500 --release R2');
  // review at scale (release R3): a pattern decided at once, undone, and the rule it teaches accepted and applied
  expect(out).toMatch(/PD-\d+ \(P-1, users\/core-conflict\/role\/ST-1\+ST-2\) decided by cli:demo-reviewer: keep ST-1's version for 6 conflict\(s\)/);
  expect(out).toMatch(/PD-\d+ undone \(R3\): C-001, C-002, C-003, C-004, C-005, C-006 open again/);
  expect(out).toContain('Accepted by cli:demo-qa-lead into .tributary/scale-demo.yml (npx tributary policy accept keep-st-1-users-role)');
  expect(out).toContain('The next consolidation of R3: 0 conflict(s) for review; keep-st-1-users-role decided 6.');
  expect(out).toMatch(/e\.g\. users 900\d: keep-st-1-users-role \(scoped rule\)/);
}, 300_000);
