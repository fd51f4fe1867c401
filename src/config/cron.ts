import { lazy } from '../lazy.js';

/** Cron expressions and time zones as the config accepts them (the nightly schedule). */

/** node-cron, loaded on first use (src/lazy.ts). */
export const nodeCron = lazy<typeof import('node-cron')>('node-cron');

/** Checks an expression and a zone; returns the reason they are unusable, or null. */
export function scheduleProblem(expression: string, timezone: string): string | null {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: timezone });
  } catch {
    return `unknown time zone "${timezone}" (an IANA name such as Europe/Berlin, America/New_York or UTC)`;
  }
  const v = nodeCron().validateDetailed(expression);
  if (!v.valid) return `not a valid cron expression "${expression}": ${v.errors.map((e) => e.message).join('; ')}`;
  const f = nodeCron().parse(expression);
  const odd = [...f.dayOfMonth, ...f.dayOfWeek].filter((x) => typeof x !== 'number');
  if (odd.length > 0) return `cron "${expression}": the tokens ${odd.join(', ')} (L, W, #) are not supported here; use plain numbers, ranges, lists and steps`;
  return null;
}
