import type { Logger } from 'pino';
import { lazy } from './lazy.js';

/**
 * Secrets are registered when the config substitutes them (database passwords, tokens) and masked
 * wherever text leaves the process: logs, CLI output, error messages, the audit trail.
 */
const secrets = new Set<string>();

export function registerSecret(value: string): void {
  if (value && value.length >= 4) secrets.add(value);
}

const URL_PASSWORD = /(\b[a-z][a-z0-9+.-]*:\/\/[^:/@\s]+:)([^@\s]+)(@)/gi;
const TOKENS = /\b(xox[abposr]-[A-Za-z0-9-]+|xapp-[A-Za-z0-9-]+)/g;

export function redact(text: string): string {
  let out = text.replace(URL_PASSWORD, '$1***$3').replace(TOKENS, '***');
  for (const s of secrets) {
    if (out.includes(s)) out = out.split(s).join('***');
  }
  return out;
}

/** Whether a text carries a registered secret, a URL with a password or a Slack token. */
export function carriesSecret(text: string): boolean {
  return redact(text) !== text;
}

/** Deep copy with every string redacted, for objects that go to the audit trail or --json output. */
export function redactDeep<T>(value: T): T {
  if (typeof value === 'string') return redact(value) as T;
  if (Array.isArray(value)) return value.map((v) => redactDeep(v)) as T;
  if (value && typeof value === 'object' && !(value instanceof Date)) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = redactDeep(v);
    return out as T;
  }
  return value;
}

let root: Logger | undefined;
let rootLevel = 'info';
const loadPino = lazy<typeof import('pino')>('pino');

/** The log level (config.logLevel): set on the logger, or kept for it until something is logged. */
export function setLogLevel(level: string): void {
  if (root) root.level = level;
  else rootLevel = level;
}

/** The process's logger (pino, on stderr), created on first use: a command that logs nothing never loads pino. */
export function logger(): Logger {
  if (!root) {
    const { pino } = loadPino();
    root = pino(
      {
        level: rootLevel,
        redact: { paths: ['password', '*.password', 'url', '*.url', 'connectionString', '*.connectionString', 'token', '*.token'], censor: '***' },
        hooks: {
          logMethod(args, method) {
            method.apply(this, args.map((a) => (typeof a === 'string' ? redact(a) : a instanceof Error ? redact(a.message) : a)) as Parameters<typeof method>);
          },
        },
        formatters: {
          log(obj) {
            return redactDeep(obj);
          },
        },
      },
      pino.destination(2),
    );
  }
  return root;
}
