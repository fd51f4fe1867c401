import { freshKeys, keyFloor, maxIntegerKeySql } from '../kernel/freshKeys.js';
import { must } from '../kernel/must.js';
import { ident } from '../kernel/sql.js';
import { renameValues } from '../review/index.js';
import { countReferencing } from './children.js';
import { conflictFor, rowsOf } from './conflict.js';
import type { Decided, Pair, Query, Scope, Work } from './types.js';

/**
 * Applying the decisions on one release row's differing pairs (see planCrossRelease in
 * ../review/crossRelease.ts for what each one does): keep 1 and delete both keep the row out, keep 2 deletes
 * master's row, keep both renames the row (and gives it a new key where it shares master's). A decision that
 * would leave rows pointing at nothing, or a rename some other row already has, opens the conflict anew.
 */

interface Applying {
  renames: Record<string, string>;
  newPk: boolean;
  applied: { x: Decided; effect: string }[];
  inapplicable: { x: Decided; why: string }[];
}

export async function applyDecisions(sc: Scope, spk: string, decided: Decided[]): Promise<void> {
  const notPromoted = decided.find((x) => (x.d.action === 'keep' && x.d.version === 1) || x.d.action === 'delete-both');
  const a: Applying = { renames: {}, newPk: false, applied: [], inapplicable: [] };
  for (const x of decided) await applyOne(sc, spk, decided, notPromoted, x, a);
  for (const { x, why } of a.inapplicable) sc.out.blocking.push(await conflictFor(sc, x.p, why));
  if (a.inapplicable.length > 0) return;
  if (notPromoted) {
    sc.w.skipped.add(spk);
  } else if (a.newPk || Object.keys(a.renames).length > 0) {
    if (!(await renameRow(sc, spk, a))) return;
  }
  const e = sc.w.e;
  for (const { x, effect } of a.applied) {
    sc.w.decisions.push({ code: x.k.code, entity: e.name, key: x.k.key_label, action: x.d.action, effect });
  }
}

/** One decision of the row's: applied, or found inapplicable (`a` gathers both, and keep both's renames). */
async function applyOne(
  sc: Scope,
  spk: string,
  decided: Decided[],
  notPromoted: Decided | undefined,
  x: Decided,
  a: Applying,
): Promise<void> {
  const { s, w } = sc;
  const { p, d } = x;
  const samePk = p.spk === p.mpk;
  if (d.action === 'keep' && d.version === 1) {
    const other = decided.some((y) => y.p.mpk === spk && y.d.action === 'keep' && y.d.version === 1);
    if (!samePk && !sc.mapping.has(spk) && !other) sc.mapping.set(spk, p.mpk);
    const children = samePk ? '' : `; ${s.release}'s children point at ${w.e.primaryKey} ${p.mpk}`;
    a.applied.push({ x, effect: `not promoted: ${p.mrel}'s row stays${children}` });
  } else if (d.action === 'delete-both') {
    await deleteBoth(sc, x, a);
  } else if (notPromoted) {
    a.applied.push({ x, effect: `overridden by ${notPromoted.k.code} (${s.release}'s row is not promoted)` });
  } else if (d.action === 'keep') {
    await keepRelease(sc, x, a);
  } else if (d.action === 'keep-both') {
    const { s: row, o } = rowsOf(sc, p);
    Object.assign(a.renames, renameValues(s.ctx.config, w.e, s.release, row, o, d.rename?.[2]));
    if (samePk) a.newPk = true;
    a.applied.push({ x, effect: 'promoted, renamed' });
  }
}

/** Delete both: master's row deleted, the release's not promoted, unless some row now references either. */
async function deleteBoth(sc: Scope, x: Decided, a: Applying): Promise<void> {
  const { s, w } = sc;
  const { p } = x;
  const mine = await countReferencing(s.m, s.ctx.config, sc.out.byEntity, w.e, p.spk, 'release');
  const theirs = await countReferencing(s.m, s.ctx.config, sc.out.byEntity, w.e, p.mpk, 'master');
  if (mine + theirs > 0) {
    a.inapplicable.push({ x, why: `${x.k.code}'s delete-both no longer applies: ${mine + theirs} row(s) now reference the two rows` });
    return;
  }
  await deleteMaster(sc, p);
  a.applied.push({ x, effect: `neither kept: ${p.mrel}'s row deleted, ${s.release}'s not promoted` });
}

/** Keep 2: master's row deleted, unless rows of earlier releases reference it under another key. */
async function keepRelease(sc: Scope, x: Decided, a: Applying): Promise<void> {
  const { s, w } = sc;
  const { p } = x;
  if (p.spk !== p.mpk) {
    const theirs = await countReferencing(s.m, s.ctx.config, sc.out.byEntity, w.e, p.mpk, 'master');
    if (theirs > 0) {
      const why =
        `${x.k.code}'s keep 2 no longer applies: ` +
        `${theirs} row(s) of earlier releases now reference ${p.mrel}'s ${w.e.primaryKey} ${p.mpk}`;
      a.inapplicable.push({ x, why });
      return;
    }
  }
  await deleteMaster(sc, p);
  a.applied.push({ x, effect: `promoted; ${p.mrel}'s row deleted from master` });
}

async function deleteMaster(sc: Scope, p: Pair): Promise<void> {
  const { s, w } = sc;
  const res = await s.m(`delete from ${w.parent} where ${ident(w.e.primaryKey)}::text = $1 and ${ident(s.rel)} = $2`, [p.mpk, p.mrel]);
  if ((res.rowCount ?? 0) > 0) sc.out.replaced.push({ entity: w.e.name, release: p.mrel, pk: p.mpk });
}

/**
 * Keep both: the release's row renamed (and given a new key where it shares master's; its children follow),
 * unless a new value is some other row's (the keep-both conflicts are opened anew). Whether it was renamed.
 */
async function renameRow(sc: Scope, spk: string, a: Applying): Promise<boolean> {
  const { s, w } = sc;
  const e = w.e;
  const patch: Record<string, string> = { ...a.renames };
  const newPk = a.newPk ? await freshPk(s.m, w, spk, s.release) : undefined;
  if (newPk !== undefined) patch[e.primaryKey] = newPk;
  const taken = await renameTaken(s.m, w, s.rel, s.release, spk, a.renames);
  if (taken) {
    for (const { x } of a.applied.filter((y) => y.x.d.action === 'keep-both')) {
      sc.out.blocking.push(await conflictFor(sc, x.p, `${x.k.code}'s keep-both would give ${taken}; decide it again with --rename`));
    }
    return false;
  }
  await patchRow(s.m, w, spk, patch);
  if (newPk !== undefined) {
    sc.mapping.set(spk, newPk);
    w.pkOrig.set(newPk, spk);
  }
  const effect = `promoted as ${Object.entries(patch).map(([c, v]) => `${c}=${v}`).join(', ')}`;
  for (const r of a.applied) if (r.x.d.action === 'keep-both') r.effect = effect;
  return true;
}

/** A primary key for the release's row that no row of any release has (keep both on a shared key): kernel/freshKeys.ts. */
async function freshPk(m: Query, w: Work, spk: string, release: string): Promise<string> {
  const pk = `${ident(w.e.primaryKey)}::text`;
  if (!w.freshKey) {
    const res = await m(`select greatest(${maxIntegerKeySql(pk, w.parent)}, ${maxIntegerKeySql(pk, w.partQ)})::text as m`);
    w.freshKey = freshKeys(keyFloor(must((res.rows as { m: string | null }[])[0], 'the highest key').m));
  }
  return w.freshKey(spk, release);
}

/** The first renamed value some other row already has, described; else null. */
async function renameTaken(
  m: Query,
  w: Work,
  rel: string,
  release: string,
  spk: string,
  renames: Record<string, string>,
): Promise<string | null> {
  const pk = ident(w.e.primaryKey);
  for (const [col, value] of Object.entries(renames)) {
    const res = await m(
      `(select ${pk}::text as pk, ${ident(rel)}::text as rel from ${w.parent} where ${ident(col)}::text = $1 limit 1)
       union all (select ${pk}::text, $3 from ${w.partQ} where ${ident(col)}::text = $1 and ${pk}::text <> $2 limit 1)`,
      [value, spk, release],
    );
    const r = res.rows[0] as { pk: string; rel: string } | undefined;
    if (r) return `${w.e.name} ${col}=${value}, which ${w.e.primaryKey} ${r.pk} of ${r.rel} already has`;
  }
  return null;
}

/** Sets columns of one release row (by its staging key), here and in the staging-side checksum. */
async function patchRow(m: Query, w: Work, spk: string, patch: Record<string, string>): Promise<void> {
  const cols = w.columns.map((c) => ident(c.name)).join(', ');
  const fields = w.columns.map((c) => `x.${ident(c.name)}`).join(', ');
  await m(
    `update ${w.partQ} t set (${cols}) = (select ${fields} from jsonb_populate_record(t, $1::jsonb) as x)
      where t.${ident(w.e.primaryKey)}::text = $2`,
    [JSON.stringify(patch), spk],
  );
  w.patches.set(spk, { ...(w.patches.get(spk) ?? {}), ...patch });
}
