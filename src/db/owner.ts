import type { Knex } from 'knex';

/**
 * Who owns the control database's tables. Migrations create and drop them, so only their owner (or a
 * role with its privileges, e.g. a superuser) runs them; the bot and the CLI may connect as a role that
 * is not the owner (docs/operations.md, "Least privilege"), which must not migrate, let alone roll back.
 */
export interface ControlOwnership {
  /** The role connected. */
  user: string;
  /** The owner of the control tables; null before the first migration created them. */
  owner: string | null;
  /** The role connected may act as the owner (it is the owner, a member of it, or a superuser). */
  isOwner: boolean;
}

export async function controlOwnership(db: Knex): Promise<ControlOwnership> {
  const res = await db.raw<{ rows: { user: string; owner: string | null; is_owner: boolean }[] }>(
    `select current_user as user, t.tableowner as owner, (t.tableowner is null or pg_has_role(current_user, t.tableowner, 'USAGE')) as is_owner
       from (select 1) as one
       left join pg_tables t on t.schemaname = current_schema() and t.tablename = 'knex_migrations'`,
  );
  const r = res.rows[0]!;
  return { user: r.user, owner: r.owner, isOwner: r.is_owner };
}
