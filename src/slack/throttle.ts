/**
 * Progress updates sent at most once per interval, the latest winning: Slack rate-limits chat.update, and a
 * step reported while another waits replaces it. `stop()` drops what waits (the final message follows it).
 */
export function throttled<T>(intervalMs: number, send: (value: T) => void): { push(value: T): void; stop(): void } {
  let last = 0;
  let pending: { value: T } | undefined;
  let timer: NodeJS.Timeout | undefined;
  const flush = () => {
    timer = undefined;
    if (!pending) return;
    const { value } = pending;
    pending = undefined;
    last = Date.now();
    send(value);
  };
  return {
    push(value) {
      pending = { value };
      if (!timer) timer = setTimeout(flush, Math.max(0, intervalMs - (Date.now() - last)));
    },
    stop() {
      if (timer) clearTimeout(timer);
      timer = undefined;
      pending = undefined;
    },
  };
}
