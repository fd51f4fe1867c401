import type { Knex } from 'knex';

/**
 * The fact `tributary audit verify` needs to tell events written before the chain existed from events
 * written around it: how many events had no place in the chain when this migration ran, and their ids.
 * Recorded once; later, an event without a seq is expected only if it is one of these. A fresh install
 * records zero, so every unchained event is flagged there.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    create table audit_chain_origin (
      one boolean primary key default true check (one),
      unchained_events integer not null,
      unchained_min_id bigint,
      unchained_max_id bigint,
      recorded_at timestamptz not null default now()
    );
    insert into audit_chain_origin (unchained_events, unchained_min_id, unchained_max_id)
      select count(*), min(id), max(id) from audit_events where seq is null;
    create function audit_chain_origin_fixed() returns trigger language plpgsql as $$
    begin
      raise exception 'audit_chain_origin is recorded once (% refused)', tg_op;
    end $$;
    create trigger audit_chain_origin_fixed before update or delete or truncate on audit_chain_origin
      for each statement execute function audit_chain_origin_fixed();
  `);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw(`
    drop table if exists audit_chain_origin;
    drop function if exists audit_chain_origin_fixed();
  `);
}
