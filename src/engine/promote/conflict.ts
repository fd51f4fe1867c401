import type { Config, EntitySpec } from '../../config/load.js';
import { displayValue, identityKeys } from '../kernel/entities.js';
import { must } from '../kernel/must.js';
import { conflictPriority, featurePriority, type ConflictPriority } from '../kernel/priority.js';
import type { ConflictDetail, CrossReleaseInfo, VersionView } from '../review/index.js';
import { countReferencing } from './children.js';
import type { Blocking, Known, Pair, Scope } from './types.js';

/** A cross-release conflict as the review queue shows it: the two rows, what differs, the children of each. */

/** The shared identity of a pair, as `column=value` of its first shared key. */
export function keyLabel(e: EntitySpec, p: Pair, data: Record<string, unknown>): string {
  const k = must(
    identityKeys(e).find((x) => x.label === p.keys[0]),
    `the identity key ${p.keys[0] ?? '(none)'} of ${e.name}`,
  );
  return k.columns.map((c) => `${c}=${displayValue(data[c])}`).join(', ');
}

/** The two rows of a differing pair, as their cells' texts (loaded by pairs.ts differingRows). */
export function rowsOf(sc: Scope, p: Pair): { s: Record<string, unknown>; o: Record<string, unknown> } {
  return {
    s: must(sc.sdata.get(p.spk), `${sc.w.e.name} ${p.spk} of ${sc.s.release}`),
    o: must(sc.mdata.get(`${p.mrel}|${p.mpk}`), `${sc.w.e.name} ${p.mpk} of ${p.mrel} in master`),
  };
}

/** The conflict of a differing pair; `why` says why it is (again) for a person, `existing` is its open conflict. */
export async function conflictFor(sc: Scope, p: Pair, why?: string, existing?: Known): Promise<Blocking> {
  const { s: session, w } = sc;
  const { ctx, release } = session;
  const e = w.e;
  const { s, o } = rowsOf(sc, p);
  const skip = new Set(sc.excl);
  const attrs = w.columns.map((c) => c.name).filter((c) => !skip.has(c) && displayValue(s[c]) !== displayValue(o[c]));
  const more = attrs.length > 4 ? `, … (${attrs.length} attributes differ)` : '';
  const show = (d: Record<string, unknown>) => `${attrs.slice(0, 4).map((a) => `${a}=${displayValue(d[a])}`).join(', ')}${more}`;
  const label = keyLabel(e, p, s);
  const children = {
    master: await countReferencing(session.m, ctx.config, sc.out.byEntity, e, p.mpk, 'master'),
    release: await countReferencing(session.m, ctx.config, sc.out.byEntity, e, p.spk, 'release'),
  };
  const info: CrossReleaseInfo = {
    release,
    masterRelease: p.mrel,
    stagingPk: p.spk,
    masterPk: p.mpk,
    keys: p.keys,
    stagingHash: p.shash,
    masterHash: p.mhash,
  };
  const detail: ConflictDetail = {
    reason: `${e.name} ${label}: ${p.mrel} in master has ${show(o)}, ${release} has ${show(s)}${why ? ` (${why})` : ''}`,
    suggestion: 'none',
    differing: attrs,
    versions: [
      versionView(ctx.config, e, { no: 1, env: 'master', pk: p.mpk, release: p.mrel, data: o, children: children.master }),
      versionView(ctx.config, e, { no: 2, env: 'staging', pk: p.spk, release, data: s, children: children.release }),
    ],
    crossRelease: info,
  };
  const priority = pairPriority(ctx.config, release, p, s, o);
  return { entity: e.name, identity: `${p.spk}|${p.mrel}|${p.mpk}`, keyLabel: label, priority, detail, ...(existing ? { existing } : {}) };
}

function versionView(
  config: Config,
  e: EntitySpec,
  v: { no: number; env: string; pk: string; release: string; data: Record<string, unknown>; children: number },
): VersionView {
  const d = v.data;
  return {
    no: v.no,
    envs: [v.env],
    pks: [v.pk],
    feature: (d[config.tags.feature] as string | null) ?? null,
    features: null,
    created_by: (d[config.tags.createdBy] as string | null) ?? null,
    created_at: d[config.tags.createdAt] == null ? null : String(d[config.tags.createdAt]),
    ts: d[e.timestamp] == null ? null : String(d[e.timestamp]),
    data: d,
    children: v.children,
    release: v.release,
  };
}

/** A cross-release conflict's priority: P1 when the release's row or master's is of a critical feature, each in its own release's plan. */
function pairPriority(config: Config, release: string, p: Pair, s: Record<string, unknown>, o: Record<string, unknown>): ConflictPriority {
  return conflictPriority([
    featurePriority(config, release, s[config.tags.feature]),
    featurePriority(config, p.mrel, o[config.tags.feature]),
  ]);
}
