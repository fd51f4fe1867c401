/**
 * Failpoints: named places in the code where a test can make a real process wait or die, to prove that a
 * crash there loses nothing. Set `TRIBUTARY_FAILPOINTS` to a comma-separated list of `name=action`:
 *
 *   pause   write `failpoint <name>: paused (pid <pid>)` on stderr, then wait for ever (the test kills the
 *           process with SIGKILL once it has read that line: the crash happens exactly there)
 *   stop    write `failpoint <name>: stopped (pid <pid>)` on stderr, then stop the process (SIGSTOP): the test
 *           does what it needs meanwhile (e.g. takes a lock away) and lets it go on with SIGCONT
 *   crash   SIGKILL the process itself at once
 *   error   throw an error naming the point (the step's own failure path runs)
 *   corrupt let the code at that point alter the data it carries (`failpointAction(name) === 'corrupt'`):
 *           only for points that say so, to prove that verification catches it
 *
 * e.g. `TRIBUTARY_FAILPOINTS=consolidate.after-finish=pause`. Unset, a failpoint is one comparison of a
 * module-level constant: nothing measurable. Names are `<phase>.<where>`; docs/contributing.md lists them.
 */
export type FailpointAction = 'pause' | 'stop' | 'crash' | 'error' | 'corrupt';

const ACTIONS: readonly FailpointAction[] = ['pause', 'stop', 'crash', 'error', 'corrupt'];

function parse(text: string | undefined): Map<string, FailpointAction> | null {
  if (!text) return null;
  const points = new Map<string, FailpointAction>();
  for (const part of text.split(',').map((p) => p.trim()).filter(Boolean)) {
    const eq = part.lastIndexOf('=');
    const name = eq > 0 ? part.slice(0, eq) : part;
    const action = (eq > 0 ? part.slice(eq + 1) : 'pause') as FailpointAction;
    if (!ACTIONS.includes(action)) {
      throw new Error(`TRIBUTARY_FAILPOINTS: unknown action "${action}" for ${name} (one of ${ACTIONS.join(', ')})`);
    }
    points.set(name, action);
  }
  return points;
}

// Read once: a process's failpoints are fixed at its start.
const ACTIVE = parse(process.env.TRIBUTARY_FAILPOINTS);

/** The action set for a point, if any (for points whose action the code applies itself, e.g. corrupt). */
export function failpointAction(name: string): FailpointAction | undefined {
  return ACTIVE === null ? undefined : ACTIVE.get(name);
}

/** A failpoint: does nothing unless TRIBUTARY_FAILPOINTS names it (see above). */
export async function failpoint(name: string): Promise<void> {
  if (ACTIVE === null) return;
  const action = ACTIVE.get(name);
  if (!action || action === 'corrupt') return;
  if (action === 'error') throw new Error(`failpoint ${name}: error injected`);
  if (action === 'crash') {
    process.kill(process.pid, 'SIGKILL');
    return;
  }
  if (action === 'stop') {
    // stderr on a pipe is written synchronously: the line is out before the process stops
    process.stderr.write(`failpoint ${name}: stopped (pid ${process.pid})\n`);
    process.kill(process.pid, 'SIGSTOP');
    return;
  }
  process.stderr.write(`failpoint ${name}: paused (pid ${process.pid})\n`);
  // a timer keeps the event loop alive: the process waits here until it is killed
  setInterval(() => undefined, 1 << 30);
  await new Promise<never>(() => undefined);
}
