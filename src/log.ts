import { pino, type Logger } from 'pino';

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

export function logger(): Logger {
  if (!root) {
    root = pino(
      {
        level: 'info',
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
