

/**
 * Load: the validated release's final rows into PreProd staging, in one transaction, parents first, verified
 * by counts and checksums on both sides. Owns `loads`.
 */
export { assertReloadConfirmed, loadRelease } from './load.js';
export type { LoadResult } from './load.js';
