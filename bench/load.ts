import fs from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import { stringify } from 'yaml';
import { loadConfig } from '../src/config/load.js';
import { openDatabase, paramsFromUrl } from '../src/db/connect.js';
import { consolidate } from '../src/engine/consolidate/index.js';
import { loadRelease } from '../src/engine/load/index.js';
import { exportRelease, generateKeyPair, importRelease } from '../src/engine/transfer/index.js';
import { tagRelease } from '../src/engine/gate/index.js';
import { validateRelease } from '../src/engine/validate/index.js';
import { logger } from '../src/log.js';
import { configDoc, generate, onAdmin, plan, RELEASE, runBench, withDatabase, withScratch } from './dataset.js';

/**
 * `npm run bench:load [-- --quick | --rows N --envs K]`: validation plus load plus verification of a
 * consolidated release (default 1,000,000 rows over 8 envs) into staging, against the baseline of a
 * plain COPY of the same rows into tables of the same shape, measured in one run on the same server
 * (BENCH_DATABASE_URL, or an embedded PostgreSQL). Target: engine / baseline ≤ 3.
 *
 * Then the hybrid estate's transfer: export of the loaded release as a signed package (gzip COPY files,
 * lineage, manifest, signature) and its import into a second control database's staging (verified), against
 * the baseline of a plain COPY of the same rows to a local file and COPY back from it. Target: ≤ 3.
 */

const TARGET_RATIO = 3;

function options() {
  const { values } = parseArgs({ options: { quick: { type: 'boolean', default: false }, rows: { type: 'string' }, envs: { type: 'string' } }, strict: true });
  const base = values.quick ? { rows: 20_000, envs: 4 } : { rows: 1_000_000, envs: 8 };
  const int = (v: string | undefined, d: number) => {
    if (v === undefined) return d;
    const n = Number(v.replace(/_/g, ''));
    if (!Number.isInteger(n) || n < 1) throw new Error(`not a positive integer: ${v}`);
    return n;
  };
  return { rows: int(values.rows, base.rows), envs: int(values.envs, base.envs), clean: true };
}

/** The transfer's baseline: COPY staging's rows of the release to a local file each, and COPY them back into copies. */
async function fileBaseline(url: string, dir: string, tables: string[]): Promise<number> {
  const c = new pg.Client(paramsFromUrl(url));
  await c.connect();
  try {
    await c.query('create schema filebase');
    for (const table of tables) await c.query(`create table filebase.${table} (like staging.${table} including all)`);
    const t0 = performance.now();
    for (const table of tables) {
      const file = path.join(dir, `baseline-${table}.copy`);
      await pipeline(c.query(copyTo(`copy (select * from staging.${table} where release = '${RELEASE}') to stdout`)), fs.createWriteStream(file));
      await pipeline(fs.createReadStream(file), c.query(copyFrom(`copy filebase.${table} from stdin`)));
    }
    return performance.now() - t0;
  } finally {
    await c.end();
  }
}

/** The baseline: COPY the release's rows of every ST table into tables of the same shape, nothing else. */
async function baseline(url: string, envs: number): Promise<number> {
  const target = new pg.Client(paramsFromUrl(url));
  await target.connect();
  try {
    await target.query('create schema baseline');
    for (const table of ['users', 'accounts']) await target.query(`create table baseline.${table} (like st1.${table} including all)`);
    const t0 = performance.now();
    for (const table of ['users', 'accounts']) {
      for (let i = 1; i <= envs; i++) {
        const source = new pg.Client(paramsFromUrl(url));
        await source.connect();
        try {
          await pipeline(
            source.query(copyTo(`copy (select * from st${i}.${table} where release = '${RELEASE}') to stdout`)),
            target.query(copyFrom(`copy baseline.${table} from stdin`)),
          );
        } finally {
          await source.end();
        }
      }
    }
    return performance.now() - t0;
  } finally {
    await target.end();
  }
}

async function main(): Promise<void> {
  logger().level = 'warn';
  const opts = options();
  await withScratch('load', async ({ server, url, dir, defer }) => {
    console.log(`Tributary load benchmark on ${server.label}`);
    await generate(url, opts, plan(opts));
    const doc = configDoc(url, opts.envs) as { environments: Record<string, unknown> };
    doc.environments.staging = { role: 'staging', schema: 'staging' };
    const file = path.join(dir, 'tributary.yml');
    fs.writeFileSync(file, stringify(doc));
    const config = loadConfig({ file, env: { TRIBUTARY_AUDIT_KEY: 'bench-audit-key-0123456789' } });
    const db = await openDatabase(config);
    defer(() => db.close());
    const ctx = { config, db };
    await tagRelease(ctx, RELEASE, { actor: 'cli:bench' });
    const run = await consolidate(ctx, RELEASE, { actor: 'cli:bench' });
    if (run.counts.manual > 0) throw new Error(`the bench data left ${run.counts.manual} conflicts to review`);

    const baseMs = await baseline(url, opts.envs);
    const t0 = performance.now();
    const report = await validateRelease(ctx, RELEASE, { actor: 'cli:bench' });
    const validateMs = performance.now() - t0;
    const t1 = performance.now();
    const loaded = await loadRelease(ctx, RELEASE, { actor: 'cli:bench' });
    const loadMs = performance.now() - t1;
    const rows = loaded.tables.reduce((n, t) => n + t.rows, 0);
    const ratio = (validateMs + loadMs) / baseMs;
    const s = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
    console.log(`data:     ${opts.rows.toLocaleString('en-US')} rows over ${opts.envs} ST envs, consolidated to ${rows.toLocaleString('en-US')} rows`);
    console.log(`baseline  COPY the rows into tables of the same shape   ${s(baseMs)}`);
    console.log(`engine    validate (${report.counts.open} open findings)                ${s(validateMs)}`);
    console.log(`engine    load + verify (${loaded.tables.map((t) => `${t.table} ${t.rows}`).join(', ')})   ${s(loadMs)}`);
    console.log('');
    console.log(`figure                                 value   target`);
    console.log(`engine / baseline (validate + load)    ${ratio.toFixed(2).padEnd(7)} ≤ ${TARGET_RATIO}     ${ratio <= TARGET_RATIO ? 'PASS' : 'MISS'}`);

    // the hybrid estate: export, then import into a second control database (no sources) on the same server
    const tables = loaded.tables.map((t) => t.table);
    const fileMs = await fileBaseline(url, dir, tables);
    const keys = generateKeyPair(path.join(dir, 'keys'), 'bench');
    const t2 = performance.now();
    const exported = await exportRelease(ctx, RELEASE, { actor: 'cli:bench', out: path.join(dir, 'package'), keyFile: keys.privateFile });
    const exportMs = performance.now() - t2;
    const onpremDb = `${new URL(url).pathname.slice(1)}_onprem`;
    await onAdmin(server, (c) => c.query(`create database ${onpremDb}`));
    defer(() => onAdmin(server, (c) => c.query(`drop database if exists ${onpremDb} with (force)`)));
    const onpremDoc = { ...configDoc(withDatabase(server.adminUrl, onpremDb), 0), environments: { staging: { role: 'staging', schema: 'staging' } }, transfer: { publicKeys: [keys.publicFile] } };
    const onpremFile = path.join(dir, 'onprem.yml');
    fs.writeFileSync(onpremFile, stringify(onpremDoc));
    const onpremConfig = loadConfig({ file: onpremFile, env: { TRIBUTARY_AUDIT_KEY: 'bench-onprem-audit-key-0123456789' } });
    const onprem = await openDatabase(onpremConfig);
    defer(() => onprem.close());
    const t3 = performance.now();
    const imported = await importRelease({ config: onpremConfig, db: onprem }, RELEASE, { actor: 'cli:bench', from: exported.dir });
    const importMs = performance.now() - t3;
    const bytes = fs.readdirSync(path.join(exported.dir, 'data')).reduce((n, f) => n + fs.statSync(path.join(exported.dir, 'data', f)).size, 0);
    const transferRatio = (exportMs + importMs) / fileMs;
    console.log('');
    console.log(`baseline  COPY staging's rows to local files and back    ${s(fileMs)}`);
    console.log(`engine    export (signed package, ${(bytes / 1e6).toFixed(1)} MB of gzip data)  ${s(exportMs)}`);
    console.log(`engine    import + verify (${imported.tables.map((t) => `${t.table} ${t.rows}`).join(', ')})   ${s(importMs)}`);
    console.log('');
    console.log(`figure                                 value   target`);
    console.log(`engine / baseline (export + import)    ${transferRatio.toFixed(2).padEnd(7)} ≤ ${TARGET_RATIO}     ${transferRatio <= TARGET_RATIO ? 'PASS' : 'MISS'}`);
  });
}

runBench('load', main);
