import os from 'node:os';
import { loadConfig } from '../config/load.js';
import { openDatabase } from '../db/connect.js';
import { consolidate } from '../engine/consolidate.js';
import { listConflicts } from '../engine/conflicts.js';
import { resultCounts } from '../engine/status.js';
import { tagRelease } from '../engine/tag.js';
import { redact } from '../log.js';
import { renderCounts, renderQueue, renderTag } from '../views/text.js';
import { seedDemo } from './seed.js';

/** `npm run demo`: builds the demo team on the embedded PostgreSQL, then tags, locks and consolidates R2. */
async function main(): Promise<void> {
  const config = loadConfig();
  const db = await openDatabase(config);
  const actor = `cli:${os.userInfo().username}`;
  try {
    const where = config.database.url ? 'the PostgreSQL server in DATABASE_URL' : `the embedded PostgreSQL (data in ${config.database.dataDir})`;
    console.log(`Tributary demo on ${where}`);
    if (db.auditKey.file) console.log(`Audit trail key: ${db.auditKey.source === 'generated' ? 'generated now into' : 'the one generated into'} ${db.auditKey.file} (keep it to verify the trail; TRIBUTARY_AUDIT_KEY overrides it)`);
    console.log('');
    const seeded = await seedDemo(config, db);
    console.log(`Seeded ${config.sources.length} ST environments with ${seeded.records} records of release R2 (ST-5 tagged by the installed trigger).\n`);
    const ctx = { config, db };
    const tag = await tagRelease(ctx, 'R2', { actor });
    console.log(`${renderTag(tag)}\n`);
    const run = await consolidate(ctx, 'R2', { actor });
    const counts = await resultCounts(ctx, run.runId);
    console.log(renderCounts('R2', counts, run.steps));
    console.log('');
    console.log(renderQueue('R2', await listConflicts(ctx, 'R2')));
    console.log('\nNext: npx tributary conflicts show R2 C-001, then npx tributary decide C-001 --keep 1 --rationale "…"');
  } finally {
    await db.close();
  }
}

main().catch((err: unknown) => {
  console.error(`demo failed: ${redact(err instanceof Error ? err.message : String(err))}`);
  process.exitCode = 1;
});
