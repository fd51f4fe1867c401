

/**
 * Load: the validated release's final rows into PreProd staging, in one transaction, parents first, verified
 * by counts and checksums on both sides. Owns `loads`.
 */
export { assertReloadConfirmed, createTableSql, expectedFigures, loadRelease, sourceShape } from './load.js';
export type { LoadedTable, LoadResult, TableShape } from './load.js';
