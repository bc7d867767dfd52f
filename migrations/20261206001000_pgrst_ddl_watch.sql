-- DDL made outside agencyflow (psql, another migration tool, the dashboard of a SQL client)
-- reaches the REST schema cache without a restart: event triggers send the `pgrst` channel
-- the notification the server (like PostgREST) reloads on. The pair Supabase installs
-- (PostgREST's "finer-grained event trigger"): CREATE/ALTER of objects the API can expose,
-- and DROPs of them; temporary objects are ignored.
--
-- Event triggers need a superuser. A schema owner that is not one (a managed database's
-- `postgres`) skips them with a notice: README, "Use it in place of PostgREST on your own
-- database", has the one-line equivalent for whoever is superuser there.

create or replace function extensions.pgrst_ddl_watch() returns event_trigger
language plpgsql
set search_path = ''
as $$
declare
  cmd record;
begin
  for cmd in select * from pg_catalog.pg_event_trigger_ddl_commands()
  loop
    if cmd.command_tag in (
      'CREATE SCHEMA', 'ALTER SCHEMA',
      'CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO', 'ALTER TABLE',
      'CREATE FOREIGN TABLE', 'ALTER FOREIGN TABLE',
      'CREATE VIEW', 'ALTER VIEW',
      'CREATE MATERIALIZED VIEW', 'ALTER MATERIALIZED VIEW',
      'CREATE FUNCTION', 'ALTER FUNCTION',
      'CREATE TRIGGER',
      'CREATE TYPE', 'ALTER TYPE',
      'CREATE RULE',
      'COMMENT'
    )
    -- CREATE TEMP TABLE and other objects in pg_temp change nothing the API serves.
    and cmd.schema_name is distinct from 'pg_temp'
    then
      notify pgrst, 'reload schema';
    end if;
  end loop;
end
$$;

create or replace function extensions.pgrst_drop_watch() returns event_trigger
language plpgsql
set search_path = ''
as $$
declare
  obj record;
begin
  for obj in select * from pg_catalog.pg_event_trigger_dropped_objects()
  loop
    if obj.object_type in (
      'schema', 'table', 'foreign table', 'view', 'materialized view',
      'function', 'trigger', 'type', 'rule'
    )
    and obj.is_temporary is false
    then
      notify pgrst, 'reload schema';
    end if;
  end loop;
end
$$;

revoke all on function extensions.pgrst_ddl_watch() from public, anon, authenticated, service_role;
revoke all on function extensions.pgrst_drop_watch() from public, anon, authenticated, service_role;

do $$
begin
  if not (select rolsuper from pg_catalog.pg_roles where rolname = current_user) then
    raise notice 'not a superuser: the pgrst_ddl_watch/pgrst_drop_watch event triggers are not installed; DDL made outside agencyflow needs NOTIFY pgrst, ''reload schema''';
    return;
  end if;
  if not exists (select 1 from pg_catalog.pg_event_trigger where evtname = 'pgrst_ddl_watch') then
    create event trigger pgrst_ddl_watch on ddl_command_end
      execute function extensions.pgrst_ddl_watch();
  end if;
  if not exists (select 1 from pg_catalog.pg_event_trigger where evtname = 'pgrst_drop_watch') then
    create event trigger pgrst_drop_watch on sql_drop
      execute function extensions.pgrst_drop_watch();
  end if;
end
$$;
