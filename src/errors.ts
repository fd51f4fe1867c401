/**
 * Coded domain errors. Commands (CLI, Slack) turn them into messages and exit codes;
 * the engine throws them with a message that says what is wrong and what to do first.
 */
export type ErrorCode =
  | 'config_invalid'
  | 'config_missing'
  | 'usage'
  | 'unknown_release'
  | 'unknown_env'
  | 'unknown_conflict'
  | 'env_unreachable'
  | 'gate_not_locked'
  | 'gate_drift'
  | 'gate_untagged'
  | 'gate_busy'
  | 'gate_state'
  | 'no_rows'
  | 'already_decided'
  | 'decision_invalid'
  | 'forbidden'
  | 'database'
  | 'junit_invalid'
  | 'runner_failed'
  | 'gate_tests'
  | 'gate_conflicts'
  /** A destructive command run without its --yes/--confirm: it said what it would destroy, and did nothing. */
  | 'unconfirmed'
  /** A transfer package refused (signature, a file's hash, release, run): nothing was loaded. */
  | 'package_refused'
  | 'internal';

export class TributaryError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, details: Record<string, unknown> = {}) {
    super(message);
    this.name = 'TributaryError';
    this.code = code;
    this.details = details;
  }
}

/** Distinct exit codes: 0 success, 1 failure, 2 usage/config error, 3 refused gate. */
export const EXIT = { ok: 0, failure: 1, usage: 2, gate: 3 } as const;

export function exitCodeFor(err: unknown): number {
  if (!(err instanceof TributaryError)) return EXIT.failure;
  switch (err.code) {
    case 'config_invalid':
    case 'config_missing':
    case 'usage':
    case 'unknown_release':
    case 'unknown_env':
    case 'unknown_conflict':
    case 'decision_invalid':
    case 'unconfirmed':
      return EXIT.usage;
    case 'gate_not_locked':
    case 'gate_drift':
    case 'gate_untagged':
    case 'gate_busy':
    case 'gate_state':
    case 'already_decided':
    case 'forbidden':
    case 'gate_tests':
    case 'gate_conflicts':
    case 'package_refused':
      return EXIT.gate;
    default:
      return EXIT.failure;
  }
}

/** Levenshtein distance (names are short). */
function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cur = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = cur;
    }
  }
  return row[b.length]!;
}

/** The known names a mistyped one most likely meant: the same but for case, else the nearest within a small edit distance. */
export function closest(name: string, known: Iterable<string>): string[] {
  const names = [...known];
  const lower = name.toLowerCase();
  const same = names.filter((k) => k.toLowerCase() === lower);
  if (same.length) return same;
  const near = names.map((k) => ({ k, d: distance(lower, k.toLowerCase()) })).filter((x) => x.d <= Math.max(1, Math.floor(x.k.length / 3)));
  const best = Math.min(...near.map((x) => x.d));
  return near.filter((x) => x.d === best).map((x) => x.k);
}

/** The one known name a mistyped one most likely meant, if there is one. */
export function suggest(name: string, known: Iterable<string>): string | undefined {
  const c = closest(name, known);
  return c.length === 1 ? c[0] : undefined;
}

/** "unknown release "r2": did you mean R2?" (or the names there are, when none is close). */
export function unknownName(code: 'unknown_release' | 'unknown_env' | 'usage', kind: string, name: string, known: Iterable<string>): TributaryError {
  const names = [...known];
  const close = closest(name, names);
  const hint = close.length ? `did you mean ${close.join(' or ')}?` : `the ${kind}s are ${names.join(', ') || 'none'}`;
  return new TributaryError(code, `unknown ${kind} "${name}": ${hint}`, { [kind]: name, ...(close.length === 1 ? { suggestion: close[0] } : {}) });
}
