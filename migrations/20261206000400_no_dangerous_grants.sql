-- TRUNCATE ignores row-level security, and REFERENCES / TRIGGER are never needed by the API:
-- no API role (anon, authenticated, service_role) nor the API login holds them on any table
-- of any schema, now or for tables created later by the schema owner (security issue #14;
-- checked by the linter test schema_catalog::linter_no_api_role_may_truncate_...).
do $$
declare
  r record;
begin
  for r in
    select n.nspname, c.relname
    from pg_catalog.pg_class c
    join pg_catalog.pg_namespace n on n.oid = c.relnamespace
    where c.relkind in ('r', 'p', 'v', 'm', 'f')
      and n.nspname not in ('pg_catalog', 'information_schema')
      and n.nspname not like 'pg\_%'
      -- Only what this migration's role owns (or may administer) is ours to revoke.
      and pg_catalog.has_table_privilege(current_user, c.oid, 'TRUNCATE WITH GRANT OPTION')
  loop
    execute format('revoke truncate, references, trigger on %I.%I from anon, authenticated, service_role, authenticator',
                   r.nspname, r.relname);
  end loop;
end
$$;

alter default privileges in schema public revoke truncate, references, trigger on tables from anon, authenticated, service_role;
