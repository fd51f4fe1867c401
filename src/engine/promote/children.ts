import type { Config, EntitySpec } from '../../config/load.js';
import { childEntities } from '../kernel/entities.js';
import { must } from '../kernel/must.js';
import { ident } from '../kernel/sql.js';
import type { Query, Work } from './types.js';

/** The children of a promoted row: counted before a decision removes it, and made to follow its key. */

function workOf(works: Map<string, Work>, entity: string): Work {
  return must(works.get(entity), `the promotion of entity ${entity}`);
}

/** Rows referencing `pk` of entity `e`: in the release's new partitions, or in master's other releases. */
export async function countReferencing(
  m: Query,
  config: Config,
  works: Map<string, Work>,
  e: EntitySpec,
  pk: string,
  where: 'release' | 'master',
): Promise<number> {
  let n = 0;
  for (const { e: child, column } of childEntities(config, e.name)) {
    const w = workOf(works, child.name);
    const table = where === 'release' ? w.partQ : w.parent;
    const res = await m(`select count(*)::int as n from ${table} where ${ident(column)}::text = $1`, [pk]);
    n += must((res.rows as { n: number }[])[0], 'a count').n;
  }
  return n;
}

function typeOf(w: Work, col: string): string {
  return must(w.columns.find((c) => c.name === col), `column ${col} of ${w.staging}`).type;
}

/** Children in the release of rows whose key changed (or that master's row stands in for) follow them. */
export async function repoint(
  m: Query,
  config: Config,
  works: Map<string, Work>,
  e: EntitySpec,
  mapping: Map<string, string>,
): Promise<void> {
  for (const { e: child, column } of childEntities(config, e.name)) {
    const w = workOf(works, child.name);
    const res = await m(
      `update ${w.partQ} c set ${ident(column)} = u.new::${typeOf(w, column)} from unnest($1::text[], $2::text[]) as u(old, new)
        where c.${ident(column)}::text = u.old returning c.${ident(child.primaryKey)}::text as pk, u.new as nv`,
      [[...mapping.keys()], [...mapping.values()]],
    );
    for (const r of res.rows as { pk: string; nv: string }[]) {
      const orig = w.pkOrig.get(r.pk) ?? r.pk;
      w.patches.set(orig, { ...(w.patches.get(orig) ?? {}), [column]: r.nv });
    }
  }
}
