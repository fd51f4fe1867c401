import type { Knex } from 'knex';
import { redactDeep } from '../log.js';

export interface AuditEvent {
  actor: string;
  action: string;
  release?: string;
  subject?: string;
  details?: Record<string, unknown>;
}

/** Appends one event to the audit trail (append-only: the table refuses updates and deletes). */
export async function recordAudit(db: Knex | Knex.Transaction, event: AuditEvent): Promise<void> {
  await db('audit_events').insert({
    actor: event.actor,
    action: event.action,
    release: event.release ?? null,
    subject: event.subject ?? null,
    details: JSON.stringify(redactDeep(event.details ?? {})),
  });
}

export interface AuditRow {
  id: number;
  at: Date;
  actor: string;
  action: string;
  release: string | null;
  subject: string | null;
  details: Record<string, unknown>;
}

export async function auditEvents(db: Knex, release: string): Promise<AuditRow[]> {
  return db('audit_events').where({ release }).orderBy('id');
}
