import { TributaryError } from '../../errors.js';

/**
 * The rationale every human decision carries (a conflict's or finding's decision, a waiver, an approval, Go
 * and No-go, a rollback): at least three characters other than white space, enforced here for every path
 * (CLI, Slack, the engine's own callers), and kept trimmed.
 */
export const RATIONALE_MIN = 3;

/**
 * The rationale, trimmed; refused (decision_invalid, or the caller's code) when too short, naming what it
 * is for and the question it answers.
 */
export function requireRationale(
  raw: string | undefined | null,
  what: string,
  question: string,
  code: 'decision_invalid' | 'usage' = 'decision_invalid',
): string {
  const rationale = (raw ?? '').trim();
  if (rationale.replace(/\s/g, '').length < RATIONALE_MIN) {
    throw new TributaryError(code, `${what} needs a rationale of at least ${RATIONALE_MIN} characters (${question})`, {
      field: 'rationale',
    });
  }
  return rationale;
}
