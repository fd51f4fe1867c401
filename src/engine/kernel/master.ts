import { envByRole } from '../../config/load.js';
import { tableExists } from './checksum.js';
import { onEnv, type Ctx } from './context.js';
import { must } from './must.js';
import { ident, qualified } from './sql.js';

/** Master, the cumulative dataset: one partition per release, and the keys earlier releases hold there. */

export function releaseSlug(release: string): string {
  return release.toLowerCase().replace(/[^a-z0-9]/g, '_');
}

/** The master partition of `table` that holds `release`'s rows. */
export function partitionName(table: string, release: string): string {
  return `${table}__${releaseSlug(release)}`;
}

/** Which of `keys` master already holds for the entity (its earlier releases' rows). */
export async function masterKeys(ctx: Ctx, entityName: string, keys: string[]): Promise<Set<string>> {
  const master = envByRole(ctx.config, 'master');
  if (!master || keys.length === 0) return new Set();
  const e = must(
    ctx.config.entities.find((x) => x.name === entityName),
    `entity ${entityName} in the config`,
  );
  return onEnv(ctx, master, async () => {
    const k = ctx.db.env(master);
    if (!(await tableExists(k, master.schema, e.table))) return new Set<string>();
    const res = await k.raw<{ rows: { pk: string }[] }>(
      `select ${ident(e.primaryKey)}::text as pk from ${qualified(master.schema, e.table)}
        where ${ident(e.primaryKey)}::text = any(?::text[])`,
      [keys],
    );
    return new Set(res.rows.map((r) => r.pk));
  });
}
