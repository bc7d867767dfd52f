-- postgres_changes: the capture leader streams the logical slot over a replication
-- connection (a walsender decodes each WAL record once and pushes changes as they commit),
-- instead of polling `pg_logical_slot_peek_changes`, which decodes the WAL again from the
-- slot's restart point on every call. It logs in as `supabase_replication_admin`, the role
-- Supabase's own realtime uses: LOGIN and REPLICATION, no password (so only connections the
-- server trusts, like the embedded cluster's Unix socket, can use it), owning nothing and
-- granted nothing. Creating a REPLICATION role needs a superuser; without one the role is not
-- created and the leader polls through SQL (or `--realtime-replication-url` names a login).
do $$
begin
  if not exists (select from pg_catalog.pg_roles where rolname = 'supabase_replication_admin') then
    if (select rolsuper from pg_catalog.pg_roles where rolname = current_user) then
      create role supabase_replication_admin with login replication;
    else
      raise notice 'supabase_replication_admin not created (needs a superuser): postgres_changes will poll the slot through SQL';
    end if;
  end if;
end
$$;
