import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createTask } from 'node-cron';
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { loadConfig } from '../../../src/config/load.js';
import { latestSlot, makeSchedule, matchesWall, nextSlot, nextWallTime, slotsBetween, wallOf } from '../../../src/engine/kernel/schedule.js';
import { scheduleProblem } from '../../../src/config/cron.js';

/**
 * The nightly schedule's slots are computed by a pure function; node-cron fires the same schedule.
 * Across daylight-saving changes they must agree on every minute, with exactly two documented
 * differences: a wall-clock time that does not exist (spring forward) is still one slot, due at the
 * same time with the old offset; a wall-clock time that happens twice (fall back) is one slot.
 */
function cronInstants(expr: string, timezone: string, from: string, to: string): string[] {
  const task = createTask(expr, () => undefined, { timezone });
  const out: string[] = [];
  for (let t = Date.parse(from); t <= Date.parse(to); t += 60_000) if (task.match(new Date(t))) out.push(new Date(t).toISOString());
  void task.destroy();
  return out;
}

describe('slots across daylight-saving changes', () => {
  it('spring forward in Europe/Berlin: node-cron skips 02:30; the slot exists once, due at 03:30 local', () => {
    const s = makeSchedule('30 2 * * *', 'Europe/Berlin');
    const from = '2026-03-27T00:00:00Z';
    const to = '2026-04-01T00:00:00Z';
    const cron = cronInstants('30 2 * * *', 'Europe/Berlin', from, to);
    expect(cron).toEqual(['2026-03-27T01:30:00.000Z', '2026-03-28T01:30:00.000Z', '2026-03-30T00:30:00.000Z', '2026-03-31T00:30:00.000Z']);
    const slots = slotsBetween(s, new Date(from), new Date(to));
    expect(slots.filter((x) => !x.gap).map((x) => x.at.toISOString())).toEqual(cron);
    const gap = slots.filter((x) => x.gap);
    expect(gap).toEqual([{ key: '2026-03-29T02:30:00[Europe/Berlin]', at: new Date('2026-03-29T01:30:00Z'), gap: true }]);
    expect(wallOf(gap[0]!.at, 'Europe/Berlin')).toMatchObject({ hour: 3, minute: 30 });
    // one slot per night, five nights
    expect(slots.map((x) => x.key)).toEqual(['2026-03-27', '2026-03-28', '2026-03-29', '2026-03-30', '2026-03-31'].map((d) => `${d}T02:30:00[Europe/Berlin]`));
    // the scheduler's view at any instant: the gap slot falls due at 01:30Z, not before
    expect(latestSlot(s, new Date('2026-03-29T01:29:59Z'))!.key).toBe('2026-03-28T02:30:00[Europe/Berlin]');
    expect(latestSlot(s, new Date('2026-03-29T01:30:00Z'))!.key).toBe('2026-03-29T02:30:00[Europe/Berlin]');
    expect(nextSlot(s, new Date('2026-03-28T12:00:00Z'))).toEqual(gap[0]);
  });

  it('fall back in Europe/Berlin: node-cron fires 02:30 twice; both firings are the same slot', () => {
    const s = makeSchedule('30 2 * * *', 'Europe/Berlin');
    const cron = cronInstants('30 2 * * *', 'Europe/Berlin', '2026-10-24T00:00:00Z', '2026-10-27T00:00:00Z');
    expect(cron).toEqual(['2026-10-24T00:30:00.000Z', '2026-10-25T00:30:00.000Z', '2026-10-25T01:30:00.000Z', '2026-10-26T01:30:00.000Z']);
    const slots = slotsBetween(s, new Date('2026-10-24T00:00:00Z'), new Date('2026-10-27T00:00:00Z'));
    expect(slots.map((x) => [x.key, x.at.toISOString(), x.gap])).toEqual([
      ['2026-10-24T02:30:00[Europe/Berlin]', '2026-10-24T00:30:00.000Z', false],
      ['2026-10-25T02:30:00[Europe/Berlin]', '2026-10-25T00:30:00.000Z', false],
      ['2026-10-26T02:30:00[Europe/Berlin]', '2026-10-26T01:30:00.000Z', false],
    ]);
    // each of node-cron's firings maps to the slot due then: the second 02:30 finds the same key
    expect(cron.map((c) => latestSlot(s, new Date(c))!.key)).toEqual([
      '2026-10-24T02:30:00[Europe/Berlin]',
      '2026-10-25T02:30:00[Europe/Berlin]',
      '2026-10-25T02:30:00[Europe/Berlin]',
      '2026-10-26T02:30:00[Europe/Berlin]',
    ]);
  });

  it('agrees with node-cron on every minute around the changes, for several zones and expressions', () => {
    const cases: [string, string, string][] = [
      ['*/15 * * * *', 'America/New_York', '2026-03-07T12:00:00Z'],
      ['0 2 * * *', 'America/New_York', '2026-11-01T00:00:00Z'],
      ['0 9 * * 1', 'Europe/London', '2026-03-28T00:00:00Z'],
      ['30 1,2,3 * * *', 'Australia/Sydney', '2026-04-04T00:00:00Z'],
      ['0 0 1,15 * *', 'UTC', '2026-02-27T00:00:00Z'],
    ];
    for (const [expr, tz, from] of cases) {
      const s = makeSchedule(expr, tz);
      const task = createTask(expr, () => undefined, { timezone: tz });
      const start = Date.parse(from);
      const mine: string[] = [];
      const theirs: string[] = [];
      for (let t = start; t < start + 3 * 86_400_000; t += 60_000) {
        const d = new Date(t);
        if (matchesWall(s, wallOf(d, tz))) mine.push(d.toISOString());
        if (task.match(d)) theirs.push(d.toISOString());
      }
      void task.destroy();
      expect(mine, `${expr} in ${tz}`).toEqual(theirs);
      expect(theirs.length, `${expr} in ${tz}`).toBeGreaterThan(0);
    }
  });

  it('posts at the morning hour: the next 07:30 local after the run, across the change', () => {
    expect(nextWallTime('07:30', 'Europe/Berlin', new Date('2026-03-29T01:30:00Z')).toISOString()).toBe('2026-03-29T05:30:00.000Z');
    expect(nextWallTime('07:30', 'Europe/Berlin', new Date('2026-03-28T01:30:00Z')).toISOString()).toBe('2026-03-28T06:30:00.000Z');
    expect(nextWallTime('07:30', 'Europe/Berlin', new Date('2026-03-28T07:00:00Z')).toISOString()).toBe('2026-03-29T05:30:00.000Z');
  });
});

describe('schedule configuration', () => {
  it('names a bad cron expression or time zone', () => {
    expect(scheduleProblem('61 2 * * *', 'UTC')).toMatch(/not a valid cron expression "61 2 \* \* \*"/);
    expect(scheduleProblem('0 2 * * *', 'Mars/Olympus')).toMatch(/unknown time zone "Mars\/Olympus"/);
    expect(scheduleProblem('0 2 L * *', 'UTC')).toMatch(/not supported/);
    expect(scheduleProblem('0 2 * * *', 'Europe/Berlin')).toBeNull();
  });

  it('is a config error naming the file and the path', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tributary-nightly-cfg-'));
    const file = path.join(dir, 'tributary.yml');
    const base = {
      releases: { R1: { features: { 'FEAT-1': { priority: 'high', owner: 'U0OWNER' } } } },
      environments: { 'ST-1': { role: 'source', precedence: 1 }, master: { role: 'master' } },
      dataset: { entities: { users: { primaryKey: 'id' } } },
    };
    const load = (nightly: Record<string, unknown>) => {
      fs.writeFileSync(file, stringify({ ...base, nightly }));
      return loadConfig({ file, env: {} });
    };
    try {
      expect(() => load({ schedule: '0 25 * * *', timezone: 'UTC', channel: 'C1' })).toThrow(`${file}: nightly.schedule: not a valid cron expression`);
      expect(() => load({ schedule: '0 2 * * *', timezone: 'Europe/Nowhere', channel: 'C1' })).toThrow(`${file}: nightly.timezone: unknown time zone "Europe/Nowhere"`);
      expect(() => load({ schedule: '0 2 * * *', timezone: 'UTC', channel: 'C1', postAt: '7:30' })).toThrow(`${file}: nightly.postAt: a time of day HH:MM`);
      expect(() => load({ schedule: '0 2 * * *', timezone: 'UTC', channel: 'C1', pruneDigest: 'weekly' })).toThrow(`${file}: nightly.pruneDigest: not a valid cron expression`);
      expect(() => load({ schedule: '0 2 * * *', timezone: 'UTC' })).toThrow(`${file}: nightly.channel`);
      const c = load({ schedule: '0 2 * * *', timezone: 'Europe/Berlin', channel: 'C1', postAt: '07:30' });
      expect(c.nightly).toEqual({ schedule: '0 2 * * *', timezone: 'Europe/Berlin', channel: 'C1', postAt: '07:30', nights: 14, pruneDigest: '0 9 * * 1' });
      expect(c.archive.dir).toBe(path.join(dir, '.tributary/archive'));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
