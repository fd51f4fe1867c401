

/**
 * Validate: integrity (references over every hop, types, required columns) and the config's data tests over
 * the consolidated rows; findings F-001… are decided, waived or fixed at the source, and the release becomes
 * validated when none is open. Owns `findings`. The modules: validate.ts (a validation's steps), columns.ts,
 * references.ts and tests.ts (what each checks), scope.ts (the findings of one validation), shape.ts (the ST
 * table's shape), findings.ts (listing, waivers and decisions), types.ts.
 */
export { validateRelease } from './validate.js';
export { decideFinding, isFindingCode, listFindings, waiveFinding } from './findings.js';
export type { FindingDecisionOutcome } from './findings.js';
export type { FindingRow, ValidationReport } from './types.js';
