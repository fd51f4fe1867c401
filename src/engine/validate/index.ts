

/**
 * Validate: integrity (references over every hop, types, required columns) and the config's data tests over
 * the consolidated rows; findings F-001… are decided, waived or fixed at the source, and the release becomes
 * validated when none is open. Owns `findings`.
 */
export { decideFinding, isFindingCode, listFindings, validateRelease, waiveFinding } from './validate.js';
export type { FindingDecisionOutcome, FindingRow, ValidationReport } from './validate.js';
