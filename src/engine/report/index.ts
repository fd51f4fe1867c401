

/**
 * Report: read-only views across the phases: a release's status and result (status.ts), the lineage of a
 * record (lineage.ts, `why`), and the audit summary and chain verification (auditTrail.ts).
 */
export { auditSummary, chainHead, releaseEvents, verifyChain } from './auditTrail.js';
export type { AuditEventView, AuditSummary, ChainReport, StepName, StepTime } from './auditTrail.js';
export { why } from './lineage.js';
export type { Lineage } from './lineage.js';
export { releaseStatus, resultCounts, resultRecords } from './status.js';
export type { ReleaseStatus, ResultCounts, ResultRecord } from './status.js';
