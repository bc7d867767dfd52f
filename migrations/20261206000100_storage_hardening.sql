-- The API roles keep only the privileges the storage API uses on storage's tables.
-- `grant all` (20260104000000_storage.sql) also gave TRUNCATE, which ignores row-level security
-- (any caller could empty storage.objects, and the files would stay behind unnamed), and
-- REFERENCES and TRIGGER, which no API role needs. RLS keeps deciding every row of what remains.
do $$
declare
  t text;
begin
  for t in select tablename from pg_tables where schemaname = 'storage' order by tablename loop
    execute format('revoke all on storage.%I from public, anon, authenticated, service_role', t);
    execute format('grant select, insert, update, delete on storage.%I to anon, authenticated, service_role', t);
  end loop;
end
$$;

