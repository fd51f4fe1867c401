import type { Config, EntitySpec } from '../../config/load.js';

/** Keys, columns and relations of the configured entities, as every phase reads them. */

/** A rename template (policy.renameTemplate) filled for one value. */
export function renderTemplate(template: string, value: string, env: string, feature: string | null, n: number): string {
  return template
    .replace(/\{value\}/g, value)
    .replace(/\{env\}/g, env.toLowerCase())
    .replace(/\{feature\}/g, (feature ?? '').toLowerCase())
    .replace(/\{n\}/g, String(n));
}

/**
 * The columns that are not the payload the rules compare (at consolidation and at promotion): the primary key,
 * the tag columns, the entity's `ignore` columns, and its timestamp column, which only newest-wins compares.
 */
export function nonPayloadColumns(config: Config, e: EntitySpec): string[] {
  const { tags } = config;
  return [...new Set([e.primaryKey, tags.release, tags.feature, tags.createdBy, tags.createdAt, e.timestamp, ...e.ignore])];
}

/** The keys that identify a record across releases: each natural key, then the primary key. */
export function identityKeys(e: EntitySpec): { label: string; columns: string[] }[] {
  const keys = e.naturalKeys.map((k) => ({ label: k.join('+'), columns: k }));
  const pkIsAKey = keys.some((k) => k.columns.length === 1 && k.columns[0] === e.primaryKey);
  if (!pkIsAKey) keys.push({ label: e.primaryKey, columns: [e.primaryKey] });
  return keys;
}

export function childEntities(config: Config, entity: string): { e: EntitySpec; column: string }[] {
  return config.entities.flatMap((e) => e.references.filter((r) => r.entity === entity).map((r) => ({ e, column: r.column })));
}

export function displayValue(v: unknown): string {
  if (v === null || v === undefined) return '∅';
  return typeof v === 'string' ? v : JSON.stringify(v);
}
