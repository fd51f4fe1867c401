import { TributaryError } from '../errors.js';

/**
 * The least-privilege set-up of the control database (docs/operations.md): migrations run as the owner
 * of the tables; the bot and the CLI connect as an app role that is not the owner. It reads and writes
 * the control tables, but may only INSERT and SELECT the audit trail (no UPDATE, DELETE, TRUNCATE) and
 * only read the migration bookkeeping and the chain's origin. Not being the owner, it can neither
 * disable the audit trail's triggers nor drop tables (`migrate --down` is refused to it).
 */
const ROLE_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;

function quoted(kind: string, name: string): string {
  if (!ROLE_NAME.test(name)) throw new TributaryError('usage', `${kind} "${name}" is not a plain role/database name (letters, digits, _; up to 63)`);
  return `"${name}"`;
}

export function leastPrivilegeSql(p: { owner: string; app: string; database: string }): string {
  const owner = quoted('owner role', p.owner);
  const app = quoted('app role', p.app);
  const db = quoted('database', p.database);
  return `-- Tributary: least privilege on the control database ${p.database} (owner ${p.owner}, app ${p.app}); see docs/operations.md
do $$ begin
  if not exists (select from pg_roles where rolname = '${p.app}') then create role ${app} login; end if;
end $$;
-- the app role is not the owner: it cannot drop tables or disable triggers
grant connect, temporary on database ${db} to ${app};
-- pg-boss (testing.dispatch: pgboss) creates its own schema on first use
grant create on database ${db} to ${app};
grant usage on schema public to ${app};
grant select, insert, update, delete on all tables in schema public to ${app};
grant usage, select on all sequences in schema public to ${app};
-- the audit trail: append and read only
revoke update, delete, truncate on audit_events from ${app};
-- imported transfer packages and the audit events that travelled in them: append and read only
revoke update, delete, truncate on transfer_packages, imported_audit_events from ${app};
revoke insert, update, delete, truncate on audit_chain_origin, knex_migrations, knex_migrations_lock from ${app};
-- consolidation's work tables
grant usage, create on schema work to ${app};
grant select, insert, update, delete on all tables in schema work to ${app};
-- tables a later migration (run by the owner) creates: the same reads and writes
alter default privileges for role ${owner} in schema public grant select, insert, update, delete on tables to ${app};
alter default privileges for role ${owner} in schema public grant usage, select on sequences to ${app};
`;
}
