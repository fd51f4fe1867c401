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
      return EXIT.gate;
    default:
      return EXIT.failure;
  }
}
