import fs from 'node:fs';
import path from 'node:path';
import type pg from 'pg';
import { pgClient } from '../../db/pg.js';
import { releaseOrThrow } from '../../config/load.js';
import { TributaryError } from '../../errors.js';
import { recordAudit } from '../kernel/audit.js';
import type { Actor, Ctx } from '../kernel/context.js';
import { cellsSelectSql, copyToFile } from '../kernel/copy.js';
import { isValidated, releaseState } from '../kernel/lifecycle.js';
import { signingKey, writeSignedManifest, type PackageFile } from '../kernel/package.js';
import { ident, literal } from '../kernel/sql.js';
import { currentRunId, runTables } from '../kernel/workArea.js';
import { expectedFigures, sourceShape, type TableShape } from '../load/index.js';
import { chainHead, releaseEvents } from '../report/index.js';
import { LINEAGE_COLUMNS, TRANSFER_FORMAT, type LineageFile, type TransferManifest, type TransferTable, type TravelledEvent } from './manifest.js';

/**
 * `tributary export R2 --out <dir>` (cloud side): the validated release as a signed transfer package. The
 * rows leave the control database as their cells' texts (the verified copy's carrier), each table into a
 * gzip file hashed as it is written; the manifest's counts and checksums are the release's own (those
 * validation computed, kernel/checksum.ts), never computed from the files. The package is written into a
 * temporary folder beside `out` and renamed into place when complete: nothing half written.
 */
export interface ExportResult {
  release: string;
  runId: number;
  dir: string;
  digest: string;
  keyId: string;
  tables: { entity: string; table: string; rows: number; checksum: string; bytes: number }[];
  events: number;
  ms: number;
}

export async function exportRelease(ctx: Ctx, release: string, opts: { actor: Actor; out: string; keyFile?: string }): Promise<ExportResult> {
  releaseOrThrow(ctx.config, release);
  const started = performance.now();
  // --key first, then TRIBUTARY_SIGNING_KEY, then transfer.signingKeyFile
  const t0 = ctx.config.transfer;
  const key = signingKey(opts.keyFile ? { file: opts.keyFile } : t0.signingKey ? { pem: t0.signingKey } : t0.signingKeyFile ? { file: t0.signingKeyFile } : {});
  const { state } = await releaseState(ctx.db.control, release);
  if (!isValidated(state)) {
    throw new TributaryError('gate_state', `release ${release} is ${state}: only a validated release is exported; validate it first: tributary validate ${release}`, { release, state });
  }
  const out = path.resolve(opts.out);
  if (fs.existsSync(out) && fs.readdirSync(out).length > 0) throw new TributaryError('usage', `${out} exists and is not empty: export into a new folder`, { dir: out });
  const runId = await currentRunId(ctx, release);
  const t = runTables(runId);
  const shapes = new Map<string, TableShape>();
  for (const e of ctx.config.entities) shapes.set(e.name, await sourceShape(ctx, e));
  const expected = await expectedFigures(ctx, runId, shapes);
  const run = await ctx.db.control('runs').where({ id: runId }).first();

  const tmp = `${out}.partial-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(path.join(tmp, 'data'), { recursive: true });
  fs.mkdirSync(path.join(tmp, 'lineage'), { recursive: true });
  // one snapshot for every file: the first connection exports it, each file's own connection adopts it,
  // and the files are written in parallel
  const clients: pg.Client[] = [];
  const open = async (snapshot?: string): Promise<pg.Client> => {
    const c = pgClient(ctx.db.controlParams as pg.ClientConfig);
    c.on('error', () => undefined);
    clients.push(c);
    await c.connect();
    await c.query('begin isolation level repeatable read read only');
    if (snapshot) await c.query(`set transaction snapshot ${literal(snapshot)}`);
    return c;
  };
  const files: Record<string, PackageFile> = {};
  try {
    const source = await open();
    const snapshot = (await source.query<{ s: string }>('select pg_export_snapshot() as s')).rows[0]!.s;
    const table = async (e: (typeof ctx.config.entities)[number]): Promise<TransferTable> => {
      const shape = shapes.get(e.name)!;
      const file = `data/${e.name}.copy.gz`;
      const want = expected.get(e.name)!;
      const written = await copyToFile(await open(snapshot), {
        failpoint: 'export.copy',
        select: `select ${cellsSelectSql('r.data', shape.columns)} from ${t.result} r where r.entity = ${literal(e.name)} and r.status = 'final'`,
        file: path.join(tmp, file),
        what: `exporting ${e.name} (${e.table})`,
        expectedRows: want.then((w) => w.rows),
        details: { entity: e.name },
      });
      files[file] = { sha256: written.sha256, bytes: written.bytes };
      const figures = await want;
      return { entity: e.name, table: e.table, file, rows: figures.rows, checksum: figures.checksum, columns: shape.columns, primaryKey: shape.primaryKey, types: shape.types };
    };
    const lineage = async (name: keyof typeof LINEAGE_COLUMNS, from: string): Promise<LineageFile> => {
      const columns = LINEAGE_COLUMNS[name].map(([c]) => c);
      const file = `lineage/${name}.copy.gz`;
      const c = await open(snapshot);
      const rows = (await c.query<{ n: number }>(`select count(*)::int as n from ${from}`)).rows[0]!.n;
      const written = await copyToFile(c, { failpoint: 'export.copy', select: `select ${columns.map(ident).join(', ')} from ${from}`, file: path.join(tmp, file), what: `exporting the lineage (${name})`, expectedRows: rows });
      files[file] = { sha256: written.sha256, bytes: written.bytes };
      return { file, rows, columns };
    };
    const settled = await Promise.allSettled([
      Promise.all(ctx.config.entities.map(table)),
      Promise.all([
        lineage('records', t.records),
        lineage('result', t.result),
        lineage('keyMap', t.keyMap),
        lineage('autoResolutions', `(select * from auto_resolutions where run_id = ${Number(runId)} order by id) a`),
      ] as const),
    ]);
    const failed = settled.find((x) => x.status === 'rejected');
    if (failed) throw (failed as PromiseRejectedResult).reason;
    const tables = (settled[0] as PromiseFulfilledResult<TransferTable[]>).value;
    const [records, result, keyMap, autoResolutions] = (settled[1] as PromiseFulfilledResult<[LineageFile, LineageFile, LineageFile, LineageFile]>).value;
    const conflicts = (await source.query('select * from conflicts where run_id = $1 order by id', [runId])).rows as Record<string, unknown>[];
    const decisions = (await source.query('select * from decisions where run_id = $1 order by id', [runId])).rows as Record<string, unknown>[];
    for (const c of clients) await c.query('commit');

    const events = (await releaseEvents(ctx.db.control, release)) as TravelledEvent[];
    const head = await chainHead(ctx.db.control);
    const manifest: TransferManifest = {
      format: TRANSFER_FORMAT,
      release,
      createdAt: new Date().toISOString(),
      createdBy: opts.actor,
      run: {
        id: runId,
        startedBy: run.started_by,
        startedAt: new Date(run.started_at).toISOString(),
        finishedAt: run.finished_at ? new Date(run.finished_at).toISOString() : null,
        steps: run.steps,
        counts: run.counts,
      },
      releaseTag: ctx.config.tags.release,
      tables,
      lineage: { records, result, keyMap, autoResolutions, conflicts: JSON.parse(JSON.stringify(conflicts)), decisions: JSON.parse(JSON.stringify(decisions)) },
      audit: { events: events.map((ev) => ({ ...ev, id: Number(ev.id), seq: ev.seq == null ? null : Number(ev.seq) })), head: head ? { ...head, seq: Number(head.seq), id: Number(head.id) } : null },
      files,
    };
    const signed = writeSignedManifest(tmp, manifest, key);
    fs.renameSync(tmp, out);
    const ms = Math.round(performance.now() - started);
    const summary = tables.map((x) => ({ entity: x.entity, table: x.table, rows: x.rows, checksum: x.checksum, bytes: files[x.file]!.bytes }));
    await recordAudit(ctx.db.control, {
      actor: opts.actor,
      action: 'export.finish',
      release,
      subject: out,
      // the manifest (its digest covers its creation time): which package this export wrote
      details: { runId, manifest: { digest: signed.digest, keyId: signed.keyId }, tables: summary, events: events.length, ms },
    });
    return { release, runId, dir: out, digest: signed.digest, keyId: signed.keyId, tables: summary, events: events.length, ms };
  } catch (err) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw err;
  } finally {
    await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
  }
}
