import type { Ctx } from '../engine/kernel/context.js';
import type { ReleaseStatus } from '../engine/report/index.js';
import type { Parsed } from './table.js';

/**
 * What a command's run function is given by the adapter that received it: who acts, and where its
 * result, its progress and its outcome go. The CLI prints (text or --json) and exits with the code; Slack
 * answers ephemerally, or updates a progress message in the channel for long commands.
 */
export interface Io {
  /** Recorded as the actor: `cli:ana` (the CLI's --as or OS user) or a Slack user id. */
  actor: string;
  /** The identity checked against the roles (a Slack user id, or the --as name). */
  user: string;
  /** The identity's Slack user groups (roles may name groups). */
  groups: string[];
  /** The caller wants the value, not the text (CLI --json). */
  json: boolean;
  /** The command's result: the value (--json) and its text. */
  out(value: unknown, text: () => string): void;
  /** A step of a long command: its line, and what it counted (`collect {"env":"ST-1","rows":120}`). */
  progress(line: string, info?: Record<string, unknown>): void;
  /** One line of a streamed result (JSON lines); wait for it where the reader is slower than the database. */
  line(text: string): void | Promise<void>;
  /** The outcome is not success: 1 failure, 3 a refused gate. */
  exit(code: number): void;
  /** A release's status as the adapter may share it between requests (the bot: a burst of asks, one read). */
  statusOf?(release: string): Promise<ReleaseStatus>;
}

/** A command's run: the engine call, its result rendered through src/views. Role and names are checked before. */
export type Run = (ctx: Ctx, p: Parsed, io: Io) => Promise<void>;
