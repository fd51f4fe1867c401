import type { Knex } from 'knex';
import type { SlackMessagesRow } from '../db/rows.js';

/**
 * Where the bot posted what: the one record of every message it updates in place or answers later
 * (`slack_messages`, migrations/20261207120000_slack_placement.ts). Only the Slack adapter reads and writes
 * it; the engine knows nothing of channels and timestamps (a lint rule keeps `slack_messages` out of
 * src/engine). A message is keyed by what it is about: its kind and the id of its subject.
 */
export type MessageKind =
  /** a conflict's card (subject: conflicts.id) */
  | 'conflict'
  /** a run's queue summary (subject: runs.id) */
  | 'summary'
  /** a deployment's go/no-go card (subject: deployments.id) */
  | 'deployment'
  /** the card of a deployment interrupted by a dead process, with Resume and Roll back (subject: deployments.id) */
  | 'interrupted'
  /** a pruning proposal sent to its feature's owner (subject: prune_proposals.id) */
  | 'prune';

export type Placement = Pick<SlackMessagesRow, 'channel' | 'ts'>;

const table = (db: Knex) => db<SlackMessagesRow>('slack_messages');

/** Records where a message about `subject` was posted (a message posted again in the same channel replaces it). */
export async function recordMessage(db: Knex, kind: MessageKind, subject: number, where: Placement): Promise<void> {
  await table(db)
    .insert({ kind, subject, channel: where.channel, ts: where.ts })
    .onConflict(['kind', 'subject', 'channel'])
    .merge(['ts', 'posted_at']);
}

/** Every message about `subject`, first posted first. */
export async function messagesAbout(db: Knex, kind: MessageKind, subject: number): Promise<Placement[]> {
  return table(db).where({ kind, subject }).orderBy('id').select('channel', 'ts');
}

/** The newest message about `subject`, if it was posted. */
export async function messageAbout(db: Knex, kind: MessageKind, subject: number, channel?: string): Promise<Placement | undefined> {
  const q = table(db).where({ kind, subject });
  if (channel !== undefined) q.where({ channel });
  return q.orderBy('id', 'desc').first('channel', 'ts');
}

/** Of these subjects, the ones with a message in `channel`. */
export async function postedIn(db: Knex, kind: MessageKind, subjects: number[], channel: string): Promise<Set<number>> {
  if (subjects.length === 0) return new Set();
  return new Set(await table(db).where({ kind, channel }).whereIn('subject', subjects).pluck('subject'));
}

/** Forgets a message (deleted in Slack: it is posted anew). */
export async function forgetMessage(db: Knex, kind: MessageKind, subject: number, channel: string): Promise<void> {
  await table(db).where({ kind, subject, channel }).delete();
}
