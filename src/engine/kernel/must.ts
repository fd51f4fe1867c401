/**
 * Checks that replace non-null assertions: each says what was expected, so a broken invariant fails
 * with a sentence rather than `cannot read properties of undefined` somewhere later.
 */
export class InvariantError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InvariantError';
  }
}

/** `value`, or an error saying what was expected there (`what`: e.g. "the run's row for run 12"). */
export function must<T>(value: T | null | undefined, what: string): T {
  if (value === null || value === undefined) throw new InvariantError(`expected ${what}, found none`);
  return value;
}

/** The first of `rows`, or an error saying what was expected (a query that must return a row). */
export function firstRow<T>(rows: readonly T[], what: string): T {
  return must(rows[0], what);
}
