

/**
 * Gate: tag and lock. Checks that every row of a release in every ST env carries its tags and a feature of
 * the release's plan, installs the tagging trigger, and records each env's lock (row count and checksum per
 * table): the gate consolidation passes only while the locks hold. Owns `locks`.
 */
export { installTagging, locksOf, requireLocked, tagRelease } from './tag.js';
export type { LockRow, TagResult } from './tag.js';
