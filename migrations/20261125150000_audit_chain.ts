import type { Knex } from 'knex';

/**
 * The audit trail becomes a hash chain: each event carries its position in the chain (`seq`, 1, 2, …),
 * the hash of the event before it (`prev_hash`) and its own `hash`, an HMAC-SHA256 keyed with a secret
 * that never reaches the database (src/engine/audit.ts computes it). Events written before this
 * migration keep no seq and no hash: they predate the chain and `tributary audit verify` says so.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    alter table audit_events
      add column seq bigint,
      add column prev_hash text,
      add column hash text,
      -- a chained event has both its position and its hash
      add constraint audit_events_chained check ((seq is null) = (hash is null));
    -- one event per position: two writers can never fork the chain, even past the append lock
    create unique index audit_events_seq on audit_events (seq);
    -- truncate is refused as updates and deletes are
    create trigger audit_events_no_truncate before truncate on audit_events
      for each statement execute function audit_events_append_only();
  `);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw(`
    drop trigger if exists audit_events_no_truncate on audit_events;
    drop index if exists audit_events_seq;
    alter table audit_events
      drop constraint if exists audit_events_chained,
      drop column if exists hash,
      drop column if exists prev_hash,
      drop column if exists seq;
  `);
}
