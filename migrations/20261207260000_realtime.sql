-- /realtime/v1 (docs/realtime.md): the publication the dashboards' tables are captured from,
-- the logical decoding slot behind it (read with wal2json through SECURITY DEFINER
-- functions, so the API login needs no REPLICATION attribute), the capture position that
-- makes delivery exactly-once across restarts, the spool for fan-out messages too large for
-- a NOTIFY, and Supabase's `realtime` schema pieces: `realtime.messages` (RLS decides who may
-- join a private channel), `realtime.topic()`, `realtime.send()` and
-- `realtime.broadcast_changes()`.

create schema if not exists realtime;
grant usage on schema realtime to anon, authenticated, service_role, authenticator;

-- The publication Supabase's clients expect, with the tables dashboards watch.
do $$
begin
  if not exists (select 1 from pg_publication where pubname = 'supabase_realtime') then
    create publication supabase_realtime;
  end if;
end
$$;

alter publication supabase_realtime add table
  public.clients, public.projects, public.tasks, public.roadmap_phases, public.milestones,
  public.deliverables, public.crm_deals, public.crm_interactions, public.activities,
  public.invoices, public.payments, public.wizard_sessions, public.wizard_answers,
  public.documents;

-- The old row of an UPDATE/DELETE in full: a DELETE is authorised by evaluating the table's
-- SELECT policies on it (the row is gone, so it cannot be selected). Subscribers still get
-- only the primary key of a deleted row on tables with RLS. `documents` keeps the default
-- (its text and embeddings would make every update's WAL heavy): its DELETEs are delivered
-- only to roles that bypass RLS.
alter table public.clients replica identity full;
alter table public.projects replica identity full;
alter table public.tasks replica identity full;
alter table public.roadmap_phases replica identity full;
alter table public.milestones replica identity full;
alter table public.deliverables replica identity full;
alter table public.crm_deals replica identity full;
alter table public.crm_interactions replica identity full;
alter table public.activities replica identity full;
alter table public.invoices replica identity full;
alter table public.payments replica identity full;
alter table public.wizard_sessions replica identity full;
alter table public.wizard_answers replica identity full;

-- One logical slot per database (slot names are cluster-wide, so the name carries the
-- database's hash).
create or replace function realtime.slot_name() returns name
language sql stable
set search_path = pg_catalog
as $$ select ('agencyflow_realtime_' || substr(md5(current_database()), 1, 16))::name $$;

-- The capture position: the end LSN of the last transaction whose changes were handed to
-- the fan-out, written in the same transaction as their NOTIFYs.
create table if not exists realtime.capture_position (
  id boolean primary key default true check (id),
  lsn pg_lsn not null,
  updated_at timestamptz not null default now()
);

-- Creates the slot when absent; returns its state: 'created', 'ok', or 'lost' (PostgreSQL
-- invalidated it past max_slot_wal_keep_size). Fails clearly without wal_level = logical.
create or replace function realtime.ensure_slot() returns text
language plpgsql security definer
set search_path = pg_catalog
as $$
declare
  st text;
begin
  if current_setting('wal_level') <> 'logical' then
    raise exception 'postgres_changes needs wal_level = logical (it is %)', current_setting('wal_level')
      using errcode = '55000';
  end if;
  select wal_status into st from pg_replication_slots where slot_name = realtime.slot_name();
  if not found then
    perform pg_create_logical_replication_slot(realtime.slot_name(), 'wal2json');
    delete from realtime.capture_position;
    return 'created';
  end if;
  if st = 'lost' then
    return 'lost';
  end if;
  return 'ok';
end
$$;

create or replace function realtime.drop_slot() returns void
language plpgsql security definer
set search_path = pg_catalog
as $$
begin
  perform pg_drop_replication_slot(slot_name)
    from pg_replication_slots where slot_name = realtime.slot_name() and not active;
  delete from realtime.capture_position;
end
$$;

-- Bytes of WAL the slot keeps (NULL without a slot).
create or replace function realtime.slot_lag() returns bigint
language sql stable security definer
set search_path = pg_catalog
as $$
  select pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint
    from pg_replication_slots where slot_name = realtime.slot_name()
$$;

-- Committed changes of the published tables after the slot's position, without consuming
-- them (the caller advances after delivery). `tables`: wal2json's add-tables list.
create or replace function realtime.peek_changes(max_changes integer, tables text)
returns table (lsn pg_lsn, data text)
language sql security definer
set search_path = pg_catalog
as $$
  select c.lsn, c.data
    from pg_logical_slot_peek_changes(realtime.slot_name(), null, max_changes,
      'format-version', '2', 'include-timestamp', '1', 'include-type-oids', '1',
      'include-pk', '1', 'add-tables', tables) as c
$$;

create or replace function realtime.advance_slot(upto pg_lsn) returns void
language sql security definer
set search_path = pg_catalog
as $$ select from pg_replication_slot_advance(realtime.slot_name(), upto) $$;

create or replace function realtime.published_tables() returns table (schema_name text, table_name text)
language sql stable
set search_path = pg_catalog
as $$ select schemaname::text, tablename::text from pg_publication_tables where pubname = 'supabase_realtime' $$;

-- Fan-out messages larger than a NOTIFY payload: written here, the NOTIFY carries the id.
-- Unlogged: a message lives seconds, and a crash loses only what nobody could still receive.
create unlogged table if not exists realtime.fanout_spool (
  id bigserial primary key,
  body text not null,
  created_at timestamptz not null default now()
);

revoke all on function realtime.ensure_slot(), realtime.drop_slot(), realtime.slot_lag(),
  realtime.peek_changes(integer, text), realtime.advance_slot(pg_lsn) from public;
grant execute on function realtime.ensure_slot(), realtime.drop_slot(), realtime.slot_lag(),
  realtime.peek_changes(integer, text), realtime.advance_slot(pg_lsn), realtime.slot_name(),
  realtime.published_tables() to authenticator;
revoke all on realtime.capture_position, realtime.fanout_spool from public;
grant select, insert, update, delete on realtime.capture_position, realtime.fanout_spool to authenticator;
grant usage on sequence realtime.fanout_spool_id_seq to authenticator;

-- Private channels: who may join (select) and send (insert) on a topic is decided by RLS
-- policies on this table, as on Supabase. The server probes it as the joining user in a
-- transaction it rolls back.
create table if not exists realtime.messages (
  id uuid primary key default gen_random_uuid(),
  topic text not null,
  extension text not null check (extension in ('broadcast', 'presence')),
  event text,
  payload jsonb,
  private boolean not null default true,
  inserted_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
alter table realtime.messages enable row level security;
grant select, insert on realtime.messages to anon, authenticated, service_role;

-- The topic (without "realtime:") of the channel being authorised, for policies.
create or replace function realtime.topic() returns text
language sql stable
as $$ select nullif(current_setting('realtime.topic', true), '') $$;
grant execute on function realtime.topic() to anon, authenticated, service_role;

-- Writes the probe rows a join's authorisation selects (as authenticator, before the role
-- switch; the transaction is rolled back).
create or replace function realtime.authorization_probe(p_topic text) returns void
language sql security definer
set search_path = pg_catalog
as $$
  select set_config('realtime.topic', p_topic, true);
  insert into realtime.messages (topic, extension, event) values
    (p_topic, 'broadcast', 'probe'), (p_topic, 'presence', 'probe');
$$;
revoke all on function realtime.authorization_probe(text) from public;
grant execute on function realtime.authorization_probe(text) to authenticator;

-- Broadcast from the database: every agencyflow process delivers it to the topic's
-- subscribers. The payload travels through NOTIFY (or the spool when larger).
create or replace function realtime.send(payload jsonb, event text, topic text, private boolean default true)
returns void
language plpgsql security definer
set search_path = pg_catalog
as $$
declare
  body text := json_build_object('k', 'b', 't', topic, 'p', private, 'e', event, 'd', payload)::text;
  spool_id bigint;
begin
  if octet_length(body) < 7000 then
    perform pg_notify('agencyflow_realtime', json_build_object('n', 'db', 'm', body::json)::text);
  else
    insert into realtime.fanout_spool (body) values (body) returning id into spool_id;
    perform pg_notify('agencyflow_realtime', json_build_object('n', 'db', 's', spool_id)::text);
  end if;
end
$$;
revoke all on function realtime.send(jsonb, text, text, boolean) from public;
grant execute on function realtime.send(jsonb, text, text, boolean) to authenticated, service_role;

-- Trigger helper as Supabase's: broadcasts a row change as {schema, table, operation,
-- record, old_record} on `topic_name` with event `event_name`.
create or replace function realtime.broadcast_changes(
  topic_name text, event_name text, operation text, table_name text, table_schema text,
  new record, old record, level text default 'ROW'
) returns void
language plpgsql security definer
set search_path = pg_catalog
as $$
begin
  perform realtime.send(
    jsonb_build_object(
      'schema', table_schema, 'table', table_name, 'operation', operation,
      'record', case when new is null then null else to_jsonb(new) end,
      'old_record', case when old is null then null else to_jsonb(old) end),
    event_name, topic_name, true);
end
$$;
revoke all on function realtime.broadcast_changes(text, text, text, text, text, record, record, text) from public;
grant execute on function realtime.broadcast_changes(text, text, text, text, text, record, record, text)
  to authenticated, service_role;
