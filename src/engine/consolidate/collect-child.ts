import { pipeline } from 'node:stream/promises';
import pg from 'pg';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import PQueue from 'p-queue';
import { lowerPriority } from '../../db/renice.js';
import { failpoint, failpointAction } from '../kernel/failpoints.js';
import { COLUMNS_SQL, rowHashExpr, type TableColumn, textSettingsSql } from '../kernel/checksum.js';
import { cellsObjectSql, corruptOneCell } from '../kernel/copy.js';
import { ROW_CELLS, ROW_HASH, shapeChange, type ChildEnvPlan, type ChildEnvResult, type ChildPlan } from './collect-plan.js';

/**
 * The collection's streaming, in a child process of its own (started by collect.ts): the COPY of every
 * source env into the work area runs here, at lower CPU priority, so that a bot collecting a million rows
 * keeps its own event loop for Slack's acks. Input (stdin, one JSON line, then stdin stays open while
 * the parent wants the work; it holds database passwords, so never argv or the environment): the plan.
 * Output (stdout, one JSON line per env): the rows per entity, or the error.
 */

async function collectOne(plan: ChildPlan, e: ChildEnvPlan): Promise<Record<string, number>> {
  const source = new pg.Client({ ...e.source, connectionTimeoutMillis: 5000 } as pg.ClientConfig);
  const target = new pg.Client({ ...plan.target } as pg.ClientConfig);
  source.on('error', () => undefined);
  target.on('error', () => undefined);
  const perEntity: Record<string, number> = {};
  try {
    await source.connect();
    await target.connect();
    // the server processes doing the work yield to the bot too, when the server runs on this machine
    await Promise.all([lowerPriority(source, e.source.host), lowerPriority(target, plan.target.host)]);
    await source.query('begin isolation level repeatable read read only');
    // every cell is collected as its canonical text, under the settings every copy uses (kernel/copy.ts)
    await source.query(textSettingsSql());
    for (const x of e.entities) {
      const cols = await source.query<TableColumn>(COLUMNS_SQL, [x.table]);
      const change = shapeChange(x.lockedColumns ?? cols.rows, cols.rows);
      if (change) throw new Error(`table ${x.table}: ${change}; re-lock it: tributary tag ${plan.release} --env ${e.env}`);
      // each row's hash travels with it, computed exactly as the lock's checksum was, and its cells as the
      // texts that hash was taken from
      const sql = x.sourceSql.replace(ROW_HASH, rowHashExpr(cols.rows)).replace(ROW_CELLS, cellsObjectSql('t', cols.rows));
      const out = source.query(copyTo(`copy (${sql}) to stdout`));
      const into = target.query(copyFrom(plan.copyIn));
      // a test-only fault (consolidate.collect.copy=corrupt): one cell altered in flight, its row's hash left as the source took it
      if (failpointAction('consolidate.collect.copy') === 'corrupt') await pipeline(out, corruptOneCell(1), into);
      else await pipeline(out, into);
      perEntity[x.entity] = into.rowCount;
    }
    await source.query('commit');
    return perEntity;
  } finally {
    await source.end().catch(() => undefined);
    await target.end().catch(() => undefined);
  }
}

/**
 * The plan: the first line of stdin. The parent keeps stdin open for as long as it wants the work; when it
 * ends (the parent stopped, or was killed with SIGKILL and its end of the pipe closed), this process exits
 * at once, and nothing keeps writing into an abandoned run's work area.
 */
function readPlan(): Promise<ChildPlan> {
  return new Promise((resolve, reject) => {
    let input = '';
    let plan: ChildPlan | undefined;
    process.stdin.setEncoding('utf8');
    process.stdin.on('data', (chunk: string) => {
      if (plan) return;
      input += chunk;
      const nl = input.indexOf('\n');
      if (nl < 0) return;
      try {
        plan = JSON.parse(input.slice(0, nl)) as ChildPlan;
        resolve(plan);
      } catch (err) {
        reject(err as Error);
      }
    });
    process.stdin.on('end', () => {
      if (!plan) process.stderr.write('collection child: stdin closed before a plan came\n');
      process.exit(plan ? 2 : 1);
    });
  });
}

async function main(): Promise<void> {
  const plan = await readPlan();
  await failpoint('consolidate.collect.copy');
  const queue = new PQueue({ concurrency: plan.concurrency });
  const write = (r: ChildEnvResult) => new Promise<void>((resolve) => process.stdout.write(`${JSON.stringify(r)}\n`, () => resolve()));
  await Promise.all(
    plan.envs.map((e) =>
      queue.add(async () => {
        try {
          await write({ env: e.env, perEntity: await collectOne(plan, e) });
        } catch (err) {
          const x = err as { message?: string; code?: string };
          await write({ env: e.env, error: { message: x.message ?? String(err), ...(x.code ? { code: x.code } : {}) } });
        }
      }),
    ),
  );
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`collection child failed: ${(err as Error).message}\n`);
    process.exit(1);
  },
);
