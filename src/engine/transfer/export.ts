import type crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type pg from 'pg';
import { pgClient } from '../../db/pg.js';
import { releaseOrThrow } from '../../config/load.js';
import type { RunsRow } from '../../db/rows.js';
import { TributaryError } from '../../errors.js';
import { recordAudit } from '../kernel/audit.js';
import type { Actor, Ctx } from '../kernel/context.js';
import { cellsSelectSql, copyToFile } from '../kernel/copy.js';
import { isValidated, releaseState } from '../kernel/lifecycle.js';
import { firstRow, must } from '../kernel/must.js';
import { signingKey, writeSignedManifest, type PackageFile } from '../kernel/package.js';
import { ident, literal } from '../kernel/sql.js';
import { currentRunId, runTables } from '../kernel/workArea.js';
import { expectedFigures, sourceShape, type TableShape } from '../load/index.js';
import { chainHead, releaseEvents } from '../report/index.js';
import {
  LINEAGE_COLUMNS,
  TRANSFER_FORMAT,
  type LineageFile,
  type TransferManifest,
  type TransferTable,
  type TravelledEvent,
} from './manifest.js';

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

/** The signing key: --key first, then TRIBUTARY_SIGNING_KEY, then transfer.signingKeyFile. */
function exportKey(ctx: Ctx, keyFile?: string): crypto.KeyObject {
  const t = ctx.config.transfer;
  if (keyFile) return signingKey({ file: keyFile });
  return signingKey(t.signingKey ? { pem: t.signingKey } : t.signingKeyFile ? { file: t.signingKeyFile } : {});
}

/** Only a validated release, into a new (or empty) folder. */
async function checkExportable(ctx: Ctx, release: string, out: string): Promise<void> {
  const { state } = await releaseState(ctx.db.control, release);
  if (!isValidated(state)) {
    const what = `release ${release} is ${state}: only a validated release is exported; validate it first: tributary validate ${release}`;
    throw new TributaryError('gate_state', what, { release, state });
  }
  if (fs.existsSync(out) && fs.readdirSync(out).length > 0) {
    throw new TributaryError('usage', `${out} exists and is not empty: export into a new folder`, { dir: out });
  }
}

/** One export under way: its connections (one snapshot), the folder being written, the files written. */
interface Export {
  ctx: Ctx;
  runId: number;
  tmp: string;
  shapes: Map<string, TableShape>;
  expected: Awaited<ReturnType<typeof expectedFigures>>;
  clients: pg.Client[];
  snapshot: string;
  files: Record<string, PackageFile>;
}

/** A connection in a read-only repeatable-read transaction, adopting `snapshot` when given. */
async function open(x: Pick<Export, 'ctx' | 'clients'>, snapshot?: string): Promise<pg.Client> {
  const c = pgClient(x.ctx.db.controlParams as pg.ClientConfig);
  c.on('error', () => undefined);
  x.clients.push(c);
  await c.connect();
  await c.query('begin isolation level repeatable read read only');
  if (snapshot) await c.query(`set transaction snapshot ${literal(snapshot)}`);
  return c;
}

type Entity = Ctx['config']['entities'][number];

/** One entity's final rows into data/<entity>.copy.gz; its figures are the release's own. */
async function exportTable(x: Export, e: Entity): Promise<TransferTable> {
  const shape = must(x.shapes.get(e.name), `the shape of entity ${e.name}`);
  const file = `data/${e.name}.copy.gz`;
  const want = must(x.expected.get(e.name), `the expected figures of entity ${e.name}`);
  const t = runTables(x.runId);
  const where = `r.entity = ${literal(e.name)} and r.status = 'final'`;
  const select = `select ${cellsSelectSql('r.data', shape.columns)} from ${t.result} r where ${where}`;
  const written = await copyToFile(await open(x, x.snapshot), {
    failpoint: 'export.copy',
    select,
    file: path.join(x.tmp, file),
    what: `exporting ${e.name} (${e.table})`,
    expectedRows: want.then((w) => w.rows),
    details: { entity: e.name },
  });
  x.files[file] = { sha256: written.sha256, bytes: written.bytes };
  const figures = await want;
  const { columns, primaryKey, types } = shape;
  return { entity: e.name, table: e.table, file, rows: figures.rows, checksum: figures.checksum, columns, primaryKey, types };
}

/** One lineage table into lineage/<name>.copy.gz. */
async function exportLineage(x: Export, name: keyof typeof LINEAGE_COLUMNS, from: string): Promise<LineageFile> {
  const columns = LINEAGE_COLUMNS[name].map(([c]) => c);
  const file = `lineage/${name}.copy.gz`;
  const c = await open(x, x.snapshot);
  const rows = firstRow((await c.query<{ n: number }>(`select count(*)::int as n from ${from}`)).rows, `the row count of ${from}`).n;
  const select = `select ${columns.map(ident).join(', ')} from ${from}`;
  const what = `exporting the lineage (${name})`;
  const written = await copyToFile(c, { failpoint: 'export.copy', select, file: path.join(x.tmp, file), what, expectedRows: rows });
  x.files[file] = { sha256: written.sha256, bytes: written.bytes };
  return { file, rows, columns };
}

type Lineage = [LineageFile, LineageFile, LineageFile, LineageFile];

/** Every file, in parallel, each on its own connection in the one snapshot. */
async function exportFiles(x: Export): Promise<{ tables: TransferTable[]; lineage: Lineage }> {
  const t = runTables(x.runId);
  const settled = await Promise.allSettled([
    Promise.all(x.ctx.config.entities.map((e) => exportTable(x, e))),
    Promise.all([
      exportLineage(x, 'records', t.records),
      exportLineage(x, 'result', t.result),
      exportLineage(x, 'keyMap', t.keyMap),
      exportLineage(x, 'autoResolutions', `(select * from auto_resolutions where run_id = ${Number(x.runId)} order by id) a`),
    ] as const),
  ]);
  const [tables, lineage] = settled;
  if (tables.status === 'rejected') throw tables.reason;
  if (lineage.status === 'rejected') throw lineage.reason;
  return { tables: tables.value, lineage: lineage.value };
}

/** The run the package carries: when and by whom it ran, its steps and counts. */
function runOf(run: RunsRow): TransferManifest['run'] {
  return {
    id: Number(run.id),
    startedBy: run.started_by,
    startedAt: new Date(run.started_at).toISOString(),
    finishedAt: run.finished_at ? new Date(run.finished_at).toISOString() : null,
    steps: run.steps as Record<string, unknown>,
    counts: run.counts as Record<string, unknown>,
  };
}

/** The release's audit events, as numbers where the database gives texts, and the chain head. */
async function auditOf(ctx: Ctx, release: string): Promise<TransferManifest['audit']> {
  const events = (await releaseEvents(ctx.db.control, release)) as TravelledEvent[];
  const head = await chainHead(ctx.db.control);
  return {
    events: events.map((ev) => ({ ...ev, id: Number(ev.id), seq: ev.seq == null ? null : Number(ev.seq) })),
    head: head ? { ...head, seq: Number(head.seq), id: Number(head.id) } : null,
  };
}

/** The files, the conflicts and decisions of the run, all read in the one snapshot. */
async function exportSnapshot(x: Export, source: pg.Client): Promise<Pick<TransferManifest, 'tables' | 'lineage'>> {
  const { tables, lineage } = await exportFiles(x);
  const [records, result, keyMap, autoResolutions] = lineage;
  type Row = Record<string, unknown>;
  const conflicts = (await source.query<Row>('select * from conflicts where run_id = $1 order by id', [x.runId])).rows;
  const decisions = (await source.query<Row>('select * from decisions where run_id = $1 order by id', [x.runId])).rows;
  for (const c of x.clients) await c.query('commit');
  const json = (v: unknown) => JSON.parse(JSON.stringify(v)) as Record<string, unknown>[];
  return { tables, lineage: { records, result, keyMap, autoResolutions, conflicts: json(conflicts), decisions: json(decisions) } };
}

/** The package signed and renamed into place, and the export.finish event naming its digest. */
async function finishExport(
  x: Export,
  m: TransferManifest,
  out: string,
  key: crypto.KeyObject,
  actor: Actor,
  started: number,
): Promise<ExportResult> {
  const signed = writeSignedManifest(x.tmp, m, key);
  fs.renameSync(x.tmp, out);
  const ms = Math.round(performance.now() - started);
  const bytesOf = (file: string) => must(x.files[file], `the written file ${file}`).bytes;
  const summary = m.tables.map((t) => ({ entity: t.entity, table: t.table, rows: t.rows, checksum: t.checksum, bytes: bytesOf(t.file) }));
  const events = m.audit.events.length;
  await recordAudit(x.ctx.db.control, {
    actor,
    action: 'export.finish',
    release: m.release,
    subject: out,
    // the manifest (its digest covers its creation time): which package this export wrote
    details: { runId: x.runId, manifest: { digest: signed.digest, keyId: signed.keyId }, tables: summary, events, ms },
  });
  return { release: m.release, runId: x.runId, dir: out, digest: signed.digest, keyId: signed.keyId, tables: summary, events, ms };
}

export async function exportRelease(
  ctx: Ctx,
  release: string,
  opts: { actor: Actor; out: string; keyFile?: string },
): Promise<ExportResult> {
  releaseOrThrow(ctx.config, release);
  const started = performance.now();
  const key = exportKey(ctx, opts.keyFile);
  const out = path.resolve(opts.out);
  await checkExportable(ctx, release, out);
  const runId = await currentRunId(ctx, release);
  const shapes = new Map<string, TableShape>();
  for (const e of ctx.config.entities) shapes.set(e.name, await sourceShape(ctx, e));
  const expected = await expectedFigures(ctx, runId, shapes);
  const run = must(await ctx.db.control<RunsRow>('runs').where({ id: runId }).first(), `the row of run #${runId}`);

  const tmp = `${out}.partial-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(path.join(tmp, 'data'), { recursive: true });
  fs.mkdirSync(path.join(tmp, 'lineage'), { recursive: true });
  // one snapshot for every file: the first connection exports it, each file's own connection adopts it,
  // and the files are written in parallel
  const x: Export = { ctx, runId, tmp, shapes, expected, clients: [], snapshot: '', files: {} };
  try {
    const source = await open(x);
    x.snapshot = firstRow((await source.query<{ s: string }>('select pg_export_snapshot() as s')).rows, 'the exported snapshot').s;
    const { tables, lineage } = await exportSnapshot(x, source);
    const manifest: TransferManifest = {
      format: TRANSFER_FORMAT,
      release,
      createdAt: new Date().toISOString(),
      createdBy: opts.actor,
      run: runOf(run),
      releaseTag: ctx.config.tags.release,
      tables,
      lineage,
      audit: await auditOf(ctx, release),
      files: x.files,
    };
    return await finishExport(x, manifest, out, key, opts.actor, started);
  } catch (err) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw err;
  } finally {
    await Promise.all(x.clients.map((c) => c.end().catch(() => undefined)));
  }
}
