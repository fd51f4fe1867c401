import path from 'node:path';
import type { Knex } from 'knex';
import type pg from 'pg';
import { pgClient } from '../../db/pg.js';
import { envByRole, releaseOrThrow } from '../../config/load.js';
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
import { LINEAGE_COLUMNS, TRANSFER_FORMAT, type LineageFile, type TransferManifest } from './manifest.js';

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
    throw refuse(
      manifestFile,
      `its tables do not match this side's dataset (${ctx.config.file}): ${[missing.length ? `missing ${missing.join(', ')}` : '', extra.length ? `not declared here: ${extra.join(', ')}` : ''].filter(Boolean).join('; ')}`,
    );
  }
  for (const t of m.tables) {
    if (!t.columns.some((c) => c.name === ctx.config.tags.release)) throw refuse(manifestFile, `table ${t.table} (${t.entity}) has no release tag column ${ctx.config.tags.release}`);
  }
}

async function loadLineage(conn: pg.Client, dir: string, runId: number, what: keyof typeof LINEAGE_COLUMNS, f: LineageFile, sha256: string): Promise<void> {
  const t = runTables(runId);
  const cols = LINEAGE_COLUMNS[what];
  const names = cols.map(([c]) => c);
  if (f.columns.join(',') !== names.join(',')) throw refuse(path.join(dir, f.file), `columns ${f.columns.join(', ')}; expected ${names.join(', ')}`);
  // the rules' resolutions join this side's table (under the run made here); the rest form its work area
  const table = what === 'autoResolutions' ? 'pg_temp.transfer_auto_resolutions' : { records: t.records, result: t.result, keyMap: t.keyMap }[what];
  // the result also has the work area's data columns (null here: staging holds the rows)
  const extra = what === 'result' ? ', data jsonb, raw_refs jsonb' : '';
  await conn.query(`create ${what === 'autoResolutions' ? 'temp ' : ''}table ${table} (${cols.map(([c, type]) => `${ident(c)} ${type}`).join(', ')}${extra})${what === 'autoResolutions' ? ' on commit drop' : ''}`);
  const read = await copyFromFile(conn, { failpoint: 'import.lineage', file: path.join(dir, f.file), table, columns: names });
  if (read.sha256 !== sha256) throw refuse(path.join(dir, f.file), 'changed while it was being loaded: its SHA-256 is no longer the manifest\'s');
  const rows = read.rows;
  if (rows !== f.rows) throw refuse(path.join(dir, f.file), `${rows} row(s), the manifest lists ${f.rows}`);
  if (what === 'autoResolutions') {
    await conn.query(`insert into auto_resolutions (run_id, ${names.map(ident).join(', ')}) select ${Number(runId)}, ${names.map(ident).join(', ')} from ${table}`);
  }
}

/** The package, verified and checked against this side (release, dataset, run); a refusal is audited. */
type SignedPackage = VerifiedPackage<TransferManifest> & { keyId: string; signature: string };

async function verified(ctx: Ctx, release: string, opts: { actor: Actor; from: string }): Promise<SignedPackage> {
  const trusted = trustedKeys(ctx.config.transfer.publicKeys, `${ctx.config.file}: transfer.publicKeys`);
  if (trusted.size === 0) {
    throw new TributaryError('config_invalid', `${ctx.config.file}: transfer.publicKeys lists no key, so no package can be trusted: add the cloud side's public key (the .pub file tributary keys generate wrote)`);
  }
  try {
    const pkg = await readVerifiedPackage<TransferManifest>(opts.from, trusted, TRANSFER_FORMAT);
    const m = pkg.manifest;
    const manifestFile = path.join(pkg.dir, 'manifest.json');
    if (m.release !== release) throw refuse(manifestFile, `the package is for release ${m.release}, not ${release}`, { release: m.release });
    checkTables(ctx, m, manifestFile);
    const held = (await ctx.db.control('transfer_packages').where({ release }).max('source_run_id as run').first()) as { run: number | null } | undefined;
    if (held?.run != null && m.run.id <= held.run) {
      throw refuse(manifestFile, `the package holds consolidation run #${m.run.id} of ${release}, but staging already holds run #${held.run}: only a package of a later run is loaded`, {
        run: m.run.id,
        held: held.run,
      });
    }
    const keyId = must(pkg.keyId, 'the signing key of a signed package');
    return { ...pkg, keyId, signature: must(pkg.signature, 'the signature of a signed package') };
  } catch (err) {
    if (err instanceof TributaryError && err.code === 'package_refused') {
      await recordAudit(ctx.db.control, { actor: opts.actor, action: 'load.refused', release, subject: String(err.details.file), details: { from: path.resolve(opts.from), error: err.message } });
    }
    throw err;
  }
}

export async function importRelease(ctx: Ctx, release: string, opts: { actor: Actor; from: string; confirm?: boolean }): Promise<ImportResult> {
  releaseOrThrow(ctx.config, release);
  const started = performance.now();
  const pkg = await verified(ctx, release, opts);
  const m = pkg.manifest;
  const manifestFile = path.join(pkg.dir, 'manifest.json');
  const { state } = await releaseState(ctx.db.control, release);
  nextState(release, state, 'import');
  await assertReloadConfirmed(ctx, release, !!opts.confirm, state);
  const staging = envByRole(ctx.config, 'staging');
  if (!staging) throw new TributaryError('config_invalid', `${ctx.config.file}: environments: no env has role: staging, so there is nowhere to load ${release}`);

  const target = pgClient(ctx.db.envParams(staging) as pg.ClientConfig);
  target.on('error', () => undefined);
  let current = '';
  /** Staging: one transaction (left open for the caller to commit), every table checked against the manifest. */
  const loadStaging = async (): Promise<LoadedTable[]> => {
    // staging: one transaction, committed only when every table equals the manifest
    try {
      await target.connect();
    } catch (err) {
      throw envError(ctx, staging, err);
    }
    await target.query('begin');
    if (staging.schema) await target.query(`create schema if not exists ${ident(staging.schema)}`);
    const byEntity = new Map(m.tables.map((x) => [x.entity, x]));
    for (const e of ctx.config.entities) {
      const x = byEntity.get(e.name)!;
      current = qualified(staging.schema, e.table);
      await ensureUserTypes(target, x.types, current);
      await target.query(createTableSql(current, { columns: x.columns, primaryKey: x.primaryKey, types: x.types }));
    }
    for (const e of [...ctx.config.entities].reverse()) {
      current = qualified(staging.schema, e.table);
      await target.query(`delete from ${current} where ${ident(ctx.config.tags.release)} = $1`, [release]);
    }
    const tables: LoadedTable[] = [];
    for (const e of ctx.config.entities) {
      const x = byEntity.get(e.name)!;
      current = qualified(staging.schema, e.table);
      const read = await copyFromFile(target, { failpoint: 'import.copy', file: path.join(pkg.dir, x.file), table: current, columns: x.columns.map((c) => c.name) });
      if (read.sha256 !== m.files[x.file]!.sha256) throw refuse(path.join(pkg.dir, x.file), "changed while it was being loaded: its SHA-256 is no longer the manifest's");
      const byName = x.columns.map((c) => ({ name: c.name, type: c.type })).sort(byColumnName);
      const got = await targetChecksum(target, staging.schema, e.table, byName, `${ident(ctx.config.tags.release)} = ${literal(release)}`);
      requireChecksum(`staging table ${current} (${e.name}), from ${path.join(pkg.dir, x.file)}`, got, { rows: x.rows, checksum: x.checksum }, { table: current, file: x.file });
      tables.push({ entity: e.name, table: e.table, rows: got.rows, checksum: got.checksum });
    }
    return tables;
  };
  try {
    return await ctx.db.control.transaction(async (trx) => {
      const [runRow] = await trx('runs')
        .insert({
          release,
          kind: 'import',
          status: 'done',
          started_by: opts.actor,
          finished_at: trx.fn.now(),
          steps: JSON.stringify(m.run.steps ?? {}),
          counts: JSON.stringify({ ...m.run.counts, imported: { sourceRunId: m.run.id, digest: pkg.digest, keyId: pkg.keyId } }),
        })
        .returning('id');
      const runId = Number((runRow as { id: number }).id);
      const conn = await connectionOf(trx);
      // the lineage goes into the control database (its transaction's connection) while the rows go into
      // staging (a connection of its own): the two run side by side, and both must succeed
      const lineage = (async () => {
        await loadLineage(conn, pkg.dir, runId, 'records', m.lineage.records, m.files[m.lineage.records.file]!.sha256);
        await loadLineage(conn, pkg.dir, runId, 'result', m.lineage.result, m.files[m.lineage.result.file]!.sha256);
        await loadLineage(conn, pkg.dir, runId, 'keyMap', m.lineage.keyMap, m.files[m.lineage.keyMap.file]!.sha256);
        if (m.lineage.autoResolutions) await loadLineage(conn, pkg.dir, runId, 'autoResolutions', m.lineage.autoResolutions, m.files[m.lineage.autoResolutions.file]!.sha256);
      })();
      lineage.catch(() => undefined);
      let tables: LoadedTable[];
      try {
        tables = await loadStaging();
      } catch (err) {
        await lineage.catch(() => undefined);
        throw err;
      }
      current = 'lineage';
      await lineage;
      const conflictIds = new Map<number, number>();
      for (const c of m.lineage.conflicts) {
        const { id, run_id: _run, detail, ...rest } = c as { id: number; run_id: number; detail: unknown };
        const [row] = await trx('conflicts').insert({ ...rest, run_id: runId, detail: JSON.stringify(detail) }).returning('id');
        conflictIds.set(id, Number((row as { id: number }).id));
      }
      for (const d of m.lineage.decisions) {
        const { id: _id, conflict_id, run_id: _run, params, blast, ...rest } = d as { id: number; conflict_id: number; run_id: number; params: unknown; blast: unknown };
        const conflictId = conflictIds.get(conflict_id);
        if (conflictId === undefined) throw refuse(manifestFile, `a decision names conflict id ${conflict_id}, which the package does not carry`);
        await trx('decisions').insert({ ...rest, conflict_id: conflictId, run_id: runId, params: JSON.stringify(params), blast: JSON.stringify(blast) });
      }
      const [pkgRow] = await trx('transfer_packages')
        .insert({ release, digest: pkg.digest, key_id: pkg.keyId, source_run_id: m.run.id, run_id: runId, manifest: pkg.text, signature: pkg.signature, imported_by: opts.actor })
        .returning('id');
      const packageId = Number((pkgRow as { id: number }).id);
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

      await target.query('commit');
      // staging committed, the control database not yet: the package was not recorded, so loading it again
      // replaces the release's rows
      await failpoint('import.after-staging-commit');
      const ms = Math.round(performance.now() - started);
      await trx('loads').insert(tables.map((x) => ({ release, run_id: runId, env: staging.name, entity: x.entity, table_name: x.table, row_count: x.rows, checksum: x.checksum, loaded_by: opts.actor })));
      await transition(trx, release, 'import', { currentRunId: runId });
      await transition(trx, release, 'load');
      await recordAudit(trx, {
        actor: opts.actor,
        action: 'load.finish',
        release,
        subject: staging.name,
        details: {
          runId,
          ms,
          tables,
          package: { digest: pkg.digest, keyId: pkg.keyId, sourceRunId: m.run.id, events: events.length, head: m.audit.head?.hash ?? null, from: pkg.dir },
        },
      });
      return { release, runId, sourceRunId: m.run.id, env: staging.name, digest: pkg.digest, keyId: pkg.keyId, tables, events: events.length, ms };
    });
  } catch (err) {
    await target.query('rollback').catch(() => undefined);
    const message =
      err instanceof TributaryError
        ? err.message
        : `loading ${release} from ${pkg.dir} into ${staging.name}${current ? `, ${current}` : ''} failed: ${redact((err as Error).message)}; nothing was loaded`;
    await recordAudit(ctx.db.control, { actor: opts.actor, action: 'load.failed', release, details: { env: staging.name, from: pkg.dir, digest: pkg.digest, table: current, error: message } });
    if (err instanceof TributaryError) throw err;
    throw new TributaryError('database', message, { env: staging.name, table: current });
  } finally {
    await target.end().catch(() => undefined);
  }
}
