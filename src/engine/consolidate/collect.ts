import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { EnvSpec, EntitySpec } from '../../config/load.js';
import { TributaryError } from '../../errors.js';
import { envError, type Ctx } from '../kernel/context.js';
import { byColumnName, rowHashOfTexts } from '../kernel/checksum.js';
import { redact } from '../../log.js';
import { ROW_CELLS, ROW_HASH, type ChildEnvResult, type ChildPlan } from './collect-plan.js';
import { ident, KEY_TEXT, literal, qualified } from '../kernel/sql.js';
import type { LockRow } from '../gate/index.js';
import { workTable, recordsPartition } from '../kernel/workArea.js';
import { INTEGER_KEY } from '../kernel/freshKeys.js';
import { must } from '../kernel/must.js';

/**
 * Collect: a release's rows from every ST env, in parallel (bounded by p-queue), streamed with COPY from
 * each source straight into the work area of the control database: rows never gather in JavaScript
 * memory. Each env is read in one repeatable-read transaction, each row with its hash computed like the lock's
 * checksum, so the rows collected are exactly the rows that were locked (drift is refused).
 */

/**
 * The collected records, one partition per entity: nearly every statement of the detection reads one
 * entity's records, and then reads only its partition. (The partitioned table itself holds no rows and
 * cannot be unlogged; its partitions are.)
 */
export async function createRecordsTable(ctx: Ctx, runId: number): Promise<void> {
  const records = workTable(runId, 'records');
  await ctx.db.control.raw(`create table ${records} (
    entity ${KEY_TEXT} not null,
    env ${KEY_TEXT} not null,
    env_rank int not null,
    pk ${KEY_TEXT} not null,
    identity ${KEY_TEXT} not null,
    alt_keys text[],
    feature ${KEY_TEXT},
    created_by text,
    -- timestamps as the source wrote them (ISO, UTC): read only for the few records that share an
    -- identity, so cast there (detect.ts), not parsed for every record here
    created_at text,
    ts text,
    data jsonb not null,
    rh bigint
  ) partition by list (entity)`);
  for (const [i, e] of ctx.config.entities.entries()) {
    const partition = recordsPartition(runId, i);
    await ctx.db.control.raw(`create unlogged table ${partition} partition of ${records} for values in (${literal(e.name)})`);
  }
}

/** Every column of a natural key holds a value: neither null nor the empty string. */
function present(columns: string[]): string {
  return columns.map((c) => `nullif(t.${ident(c)}::text, '') is not null`).join(' and ');
}

function identityExpr(entity: EntitySpec): string {
  const pk = `'p:' || t.${ident(entity.primaryKey)}::text`;
  const nk = entity.naturalKeys[0];
  if (!nk) return pk;
  // concat_ws skips nulls, so require every column of the key; the empty string is no key either (two
  // records whose key is '' are two identities, like two whose key is null)
  const allPresent = present(nk);
  return `case when ${allPresent} then 'n:' || concat_ws(chr(31), ${nk.map((c) => `t.${ident(c)}::text`).join(', ')}) else ${pk} end`;
}

/**
 * The values of the natural keys after the first (phase 1b links the identities they share), in their
 * order; null where a column of the key is. Computed at the source, from its typed columns.
 */
function altKeysExpr(entity: EntitySpec): string {
  const rest = entity.naturalKeys.slice(1);
  if (rest.length === 0) return 'null::text[]';
  const one = (nk: string[]) =>
    `case when ${present(nk)} then concat_ws(chr(31), ${nk.map((c) => `t.${ident(c)}::text`).join(', ')}) end`;
  return `array[${rest.map(one).join(', ')}]::text[]`;
}

function sourceQuery(ctx: Ctx, env: EnvSpec, entity: EntitySpec, release: string, rowHash: string): string {
  const t = ctx.config.tags;
  return `select ${literal(entity.name)}, ${literal(env.name)}, ${env.precedence}, t.${ident(entity.primaryKey)}::text,
      ${identityExpr(entity)}, ${altKeysExpr(entity)}, t.${ident(t.feature)}, t.${ident(t.createdBy)}, t.${ident(t.createdAt)}::timestamptz,
      t.${ident(entity.timestamp)}::timestamptz, ${ROW_CELLS}, ${rowHash}
    from ${qualified(env.schema, entity.table)} t where t.${ident(t.release)} = ${literal(release)}`;
}

/**
 * The gate, on the collected rows themselves: per env and table, the count and the sum of row hashes
 * must equal the lock's. All envs were read in their own snapshot, so what was checked is what was collected.
 * The same pass anchors the cells: each record's cells, as the work area holds them, must hash to the
 * hash its source took of its own texts (records of tables locked before their columns were recorded
 * aside), so every cell a later phase expects in staging is a source's own text.
 */
async function checkDrift(
  ctx: Ctx,
  runId: number,
  release: string,
  locks: Map<string, LockRow>,
  only?: { env: string },
): Promise<Map<string, KeyStats>> {
  const anchored = ctx.config.sources.flatMap((env) =>
    ctx.config.entities.flatMap((entity) => {
      const cols = locks.get(`${env.name}/${entity.name}`)?.columns;
      if (!cols || cols.length === 0) return [];
      const texts = [...cols].sort(byColumnName).map((c) => `data->>${literal(c.name)}`);
      return [`when env = ${literal(env.name)} and entity = ${literal(entity.name)} then ${rowHashOfTexts(texts)}`];
    }),
  );
  const unanchored =
    anchored.length > 0 ? `count(*) filter (where rh is distinct from case ${anchored.join(' ')} else rh end)::int` : '0';
  // the same pass finds each entity's largest integer key, for re-keying
  const res = await ctx.db.control.transaction(async (trx) => {
    // one process: it runs beside the detection's first steps, which need the cores more
    await trx.raw('set local max_parallel_workers_per_gather = 0');
    return trx.raw<{ rows: EnvFigures[] }>(
      `select env, entity, count(*)::int as rows, coalesce(sum(rh), 0)::text as checksum,
              max(pk::numeric) filter (where pk ~ ${INTEGER_KEY})::text as max,
              ${unanchored} as unanchored
         from ${workTable(runId, 'records')} group by env, entity`,
    );
  });
  refuseAltered(ctx, release, res.rows);
  const keys = new Map<string, KeyStats>();
  for (const r of res.rows) {
    const k = keys.get(r.entity) ?? { max: null };
    if (r.max !== null && (k.max === null || BigInt(r.max) > BigInt(k.max))) k.max = r.max;
    keys.set(r.entity, k);
  }
  refuseDrift(ctx, release, locks, res.rows, only);
  return keys;
}

type EnvFigures = { env: string; entity: string; rows: number; checksum: string; max: string | null; unanchored: number };

/** Rows whose cells are not the texts their source hashed: the collection is refused, naming env and table. */
function refuseAltered(ctx: Ctx, release: string, rows: EnvFigures[]): void {
  const altered = rows.filter((r) => r.unanchored > 0);
  const [first] = altered;
  if (!first) return;
  const table = (r: { entity: string }) => ctx.config.entities.find((e) => e.name === r.entity)?.table ?? r.entity;
  throw new TributaryError(
    'database',
    altered
      .map(
        (r) =>
          `collecting ${release} from ${r.env}, table ${table(r)}: ${r.unanchored} row(s) arrived with cells other than the texts ` +
          'the source hashed; nothing was consolidated: run it again',
      )
      .join('\n'),
    { env: first.env, table: table(first) },
  );
}

/** A table whose rows changed since its lock (or, with --env, was re-locked since the run built on): refused. */
function refuseDrift(ctx: Ctx, release: string, locks: Map<string, LockRow>, rows: EnvFigures[], only?: { env: string }): void {
  const got = new Map(rows.map((r) => [`${r.env}/${r.entity}`, r]));
  const drift: { env: string; table: string; message: string }[] = [];
  for (const env of ctx.config.sources) {
    for (const entity of ctx.config.entities) {
      const lock = must(locks.get(`${env.name}/${entity.name}`), `the lock of ${env.name}'s ${entity.table} (the gate checked it)`);
      const now = got.get(`${env.name}/${entity.name}`) ?? { rows: 0, checksum: '0' };
      if (now.rows !== Number(lock.row_count) || now.checksum !== lock.checksum) {
        const reused = only && only.env !== env.name;
        const figures = `rows ${lock.row_count} → ${now.rows}${now.checksum !== lock.checksum ? ', checksum differs' : ''}`;
        drift.push({
          env: env.name,
          table: entity.table,
          message: reused
            ? `${env.name}, table ${entity.table}: re-locked since the consolidation this one builds on; ` +
              `collect it again: tributary consolidate ${release} (without --env)`
            : `drift in ${env.name}, table ${entity.table}: ${release}'s rows changed since the lock of ` +
              `${lock.locked_at.toISOString()} (${figures}); re-lock with: tributary tag ${release} --env ${env.name}`,
        });
      }
    }
  }
  const [first] = drift;
  if (first) {
    const details = { env: first.env, table: first.table, drift: drift.map(({ env, table }) => ({ env, table })) };
    throw new TributaryError('gate_drift', drift.map((d) => d.message).join('\n'), details);
  }
}

export interface CollectedEnv {
  env: string;
  rows: number;
  perEntity: Record<string, number>;
}

/** An entity's collected primary keys: the largest integer one (fresh keys for re-keying start above it). */
export interface KeyStats {
  max: string | null;
}

export interface Collected {
  envs: CollectedEnv[];
  /**
   * The drift check on the collected rows (the gate), started by the first call and run beside the
   * detection: it resolves to each entity's key stats, or rejects with the drift. Whoever uses the
   * collection calls it, and awaits it before using what it found.
   */
  verify(): Promise<Map<string, KeyStats>>;
}

// compiled (dist/…/collect.js) the child is collect-child.js, run by node; from the sources (tests, tsx) it is
// collect-child.ts, run through tsx
const HERE = fileURLToPath(import.meta.url);
const CHILD = path.join(path.dirname(HERE), `collect-child${path.extname(HERE)}`);
const CHILD_ARGS = path.extname(HERE) === '.ts' ? ['--import', import.meta.resolve('tsx'), CHILD] : [CHILD];

/**
 * The collection's child process (collect-child.ts), started ahead: it loads while the gate is checked
 * and the run is set up, then waits on its stdin for the plan. dispose() stops it if no plan came.
 */
export interface Collector {
  child: ChildProcessWithoutNullStreams;
  exited: Promise<number | null>;
  stderr(): string;
  dispose(): void;
}

export function startCollector(): Collector {
  // tsx (for the sources) resolved from here, not from the working directory (the bot may run anywhere)
  const child = spawn(process.execPath, CHILD_ARGS, { stdio: ['pipe', 'pipe', 'pipe'] });
  // a bot stopping (or crashing) takes its collection with it: nothing keeps writing into the work area
  const killChild = () => child.kill('SIGKILL');
  process.once('exit', killChild);
  try {
    if (child.pid) os.setPriority(child.pid, 10);
  } catch {
    // no permission to lower it: it runs at our priority
  }
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => {
    const text = d.toString();
    // a failpoint the child waits at is said where the tests read it: this process's stderr
    for (const line of text.split('\n')) if (/^failpoint \S+: paused/.test(line)) process.stderr.write(`${line}\n`);
    stderr = (stderr + text).slice(-2000);
  });
  child.stdin.on('error', () => undefined);
  const exited = new Promise<number | null>((resolve) => {
    child.on('error', (err) => {
      stderr += `\n${err.message}`;
      resolve(null);
    });
    child.on('close', (code) => {
      process.removeListener('exit', killChild);
      resolve(code);
    });
  });
  return {
    child,
    exited,
    stderr: () => stderr,
    dispose: () => {
      child.stdin.end();
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      process.removeListener('exit', killChild);
    },
  };
}

/**
 * Streams the given envs into the work area from a child process (collect-child.ts) at lower CPU
 * priority: the rows never pass through this process, whose event loop stays free (the bot's acks).
 * Reports each env as it is done; an env that fails is reported as its error, naming the env.
 */
async function collectEnvs(
  ctx: Ctx,
  runId: number,
  envs: EnvSpec[],
  release: string,
  locks: Map<string, LockRow>,
  onEnv: (r: CollectedEnv | Error) => void,
  collector: Collector,
): Promise<void> {
  const plan: ChildPlan = {
    release,
    target: ctx.db.controlParams,
    copyIn:
      `copy ${workTable(runId, 'records')} ` +
      '(entity, env, env_rank, pk, identity, alt_keys, feature, created_by, created_at, ts, data, rh) from stdin',
    concurrency: ctx.config.collect.concurrency,
    envs: [],
  };
  for (const env of envs) {
    const missing = ctx.config.entities.find((entity) => !locks.get(`${env.name}/${entity.name}`));
    if (missing) {
      onEnv(new TributaryError('gate_not_locked', `release ${release} is not locked for ${env.name} (${missing.table})`));
      continue;
    }
    plan.envs.push({
      env: env.name,
      source: ctx.db.envParams(env),
      entities: ctx.config.entities.map((entity) => ({
        entity: entity.name,
        table: qualified(env.schema, entity.table),
        sourceSql: sourceQuery(ctx, env, entity, release, ROW_HASH),
        lockedColumns: must(locks.get(`${env.name}/${entity.name}`), `the lock of ${env.name}'s ${entity.table}`).columns,
      })),
    });
  }
  if (plan.envs.length === 0) return;
  const { child } = collector;
  const seen = new Set<string>();
  let unreadable = '';
  const lines = readline.createInterface({ input: child.stdout });
  lines.on('line', (line) => {
    try {
      const r = JSON.parse(line) as ChildEnvResult;
      const env = ctx.config.envs.get(r.env);
      if (!env || seen.has(r.env)) return;
      seen.add(r.env);
      if (r.error) onEnv(envError(ctx, env, Object.assign(new Error(r.error.message), r.error.code ? { code: r.error.code } : {})));
      else onEnv({ env: r.env, rows: Object.values(r.perEntity ?? {}).reduce((a, b) => a + b, 0), perEntity: r.perEntity ?? {} });
    } catch (err) {
      unreadable += `\nunreadable report from the collection process: ${(err as Error).message}`;
    }
  });
  // one line, and stdin kept open: the child exits when it closes (dispose(), or this process dying)
  child.stdin.write(`${JSON.stringify(plan)}\n`);
  const code = await collector.exited;
  const stderr = collector.stderr() + unreadable;
  const why = `the collection process exited with code ${code}${stderr ? `: ${redact(stderr.trim())}` : ''}`;
  for (const e of plan.envs) if (!seen.has(e.env)) onEnv(new TributaryError('internal', `collecting ${e.env}: ${why}`, { env: e.env }));
}

async function reuseEnv(ctx: Ctx, runId: number, previousRunId: number, env: EnvSpec): Promise<CollectedEnv> {
  const res = await ctx.db.control.raw<{ rows: { entity: string; n: number }[] }>(
    `with copied as (insert into ${workTable(runId, 'records')}
                            (entity, env, env_rank, pk, identity, alt_keys, feature, created_by, created_at, ts, data, rh)
       select entity, env, env_rank, pk, identity, alt_keys, feature, created_by, created_at, ts, data, rh
         from ${workTable(previousRunId, 'records')} where env = ?
       returning entity)
     select entity, count(*)::int as n from copied group by entity`,
    [env.name],
  );
  const perEntity = Object.fromEntries(res.rows.map((r) => [r.entity, r.n]));
  return { env: env.name, rows: res.rows.reduce((n, r) => n + r.n, 0), perEntity };
}

/** Collects every source env; on any failure, reports every env that failed (the caller cleans up). */
export async function collectRelease(
  ctx: Ctx,
  runId: number,
  release: string,
  locks: Map<string, LockRow>,
  onEnvDone?: (c: CollectedEnv) => void,
  only?: { env: string; previousRunId: number },
  collector?: Collector,
): Promise<Collected> {
  const own = collector ?? startCollector();
  try {
    return await collectInto(ctx, runId, release, locks, own, onEnvDone, only);
  } finally {
    own.dispose();
  }
}

async function collectInto(
  ctx: Ctx,
  runId: number,
  release: string,
  locks: Map<string, LockRow>,
  collector: Collector,
  onEnvDone?: (c: CollectedEnv) => void,
  only?: { env: string; previousRunId: number },
): Promise<Collected> {
  await createRecordsTable(ctx, runId);
  // with --env, the other envs' rows are those of the previous run: what their unchanged locks hold
  const reused = only ? ctx.config.sources.filter((env) => env.name !== only.env) : [];
  const fresh = ctx.config.sources.filter((env) => !reused.includes(env));
  const results: (CollectedEnv | Error)[] = [];
  const record = (r: CollectedEnv | Error) => {
    results.push(r);
    if (!(r instanceof Error)) onEnvDone?.(r);
  };
  await Promise.all([
    collectEnvs(ctx, runId, fresh, release, locks, record, collector),
    ...reused.map((env) =>
      reuseEnv(ctx, runId, must(only, 'the --env of a re-collection').previousRunId, env).then(record, (err: unknown) =>
        record(err as Error),
      ),
    ),
  ]);
  const settled = results.map((r) =>
    r instanceof Error ? { status: 'rejected' as const, reason: r } : { status: 'fulfilled' as const, value: r },
  );
  const failures = settled.flatMap((s) => (s.status === 'rejected' ? [s.reason as Error] : []));
  const [only1] = failures;
  if (failures.length === 1 && only1) throw only1;
  if (failures.length > 1) {
    const first = failures[0] as TributaryError;
    throw new TributaryError(first.code ?? 'database', failures.map((f) => f.message).join('\n'), { failures: failures.length });
  }
  let verified: Promise<Map<string, KeyStats>> | undefined;
  const verify = () => {
    if (!verified) {
      verified = checkDrift(ctx, runId, release, locks, only);
      // handled here, reported to whoever awaits it
      verified.catch(() => undefined);
    }
    return verified;
  };
  // the records' statistics and indexes are made by detection, beside its first statements (detect.ts)
  return { envs: settled.flatMap((s) => (s.status === 'fulfilled' ? [s.value as CollectedEnv] : [])), verify };
}
