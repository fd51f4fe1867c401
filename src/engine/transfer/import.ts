import path from 'node:path';
import type { Knex } from 'knex';
import type pg from 'pg';
import { pgClient } from '../../db/pg.js';
import { envByRole, releaseOrThrow, type EnvSpec } from '../../config/load.js';
import type { ConflictsRow, DecisionsRow, RunsRow, TransferPackagesRow } from '../../db/rows.js';
import { TributaryError } from '../../errors.js';
import { redact } from '../../log.js';
import { recordAudit } from '../kernel/audit.js';
import { byColumnName } from '../kernel/checksum.js';
import { envError, type Actor, type Ctx } from '../kernel/context.js';
import { copyFromFile, requireChecksum, targetChecksum } from '../kernel/copy.js';
import { failpoint } from '../kernel/failpoints.js';
import { nextState, releaseState, transition } from '../kernel/lifecycle.js';
import { readVerifiedPackage, trustedKeys, type VerifiedPackage } from '../kernel/package.js';
import { must } from '../kernel/must.js';
import { ident, literal, qualified } from '../kernel/sql.js';
import { ensureUserTypes } from '../kernel/types.js';
import { runTables } from '../kernel/workArea.js';
import { assertReloadConfirmed, createTableSql, type LoadedTable } from '../load/index.js';
import { LINEAGE_COLUMNS, TRANSFER_FORMAT, type LineageFile, type TransferManifest, type TransferTable } from './manifest.js';

/**
 * `tributary load R2 --from <dir>` (on premises): verifies the package (signature by a trusted key, each
 * file's size and SHA-256, the release, a later run than staging holds), then loads it: staging's rows in
 * one transaction, committed only when each table's count and checksum equal the manifest's; the lineage
 * (work area, conflicts, decisions), the travelled audit events and the package itself in the control
 * database's transaction, with the release "validated (imported)" and then loaded, and one audit event
 * naming the package's digest. A refusal names the file and what failed; nothing is loaded.
 */
export interface ImportResult {
  release: string;
  runId: number;
  sourceRunId: number;
  env: string;
  digest: string;
  keyId: string;
  tables: LoadedTable[];
  events: number;
  ms: number;
}

const CHANGED = "changed while it was being loaded: its SHA-256 is no longer the manifest's";

const refuse = (file: string, what: string, details: Record<string, unknown> = {}) =>
  new TributaryError('package_refused', `${file}: ${what}; nothing was loaded`, { file, ...details });

/** The knex transaction's own connection (a pg client): COPY runs on it, inside the transaction. */
async function connectionOf(trx: Knex.Transaction): Promise<pg.Client> {
  return (await (trx.client as { acquireConnection(): Promise<pg.Client> }).acquireConnection()) as pg.Client;
}

/** The package's tables against this side's dataset: the same entities, each with its release tag. */
function checkTables(ctx: Ctx, m: TransferManifest, manifestFile: string): void {
  const declared = ctx.config.entities.map((e) => e.name);
  const carried = m.tables.map((t) => t.entity);
  const missing = declared.filter((e) => !carried.includes(e));
  const extra = carried.filter((e) => !declared.includes(e));
  if (missing.length || extra.length) {
    const problems = [missing.length ? `missing ${missing.join(', ')}` : '', extra.length ? `not declared here: ${extra.join(', ')}` : ''];
    throw refuse(manifestFile, `its tables do not match this side's dataset (${ctx.config.file}): ${problems.filter(Boolean).join('; ')}`);
  }
  const tag = ctx.config.tags.release;
  for (const t of m.tables) {
    if (!t.columns.some((c) => c.name === tag)) {
      throw refuse(manifestFile, `table ${t.table} (${t.entity}) has no release tag column ${tag}`);
    }
  }
}

/** The SHA-256 the manifest lists for one of its files. */
function listedSha(m: TransferManifest, file: string): string {
  return must(m.files[file], `the manifest's entry of ${file}`).sha256;
}

type LineageName = keyof typeof LINEAGE_COLUMNS;

async function loadLineage(conn: pg.Client, pkg: SignedPackage, runId: number, what: LineageName, f: LineageFile): Promise<void> {
  const t = runTables(runId);
  const cols = LINEAGE_COLUMNS[what];
  const names = cols.map(([c]) => c);
  const file = path.join(pkg.dir, f.file);
  if (f.columns.join(',') !== names.join(',')) throw refuse(file, `columns ${f.columns.join(', ')}; expected ${names.join(', ')}`);
  // the rules' resolutions join this side's table (under the run made here); the rest form its work area
  const auto = what === 'autoResolutions';
  const table = auto ? 'pg_temp.transfer_auto_resolutions' : { records: t.records, result: t.result, keyMap: t.keyMap }[what];
  // the result also has the work area's data columns (null here: staging holds the rows)
  const extra = what === 'result' ? ', data jsonb, raw_refs jsonb' : '';
  const columnsSql = cols.map(([c, type]) => `${ident(c)} ${type}`).join(', ');
  await conn.query(`create ${auto ? 'temp ' : ''}table ${table} (${columnsSql}${extra})${auto ? ' on commit drop' : ''}`);
  const read = await copyFromFile(conn, { failpoint: 'import.lineage', file, table, columns: names });
  if (read.sha256 !== listedSha(pkg.manifest, f.file)) throw refuse(file, CHANGED);
  const rows = read.rows;
  if (rows !== f.rows) throw refuse(file, `${rows} row(s), the manifest lists ${f.rows}`);
  if (auto) {
    const list = names.map(ident).join(', ');
    await conn.query(`insert into auto_resolutions (run_id, ${list}) select ${Number(runId)}, ${list} from ${table}`);
  }
}

/** Every lineage file into the control database's transaction, one after the other. */
async function loadAllLineage(conn: pg.Client, pkg: SignedPackage, runId: number): Promise<void> {
  const l = pkg.manifest.lineage;
  await loadLineage(conn, pkg, runId, 'records', l.records);
  await loadLineage(conn, pkg, runId, 'result', l.result);
  await loadLineage(conn, pkg, runId, 'keyMap', l.keyMap);
  if (l.autoResolutions) await loadLineage(conn, pkg, runId, 'autoResolutions', l.autoResolutions);
}

type SignedPackage = VerifiedPackage<TransferManifest> & { keyId: string; signature: string };

/** Only a package of a later consolidation run than staging holds. */
async function checkNewer(ctx: Ctx, release: string, m: TransferManifest, manifestFile: string): Promise<void> {
  const held = (await ctx.db.control<TransferPackagesRow>('transfer_packages').where({ release }).max('source_run_id as run').first()) as
    | { run: number | null }
    | undefined;
  if (held?.run != null && m.run.id <= held.run) {
    const what = `the package holds consolidation run #${m.run.id} of ${release}, but staging already holds run #${held.run}`;
    throw refuse(manifestFile, `${what}: only a package of a later run is loaded`, { run: m.run.id, held: held.run });
  }
}

/** The package, verified and checked against this side (release, dataset, run); a refusal is audited. */
async function verified(ctx: Ctx, release: string, opts: { actor: Actor; from: string }): Promise<SignedPackage> {
  const trusted = trustedKeys(ctx.config.transfer.publicKeys, `${ctx.config.file}: transfer.publicKeys`);
  if (trusted.size === 0) {
    const fix = "add the cloud side's public key (the .pub file tributary keys generate wrote)";
    const what = 'transfer.publicKeys lists no key, so no package can be trusted';
    throw new TributaryError('config_invalid', `${ctx.config.file}: ${what}: ${fix}`);
  }
  try {
    const pkg = await readVerifiedPackage<TransferManifest>(opts.from, trusted, TRANSFER_FORMAT);
    const m = pkg.manifest;
    const manifestFile = path.join(pkg.dir, 'manifest.json');
    if (m.release !== release) {
      throw refuse(manifestFile, `the package is for release ${m.release}, not ${release}`, { release: m.release });
    }
    checkTables(ctx, m, manifestFile);
    await checkNewer(ctx, release, m, manifestFile);
    const keyId = must(pkg.keyId, 'the signing key of a signed package');
    return { ...pkg, keyId, signature: must(pkg.signature, 'the signature of a signed package') };
  } catch (err) {
    if (err instanceof TributaryError && err.code === 'package_refused') {
      const details = { from: path.resolve(opts.from), error: err.message };
      await recordAudit(ctx.db.control, { actor: opts.actor, action: 'load.refused', release, subject: String(err.details.file), details });
    }
    throw err;
  }
}

/** One import under way: the package, staging's connection, and the table being written (for errors). */
interface Import {
  ctx: Ctx;
  release: string;
  actor: Actor;
  pkg: SignedPackage;
  staging: EnvSpec;
  target: pg.Client;
  started: number;
  current: string;
}

/** Staging: one transaction (left open for the caller to commit), every table checked against the manifest. */
async function loadStaging(x: Import): Promise<LoadedTable[]> {
  const { ctx, staging, target, pkg, release } = x;
  const m = pkg.manifest;
  try {
    await target.connect();
  } catch (err) {
    throw envError(ctx, staging, err);
  }
  await target.query('begin');
  if (staging.schema) await target.query(`create schema if not exists ${ident(staging.schema)}`);
  const byEntity = new Map(m.tables.map((t) => [t.entity, t]));
  const tableOf = (entity: string) => must(byEntity.get(entity), `the package's table of entity ${entity}`);
  for (const e of ctx.config.entities) {
    const t = tableOf(e.name);
    x.current = qualified(staging.schema, e.table);
    await ensureUserTypes(target, t.types, x.current);
    await target.query(createTableSql(x.current, { columns: t.columns, primaryKey: t.primaryKey, types: t.types }));
  }
  for (const e of [...ctx.config.entities].reverse()) {
    x.current = qualified(staging.schema, e.table);
    await target.query(`delete from ${x.current} where ${ident(ctx.config.tags.release)} = $1`, [release]);
  }
  const tables: LoadedTable[] = [];
  for (const e of ctx.config.entities) tables.push(await loadStagingTable(x, e, tableOf(e.name)));
  return tables;
}

/** One table's rows into staging, then its count and checksum against the manifest's. */
async function loadStagingTable(x: Import, e: { name: string; table: string }, t: TransferTable): Promise<LoadedTable> {
  const { ctx, staging, target, pkg, release } = x;
  x.current = qualified(staging.schema, e.table);
  const file = path.join(pkg.dir, t.file);
  const read = await copyFromFile(target, { failpoint: 'import.copy', file, table: x.current, columns: t.columns.map((c) => c.name) });
  if (read.sha256 !== listedSha(pkg.manifest, t.file)) throw refuse(file, CHANGED);
  const byName = t.columns.map((c) => ({ name: c.name, type: c.type })).sort(byColumnName);
  const got = await targetChecksum(target, staging.schema, e.table, byName, `${ident(ctx.config.tags.release)} = ${literal(release)}`);
  const want = { rows: t.rows, checksum: t.checksum };
  requireChecksum(`staging table ${x.current} (${e.name}), from ${file}`, got, want, { table: x.current, file: t.file });
  return { entity: e.name, table: e.table, rows: got.rows, checksum: got.checksum };
}

/** The run of kind import that holds what the package brought. */
async function insertImportRun(trx: Knex.Transaction, x: Import): Promise<number> {
  const m = x.pkg.manifest;
  const imported = { sourceRunId: m.run.id, digest: x.pkg.digest, keyId: x.pkg.keyId };
  const [runRow] = await trx<RunsRow>('runs')
    .insert({
      release: x.release,
      kind: 'import',
      status: 'done',
      started_by: x.actor,
      finished_at: trx.fn.now(),
      steps: JSON.stringify(m.run.steps ?? {}),
      counts: JSON.stringify({ ...m.run.counts, imported }),
    })
    .returning('id');
  return Number(must(runRow, 'the import run\'s id').id);
}

/** The cloud's conflicts and decisions under the run made here (decisions point at the new conflict ids). */
async function insertConflictsAndDecisions(trx: Knex.Transaction, x: Import, runId: number): Promise<void> {
  const m = x.pkg.manifest;
  const conflictIds = new Map<number, number>();
  for (const c of m.lineage.conflicts) {
    const { id, run_id: _run, detail, ...rest } = c as Pick<ConflictsRow, 'id' | 'run_id' | 'detail'>;
    const [row] = await trx<ConflictsRow>('conflicts').insert({ ...rest, run_id: runId, detail: JSON.stringify(detail) }).returning('id');
    conflictIds.set(id, Number(must(row, 'the imported conflict\'s id').id));
  }
  for (const d of m.lineage.decisions) {
    const { id: _id, conflict_id, run_id: _run, params, blast, ...rest } = d as Pick<
      DecisionsRow,
      'id' | 'conflict_id' | 'run_id' | 'params' | 'blast'
    >;
    const conflictId = conflictIds.get(conflict_id);
    if (conflictId === undefined) {
      throw refuse(path.join(x.pkg.dir, 'manifest.json'), `a decision names conflict id ${conflict_id}, which the package does not carry`);
    }
    const row = { ...rest, conflict_id: conflictId, run_id: runId, params: JSON.stringify(params), blast: JSON.stringify(blast) };
    await trx('decisions').insert(row);
  }
}

/** The package as it arrived and its travelled audit events (a chain of their own). Returns the events stored. */
async function recordPackage(trx: Knex.Transaction, x: Import, runId: number): Promise<number> {
  const { pkg, release } = x;
  const m = pkg.manifest;
  const [pkgRow] = await trx<TransferPackagesRow>('transfer_packages')
    .insert({
      release,
      digest: pkg.digest,
      key_id: pkg.keyId,
      source_run_id: m.run.id,
      run_id: runId,
      manifest: pkg.text,
      signature: pkg.signature,
      imported_by: x.actor,
    })
    .returning('id');
  const packageId = Number(must(pkgRow, 'the transfer package\'s id').id);
  const events = m.audit.events.filter((e) => e.seq != null);
  for (let i = 0; i < events.length; i += 500) {
    await trx('imported_audit_events').insert(
      events.slice(i, i + 500).map((e) => ({
        package_id: packageId,
        seq: e.seq,
        source_id: e.id,
        at: e.at,
        actor: e.actor,
        action: e.action,
        release: e.release,
        subject: e.subject,
        details: JSON.stringify(e.details),
        prev_hash: e.prev_hash,
        hash: e.hash,
      })),
    );
  }
  return events.length;
}

/** The loads recorded, the release "validated (imported)" then loaded, and the audit event. */
async function finishImport(trx: Knex.Transaction, x: Import, runId: number, tables: LoadedTable[], events: number): Promise<ImportResult> {
  const { pkg, release, staging } = x;
  const m = pkg.manifest;
  const ms = Math.round(performance.now() - x.started);
  const loaded = tables.map((t) => ({
    release,
    run_id: runId,
    env: staging.name,
    entity: t.entity,
    table_name: t.table,
    row_count: t.rows,
    checksum: t.checksum,
    loaded_by: x.actor,
  }));
  await trx('loads').insert(loaded);
  await transition(trx, release, 'import', { currentRunId: runId });
  await transition(trx, release, 'load');
  const head = m.audit.head?.hash ?? null;
  const packageDetails = { digest: pkg.digest, keyId: pkg.keyId, sourceRunId: m.run.id, events, head, from: pkg.dir };
  const details = { runId, ms, tables, package: packageDetails };
  await recordAudit(trx, { actor: x.actor, action: 'load.finish', release, subject: staging.name, details });
  return { release, runId, sourceRunId: m.run.id, env: staging.name, digest: pkg.digest, keyId: pkg.keyId, tables, events, ms };
}

/** The control database's transaction: the lineage beside staging's rows, both must succeed; staging commits first. */
async function importInTransaction(trx: Knex.Transaction, x: Import): Promise<ImportResult> {
  const runId = await insertImportRun(trx, x);
  const conn = await connectionOf(trx);
  // the lineage goes into the control database (its transaction's connection) while the rows go into
  // staging (a connection of its own): the two run side by side, and both must succeed
  const lineage = loadAllLineage(conn, x.pkg, runId);
  lineage.catch(() => undefined);
  let tables: LoadedTable[];
  try {
    tables = await loadStaging(x);
  } catch (err) {
    await lineage.catch(() => undefined);
    throw err;
  }
  x.current = 'lineage';
  await lineage;
  await insertConflictsAndDecisions(trx, x, runId);
  const events = await recordPackage(trx, x, runId);

  await x.target.query('commit');
  // staging committed, the control database not yet: the package was not recorded, so loading it again
  // replaces the release's rows
  await failpoint('import.after-staging-commit');
  return finishImport(trx, x, runId, tables, events);
}

/** A failed import: staging rolled back, the failure audited, the error naming env and table. */
async function importFailed(x: Import, err: unknown): Promise<TributaryError> {
  const { ctx, pkg, release, staging } = x;
  await x.target.query('rollback').catch(() => undefined);
  const where = `${staging.name}${x.current ? `, ${x.current}` : ''}`;
  const message =
    err instanceof TributaryError
      ? err.message
      : `loading ${release} from ${pkg.dir} into ${where} failed: ${redact((err as Error).message)}; nothing was loaded`;
  const details = { env: staging.name, from: pkg.dir, digest: pkg.digest, table: x.current, error: message };
  await recordAudit(ctx.db.control, { actor: x.actor, action: 'load.failed', release, details });
  if (err instanceof TributaryError) return err;
  return new TributaryError('database', message, { env: staging.name, table: x.current });
}

export async function importRelease(
  ctx: Ctx,
  release: string,
  opts: { actor: Actor; from: string; confirm?: boolean },
): Promise<ImportResult> {
  releaseOrThrow(ctx.config, release);
  const started = performance.now();
  const pkg = await verified(ctx, release, opts);
  const { state } = await releaseState(ctx.db.control, release);
  nextState(release, state, 'import');
  await assertReloadConfirmed(ctx, release, !!opts.confirm, state);
  const staging = envByRole(ctx.config, 'staging');
  if (!staging) {
    const what = `environments: no env has role: staging, so there is nowhere to load ${release}`;
    throw new TributaryError('config_invalid', `${ctx.config.file}: ${what}`);
  }
  const target = pgClient(ctx.db.envParams(staging) as pg.ClientConfig);
  target.on('error', () => undefined);
  const x: Import = { ctx, release, actor: opts.actor, pkg, staging, target, started, current: '' };
  try {
    return await ctx.db.control.transaction((trx) => importInTransaction(trx, x));
  } catch (err) {
    throw await importFailed(x, err);
  } finally {
    await target.end().catch(() => undefined);
  }
}
