import { nodeCron, scheduleProblem } from '../../config/cron.js';
import { must } from './must.js';

/**
 * The slots of a cron schedule in a time zone: pure functions, no clock and no database.
 *
 * A slot is a wall-clock time in the zone at which the cron expression matches (node-cron matches the
 * same fields against the same local time; test/engine/kernel/schedule.test.ts checks that they agree). Its key
 * (`2026-03-29T02:30:00[Europe/Berlin]`) is what exactly-once is enforced on, so:
 *   - when clocks go back, a wall-clock time that happens twice is one slot (node-cron fires twice; the
 *     second firing finds the slot taken), at its first instant;
 *   - when clocks go forward, a wall-clock time that does not happen is still a slot: it falls due at
 *     the instant the same time would have with the offset before the change (02:30 in a gap from 02:00
 *     to 03:00 is due at 03:30), as most schedulers do; node-cron does not fire then, so the scheduler
 *     arms a timer for such a slot.
 */
export interface CronFields {
  second: number[];
  minute: number[];
  hour: number[];
  dayOfMonth: number[];
  month: number[];
  dayOfWeek: number[];
}

export interface Schedule {
  expression: string;
  timezone: string;
  fields: CronFields;
}

export interface Slot {
  /** Wall-clock time and zone, e.g. `2026-03-29T02:30:00[Europe/Berlin]`: the unit of exactly-once. */
  key: string;
  /** The instant the slot falls due. */
  at: Date;
  /** The wall-clock time does not exist (clocks went forward over it): node-cron never fires for it. */
  gap: boolean;
}

interface Wall {
  year: number;
  month: number;
  day: number;
  hour: number;
  minute: number;
  second: number;
}

export function makeSchedule(expression: string, timezone: string): Schedule {
  const problem = scheduleProblem(expression, timezone);
  if (problem) throw new Error(problem);
  const f = nodeCron().parse(expression);
  const nums = (xs: (number | string)[]) => [...new Set(xs.map(Number))].sort((a, b) => a - b);
  return {
    expression,
    timezone,
    fields: {
      second: nums(f.second),
      minute: nums(f.minute),
      hour: nums(f.hour),
      dayOfMonth: nums(f.dayOfMonth),
      month: nums(f.month),
      dayOfWeek: nums(f.dayOfWeek).map((d) => d % 7),
    },
  };
}

const formatters = new Map<string, Intl.DateTimeFormat>();

function formatter(timezone: string): Intl.DateTimeFormat {
  let f = formatters.get(timezone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone: timezone,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      second: 'numeric',
    });
    formatters.set(timezone, f);
  }
  return f;
}

/** The wall-clock time of an instant in a zone. */
export function wallOf(at: Date, timezone: string): Wall {
  const p: Record<string, number> = {};
  for (const part of formatter(timezone).formatToParts(at)) if (part.type !== 'literal') p[part.type] = Number(part.value);
  const field = (name: string): number => must(p[name], `the ${name} of ${at.toISOString()} in ${timezone}`);
  return {
    year: field('year'),
    month: field('month'),
    day: field('day'),
    hour: field('hour') % 24,
    minute: field('minute'),
    second: field('second'),
  };
}

const asUtc = (w: Wall) => Date.UTC(w.year, w.month - 1, w.day, w.hour, w.minute, w.second);

/** Offset of the zone at an instant, in ms (local − UTC). */
function offsetMs(ms: number, timezone: string): number {
  return asUtc(wallOf(new Date(Math.floor(ms / 1000) * 1000), timezone)) - Math.floor(ms / 1000) * 1000;
}

/** The instant of a wall-clock time: the first when it happens twice; for one that never happens, the offset from before the change. */
export function instantOf(w: Wall, timezone: string): { at: Date; gap: boolean } {
  const local = asUtc(w);
  const before = offsetMs(local - 86_400_000, timezone);
  const after = offsetMs(local + 86_400_000, timezone);
  const candidates = [...new Set([local - before, local - after])].sort((a, b) => a - b);
  for (const c of candidates) if (asUtc(wallOf(new Date(c), timezone)) === local) return { at: new Date(c), gap: false };
  return { at: new Date(local - before), gap: true };
}

const pad = (n: number, w = 2) => String(n).padStart(w, '0');

export function wallText(w: Wall): string {
  return `${pad(w.year, 4)}-${pad(w.month)}-${pad(w.day)}T${pad(w.hour)}:${pad(w.minute)}:${pad(w.second)}`;
}

export function slotKey(w: Wall, timezone: string): string {
  return `${wallText(w)}[${timezone}]`;
}

function dayMatches(s: Schedule, year: number, month: number, day: number): boolean {
  const weekday = new Date(Date.UTC(year, month - 1, day)).getUTCDay();
  return s.fields.month.includes(month) && s.fields.dayOfMonth.includes(day) && s.fields.dayOfWeek.includes(weekday);
}

/** Does the schedule match this wall-clock time (the same fields node-cron compares)? */
export function matchesWall(s: Schedule, w: Wall): boolean {
  const { second, minute, hour } = s.fields;
  return second.includes(w.second) && minute.includes(w.minute) && hour.includes(w.hour) && dayMatches(s, w.year, w.month, w.day);
}

function addDays(year: number, month: number, day: number, n: number): { year: number; month: number; day: number } {
  const d = new Date(Date.UTC(year, month - 1, day + n));
  return { year: d.getUTCFullYear(), month: d.getUTCMonth() + 1, day: d.getUTCDate() };
}

/** Wall-clock times of one day that match, in order. */
function* timesOfDay(s: Schedule, d: { year: number; month: number; day: number }, reverse: boolean): Generator<Wall> {
  if (!dayMatches(s, d.year, d.month, d.day)) return;
  const order = (xs: number[]) => (reverse ? [...xs].reverse() : xs);
  for (const hour of order(s.fields.hour)) {
    for (const minute of order(s.fields.minute)) for (const second of order(s.fields.second)) yield { ...d, hour, minute, second };
  }
}

const MAX_DAYS = 400;

/** The newest slot due at `now` (its instant ≤ now), or null when none in the last 400 days. */
export function latestSlot(s: Schedule, now: Date): Slot | null {
  const today = wallOf(now, s.timezone);
  // local dates around now: a slot's instant may differ from its wall time by the zone's offset change
  for (let i = 1; i >= -MAX_DAYS; i--) {
    const d = addDays(today.year, today.month, today.day, i);
    for (const w of timesOfDay(s, d, true)) {
      if (i >= 0 && asUtc(w) > asUtc(today) + 2 * 3_600_000) continue;
      const { at, gap } = instantOf(w, s.timezone);
      if (at.getTime() <= now.getTime()) return { key: slotKey(w, s.timezone), at, gap };
    }
  }
  return null;
}

/** The first slot due after `now`. */
export function nextSlot(s: Schedule, now: Date): Slot | null {
  const today = wallOf(now, s.timezone);
  for (let i = -1; i <= MAX_DAYS; i++) {
    const d = addDays(today.year, today.month, today.day, i);
    for (const w of timesOfDay(s, d, false)) {
      if (i <= 0 && asUtc(w) < asUtc(today) - 2 * 3_600_000) continue;
      const { at, gap } = instantOf(w, s.timezone);
      if (at.getTime() > now.getTime()) return { key: slotKey(w, s.timezone), at, gap };
    }
  }
  return null;
}

/** Every slot due in (from, to], in order. */
export function slotsBetween(s: Schedule, from: Date, to: Date): Slot[] {
  const out: Slot[] = [];
  let cursor = from;
  for (;;) {
    const n = nextSlot(s, cursor);
    if (!n || n.at.getTime() > to.getTime()) return out;
    out.push(n);
    cursor = n.at;
  }
}

/** The instant at or after `after` when the wall clock in the zone next reads `hhmm` (for postAt). */
export function nextWallTime(hhmm: string, timezone: string, after: Date): Date {
  const [hour, minute] = hhmm.split(':').map(Number) as [number, number];
  const w = wallOf(after, timezone);
  for (let i = 0; i <= 2; i++) {
    const d = addDays(w.year, w.month, w.day, i);
    const { at } = instantOf({ ...d, hour, minute, second: 0 }, timezone);
    if (at.getTime() >= after.getTime()) return at;
  }
  return after;
}
