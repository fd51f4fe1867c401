/**
 * Transfer: the hybrid estate's bridge. The cloud side (sources, consolidation, review, validation) exports
 * a validated release as a signed package: per table a gzip file of the rows as COPY text (the verified
 * copy's carrier), and a manifest (release, run, counts and checksums, each file's SHA-256, columns and
 * types, the lineage `why` needs, the release's audit events with the chain head) signed with Ed25519
 * (kernel/package.ts). The on-premises side, with a control database and a config of its own (no sources),
 * verifies the package and loads it into staging in one transaction, verified against the manifest's counts
 * and checksums; the travelled audit events are kept as a chain of their own. Owns `transfer_packages` and
 * `imported_audit_events`.
 */
export { exportRelease } from './export.js';
export type { ExportResult } from './export.js';
export { importRelease } from './import.js';
export type { ImportResult } from './import.js';
export { verifyTravelledChains } from './chain.js';
export type { TravelledChain } from './chain.js';
export { generateKeyPair } from '../kernel/package.js';
