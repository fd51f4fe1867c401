import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { throttled } from '../../src/slack/throttle.js';

/** Progress updates (a command's progress message, a deployment's): at most one per interval, the latest winning. */
describe('throttled', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('sends the first at once, then at most one per interval: the latest of those pushed meanwhile', () => {
    const sent: number[] = [];
    const updates = throttled<number>(1000, (n) => sent.push(n));
    updates.push(1);
    vi.advanceTimersByTime(0);
    expect(sent).toEqual([1]);
    updates.push(2);
    updates.push(3);
    vi.advanceTimersByTime(999);
    expect(sent).toEqual([1]);
    vi.advanceTimersByTime(1);
    expect(sent).toEqual([1, 3]);
    vi.advanceTimersByTime(5000);
    expect(sent).toEqual([1, 3]);
  });

  it('stop drops what waits: nothing is sent after it (the final message goes last)', () => {
    const sent: number[] = [];
    const updates = throttled<number>(1000, (n) => sent.push(n));
    updates.push(1);
    vi.advanceTimersByTime(0);
    updates.push(2);
    updates.stop();
    vi.advanceTimersByTime(5000);
    expect(sent).toEqual([1]);
  });
});
