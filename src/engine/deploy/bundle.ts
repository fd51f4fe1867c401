import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Knex } from 'knex';
import type pg from 'pg';
import { pgClient } from '../../db/pg.js';
import { type EnvSpec, envByRole, releaseOrThrow } from '../../config/load.js';
import { TributaryError } from '../../errors.js';
import { redact } from '../../log.js';
import { recordAudit } from '../kernel/audit.js';
import { failpoint } from '../kernel/failpoints.js';
import { checksumSql, COLUMNS_SQL, type TableColumn, textSettingsSql } from '../kernel/checksum.js';
import { copyToFile } from '../kernel/copy.js';
import { envError, type Actor, type Ctx } from '../kernel/context.js';
import { passGate, type ReleaseState } from '../kernel/lifecycle.js';
import { FORMATS, localKeys, MANIFEST_FILE, readVerifiedPackage, writePackageManifest, type PackageManifest } from '../kernel/package.js';
import { must } from '../kernel/must.js';
import { ident, literal, qualified } from '../kernel/sql.js';
import { userTypesOf, type UserType } from '../kernel/types.js';

/**
 * The release bundle: one immutable (release, version) that names a code version (given by the team's
 * pipeline), the data version (the release's rows exported from master, one gzip-compressed COPY text
 * file per entity, with per table row counts and checksums computed on master over exactly the
 * exported rows, in the same snapshot) and the migration step (deploy.migration). The same code version,
 * migration and data (fingerprint) give back the latest bundle; a change of any makes version N+1.
 * Only an approved release is bundled.
 *
 * The bundle's directory holds its manifest (manifest.json, format tributary-bundle-v2: the package format
 * of archives and transfer packages, kernel/package.ts), signed when this side has a signing key; deploying
 * verifies it first (verifiedBundle). The bundles row keeps the tables too, for listing. A bundle made
 * before (format tributary-bundle-v1: no manifest.json, its manifest only in the bundles row) still
 * deploys: its files are checked against the row's SHA-256 as they load.
 */
export interface BundleColumn {
  name: string;
  /** format_type() on master, e.g. `numeric(12,2)`. */
  type: string;
  notNull: boolean;
}

export interface BundleTable {
  entity: string;
  /** The table name (unqualified: each env has its own schema). */
  table: string;
  rows: number;
  checksum: string;
  /** File name inside the bundle directory. */
  file: string;
  /** Size and sha256 of the compressed file, checked when it is loaded. */
  bytes: number;
  sha256: string;
  /** Columns in the file's order (master's attribute order). */
  columns: BundleColumn[];
  /** The primary key a production table created from the bundle gets. */
  primaryKey: string[];
  /** The enum, domain and composite types the columns use, created in production if it lacks them. */
  types?: UserType[];
}

export interface Bundle {
  id: number;
  release: string;
  version: number;
  codeVersion: string;
  /** sha256 over the tables' entity, table, rows and checksum. */
  dataFingerprint: string;
  /** Parents first. */
  tables: BundleTable[];
  migration: string | null;
  /** Absolute directory of the files. */
  dir: string;
  createdBy: string;
  createdAt: string;
}

export const BUNDLE_FORMAT = FORMATS.bundle;

/** manifest.json of a bundle's directory. */
export interface BundleManifest extends PackageManifest {
  format: typeof BUNDLE_FORMAT;
  release: string;
  version: number;
  codeVersion: string;
  migration: string | null;
  dataFingerprint: string;
  createdBy: string;
  createdAt: string;
  tables: Omit<BundleTable, 'bytes' | 'sha256'>[];
}

/** States a release may be bundled from (the deployment machine may add states after approval). */
export const BUNDLE_STATES: readonly ReleaseState[] = ['approved'];

const SHAPE_SQL = `select a.attname as name, format_type(a.atttypid, a.atttypmod) as type, a.attnotnull as "notNull"
    from pg_attribute a where a.attrelid = to_regclass($1) and a.attnum > 0 and not a.attisdropped order by a.attnum`;

const BUNDLE_LOCK = 'tributary:bundle';

/** The env data is deployed to: deploy.env, else the env with role production. */
export function productionEnv(ctx: Ctx): EnvSpec {
  const name = ctx.config.deploy?.env;
  const env = name ? ctx.config.envs.get(name) : envByRole(ctx.config, 'production');
  if (!env) {
    const message = `${ctx.config.file}: environments: no env has role: production, so there is nowhere to deploy data`;
    throw new TributaryError('config_invalid', message);
  }
  return env;
}

/** deploy.bundleDir, else `.tributary/bundles` next to the config file. */
export function bundleRoot(ctx: Ctx): string {
  return ctx.config.deploy?.bundleDir ?? path.resolve(path.dirname(ctx.config.file), '.tributary/bundles');
}

interface BundleRow {
  id: number;
  release: string;
  version: number;
  code_version: string;
  data_fingerprint: string;
  manifest: BundleTable[];
  migration: string | null;
  dir: string;
  created_by: string;
  created_at: Date | string;
}

function fromRow(r: BundleRow): Bundle {
  return {
    id: Number(r.id),
    release: r.release,
    version: Number(r.version),
    codeVersion: r.code_version,
    dataFingerprint: r.data_fingerprint,
    tables: r.manifest,
    migration: r.migration,
    dir: r.dir,
    createdBy: r.created_by,
    createdAt: new Date(r.created_at).toISOString(),
  };
}

/** A bundle of the release: the given version, else the latest; null when there is none. */
export async function getBundle(
  ctx: Ctx,
  release: string,
  version?: number,
  db: Knex | Knex.Transaction = ctx.db.control,
): Promise<Bundle | null> {
  const q = db('bundles').where({ release });
  if (version !== undefined) q.where({ version });
  const row = (await q.orderBy('version', 'desc').first()) as BundleRow | undefined;
  return row ? fromRow(row) : null;
}

/** Like getBundle, but a missing bundle is an error that says how to make one. */
export async function requireBundle(ctx: Ctx, release: string, version?: number): Promise<Bundle> {
  const b = await getBundle(ctx, release, version);
  if (b) return b;
  const any = version !== undefined ? await getBundle(ctx, release) : null;
  throw new TributaryError(
    'gate_state',
    version !== undefined && any
      ? `release ${release} has no bundle version ${version} (the latest is ${any.version})`
      : `release ${release} has no bundle: make one first: tributary bundle ${release} --code <version>`,
    { release, ...(version !== undefined ? { version } : {}) },
  );
}

/** Every bundle, or every bundle of one release; by release, then version. */
export async function listBundles(ctx: Ctx, release?: string): Promise<Bundle[]> {
  const q = ctx.db.control('bundles');
  if (release) q.where({ release });
  return ((await q.orderBy(['release', 'version'])) as BundleRow[]).map(fromRow);
}

export function dataFingerprint(tables: Pick<BundleTable, 'entity' | 'table' | 'rows' | 'checksum'>[]): string {
  const h = crypto.createHash('sha256');
  for (const t of tables) h.update(`${t.entity}\t${t.table}\t${t.rows}\t${t.checksum}\n`);
  return h.digest('hex');
}

function filesPresent(b: Bundle): boolean {
  return b.tables.every((t) => {
    try {
      return fs.statSync(path.join(b.dir, t.file)).size === t.bytes;
    } catch {
      return false;
    }
  });
}

/**
 * A bundle being made: the table being read (named by an error), the directory written so far (removed
 * on failure).
 */
interface BundleJob {
  ctx: Ctx;
  release: string;
  master: EnvSpec;
  client: pg.Client;
  current: string;
  tmp?: string;
}

type TableShape = { columns: BundleColumn[]; where: string; parent: string };

type BundleRequest = { code: string; actor: Actor };

function bundleManifest(head: Omit<BundleManifest, 'format' | 'tables' | 'files' | 'createdAt'>, tables: BundleTable[]): BundleManifest {
  const files = Object.fromEntries(tables.map((t) => [t.file, { sha256: t.sha256, bytes: t.bytes }]));
  const listed = tables.map(({ bytes: _b, sha256: _s, ...t }) => t);
  return { format: BUNDLE_FORMAT, ...head, createdAt: new Date().toISOString(), tables: listed, files };
}

/**
 * The bundle as deploying uses it: its directory's manifest verified (kernel/package.ts: the signature when
 * signed, each file's size and SHA-256) and agreeing with the bundles row; the tables from the manifest.
 * A bundle of the older format (no manifest.json) is used as its row describes it.
 */
export async function verifiedBundle(ctx: Ctx, bundle: Bundle): Promise<Bundle> {
  if (!fs.existsSync(path.join(bundle.dir, MANIFEST_FILE))) return bundle;
  const { trusted } = localKeys(ctx.config.transfer, ctx.config.file);
  const verified = readVerifiedPackage<BundleManifest>(bundle.dir, trusted, BUNDLE_FORMAT, { unsigned: 'accept' });
  const pkg = await verified.catch((err: unknown) => {
    // a damaged bundle is not repaired: a new one is made from master
    if (!(err instanceof TributaryError) || err.code !== 'package_refused') throw err;
    const hint = `make a new bundle (tributary bundle ${bundle.release} --code ${bundle.codeVersion})`;
    throw new TributaryError('package_refused', `${err.message}; ${hint}`, err.details);
  });
  const m = pkg.manifest;
  const same = m.release === bundle.release && m.version === bundle.version && m.codeVersion === bundle.codeVersion;
  if (!same || dataFingerprint(m.tables) !== bundle.dataFingerprint) {
    const file = path.join(pkg.dir, MANIFEST_FILE);
    const recorded = `code ${bundle.codeVersion}, data ${bundle.dataFingerprint.slice(0, 12)}…`;
    const was = `bundle v${bundle.version} of ${bundle.release} as the control database records it (${recorded})`;
    const what = `is the manifest of ${m.release} v${m.version} (code ${m.codeVersion}), not of ${was}`;
    throw new TributaryError('package_refused', `${file}: ${what}; nothing was loaded`, { file });
  }
  const tables = m.tables.map((t) => {
    const { sha256, bytes } = must(m.files[t.file], `the manifest's entry of ${t.file}`);
    return { ...t, sha256, bytes };
  });
  return { ...bundle, tables };
}

export async function createBundle(ctx: Ctx, release: string, opts: BundleRequest): Promise<Bundle & { created: boolean }> {
  const { code, master } = await checkBundleRequest(ctx, release, opts);
  const { signing } = localKeys(ctx.config.transfer, ctx.config.file);
  const migration = ctx.config.deploy?.migration ?? null;
  const client = pgClient(ctx.db.envParams(master) as pg.ClientConfig);
  client.on('error', () => undefined);
  const job: BundleJob = { ctx, release, master, client, current: '' };
  try {
    try {
      await client.connect();
    } catch (err) {
      throw envError(ctx, master, err);
    }
    // one snapshot for the checksums and the export; text in fixed formats (UTC, ISO dates)
    await client.query('begin isolation level repeatable read read only');
    await client.query(textSettingsSql());
    const { tables, shapes } = await measureTables(job);
    const fingerprint = dataFingerprint(tables);
    const same = (b: Bundle) => b.codeVersion === code && b.dataFingerprint === fingerprint && b.migration === migration && filesPresent(b);
    const latest = await getBundle(ctx, release);
    if (latest && same(latest)) return { ...latest, created: false };
    await exportTables(job, tables, shapes);
    await client.query('commit');
    const made = await recordBundle(job, { code, fingerprint, migration, tables, actor: opts.actor, same, signing });
    if (!made.created && job.tmp) fs.rmSync(job.tmp, { recursive: true, force: true });
    job.tmp = undefined;
    return made;
  } catch (err) {
    await client.query('rollback').catch(() => undefined);
    if (job.tmp) fs.rmSync(job.tmp, { recursive: true, force: true });
    throw bundleError(job, err);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** The code version one line, the release approved (the gate), a master env to bundle from. */
async function checkBundleRequest(ctx: Ctx, release: string, opts: BundleRequest): Promise<{ code: string; master: EnvSpec }> {
  releaseOrThrow(ctx.config, release);
  const code = opts.code.trim();
  if (!code || code.length > 300 || /[\r\n]/.test(code)) {
    throw new TributaryError(
      'usage',
      `the code version must be one line of 1–300 characters, e.g. a git tag or sha or an image digest (got ${JSON.stringify(opts.code)})`,
    );
  }
  if (/^\.+$/.test(release)) throw new TributaryError('usage', `release "${release}" cannot name a bundle directory`);
  await passGate(ctx.db.control, release, 'bundle', opts.actor, (state) => {
    if (!BUNDLE_STATES.includes(state)) {
      const message = `release ${release} is ${state}: cannot bundle it for production; approve it first: tributary approve ${release}`;
      throw new TributaryError('gate_state', message, { release, state });
    }
  });
  const master = envByRole(ctx.config, 'master');
  if (!master) {
    const message = `${ctx.config.file}: environments: no env has role: master, so there is no data of ${release} to bundle`;
    throw new TributaryError('config_invalid', message);
  }
  return { code, master };
}

/** Each entity's table in master: its columns, and the release's rows counted and checksummed. */
async function measureTables(job: BundleJob): Promise<{ tables: BundleTable[]; shapes: TableShape[] }> {
  const { ctx, release, master, client } = job;
  const rel = ctx.config.tags.release;
  const tables: BundleTable[] = [];
  const shapes: TableShape[] = [];
  for (const e of ctx.config.entities) {
    const parent = qualified(master.schema, e.table);
    job.current = parent;
    const columns = (await client.query<BundleColumn>(SHAPE_SQL, [parent])).rows;
    if (columns.length === 0) {
      const message = `master env ${master.name} has no table ${parent}: promote ${release} first (tributary promote ${release})`;
      throw new TributaryError('gate_state', message, { env: master.name, table: parent });
    }
    if (!columns.some((c) => c.name === rel)) {
      const message = `master env ${master.name}, table ${parent} has no column ${rel} (the release tag)`;
      throw new TributaryError('config_invalid', message, { env: master.name, table: parent });
    }
    const where = `${ident(rel)} = ${literal(release)}`;
    const sorted = (await client.query<TableColumn>(COLUMNS_SQL, [parent])).rows;
    const sums = (await client.query<{ rows: number; checksum: string }>(checksumSql(sorted, master.schema, e.table, where))).rows;
    const sum = must(sums[0], `the checksum row of ${parent}`);
    const types = await userTypesOf(client, parent);
    tables.push({
      entity: e.name, table: e.table, rows: sum.rows, checksum: sum.checksum, file: '', bytes: 0, sha256: '', columns,
      primaryKey: [e.primaryKey], ...(types.length > 0 ? { types } : {}),
    });
    shapes.push({ columns, where, parent });
  }
  job.current = '';
  return { tables, shapes };
}

/** Each table's rows of the release to a file of a fresh directory (job.tmp), in the snapshot they were measured in. */
async function exportTables(job: BundleJob, tables: BundleTable[], shapes: TableShape[]): Promise<void> {
  const { release, master, client } = job;
  const relDir = path.join(bundleRoot(job.ctx), release);
  fs.mkdirSync(relDir, { recursive: true });
  const tmp = fs.mkdtempSync(path.join(relDir, '.tmp-'));
  job.tmp = tmp;
  for (const [i, t] of tables.entries()) {
    const s = must(shapes[i], `the shape of ${t.table}`);
    job.current = s.parent;
    t.file = `${String(i + 1).padStart(2, '0')}-${t.table}.copy.gz`;
    const list = s.columns.map((c) => ident(c.name)).join(', ');
    const written = await copyToFile(client, {
      failpoint: 'bundle.copy',
      select: `select ${list} from ${s.parent} where ${s.where}`,
      file: path.join(tmp, t.file),
      what: `bundling ${release}: master env ${master.name}, table ${s.parent}`,
      expectedRows: t.rows,
      details: { env: master.name, table: s.parent },
    });
    t.bytes = written.bytes;
    t.sha256 = written.sha256;
    await failpoint('bundle.table-exported');
  }
  job.current = '';
}

interface BundleRecord {
  code: string;
  fingerprint: string;
  migration: string | null;
  tables: BundleTable[];
  actor: Actor;
  same: (b: Bundle) => boolean;
  /** This side's signing key, if it has one: the bundle's manifest is signed with it. */
  signing: crypto.KeyObject | null;
}

/** Numbers the bundle under a lock (two requests for the same bundle make one), moves its files in place and records it. */
async function recordBundle(job: BundleJob, r: BundleRecord): Promise<Bundle & { created: boolean }> {
  const { ctx, release } = job;
  const tmp = must(job.tmp, 'the directory of the exported tables');
  return ctx.db.control.transaction(async (trx) => {
    await trx.raw('select pg_advisory_xact_lock(hashtext(?))', [`${BUNDLE_LOCK}:${release}`]);
    const again = await getBundle(ctx, release, undefined, trx);
    if (again && r.same(again)) return { ...again, created: false };
    const version = (again?.version ?? 0) + 1;
    const dir = path.join(bundleRoot(ctx), release, `v${version}`);
    const head = { release, version, codeVersion: r.code, migration: r.migration, dataFingerprint: r.fingerprint, createdBy: r.actor };
    writePackageManifest(tmp, bundleManifest(head, r.tables), r.signing);
    // a directory no bundle row names (a rolled-back attempt) is replaced
    fs.rmSync(dir, { recursive: true, force: true });
    fs.renameSync(tmp, dir);
    job.tmp = dir;
    const [row] = (await trx('bundles')
      .insert({
        release, version, code_version: r.code, data_fingerprint: r.fingerprint, manifest: JSON.stringify(r.tables), migration: r.migration,
        dir, created_by: r.actor,
      })
      .returning('*')) as BundleRow[];
    const bundle = fromRow(must(row, `the bundles row of ${release} v${version}`));
    await recordAudit(trx, {
      actor: r.actor,
      action: 'bundle.create',
      release,
      subject: `v${version}`,
      details: {
        version,
        codeVersion: r.code,
        dataFingerprint: r.fingerprint,
        migration: r.migration,
        previous: again ? { version: again.version, codeVersion: again.codeVersion, dataFingerprint: again.dataFingerprint } : null,
        tables: r.tables.map((t) => ({ entity: t.entity, table: t.table, rows: t.rows, checksum: t.checksum })),
      },
    });
    await failpoint('bundle.before-commit');
    return { ...bundle, created: true };
  });
}

/** A failure of the bundling as the error to throw: coded ones as they are, else naming the env and table. */
function bundleError(job: BundleJob, err: unknown): unknown {
  if (err instanceof TributaryError) return err;
  const { ctx, release, master, current } = job;
  const named = envError(ctx, master, err);
  if (named instanceof TributaryError && named.code === 'env_unreachable') return named;
  return new TributaryError(
    'database',
    `bundling ${release} from master env ${master.name}${current ? `, table ${current}` : ''} failed: ${redact((err as Error).message)}`,
    { env: master.name, table: current },
  );
}
