-- realtime.send / realtime.broadcast_changes, as an attacker would call them: both were
-- SECURITY DEFINER and executable by `authenticated`, so any signed-in user could broadcast
-- to any *private* topic (another organisation's board) from SQL without the
-- realtime.messages INSERT policy a private send needs over the socket. Now:
--   - realtime.send runs as the caller; a private send first inserts the message into
--     realtime.messages as the caller (with `realtime.topic()` set to the topic), so the
--     caller's INSERT policies decide, as on Supabase; only then is it published;
--   - realtime.publish_message(id) (SECURITY DEFINER) publishes a message row and removes
--     it: it can only publish what the caller was allowed to insert;
--   - realtime.broadcast_changes is for triggers: executable by service_role (and the
--     owner) only. A trigger function calling it is declared SECURITY DEFINER, as in
--     Supabase's documentation, so the table's writers need no right of their own.

-- The NOTIFY itself (every process delivers it); callable by the owner only.
create or replace function realtime.publish(payload jsonb, event text, topic text, private boolean)
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
revoke all on function realtime.publish(jsonb, text, text, boolean) from public;

-- Publishes a broadcast message the caller inserted (so its INSERT policy allowed it).
create or replace function realtime.publish_message(message_id uuid)
returns void
language plpgsql security definer
set search_path = pg_catalog
as $$
declare
  m record;
begin
  delete from realtime.messages
   where id = message_id and extension = 'broadcast'
   returning topic, event, payload, private into m;
  if not found then
    raise exception 'realtime: no broadcast message %', message_id using errcode = '42501';
  end if;
  perform realtime.publish(coalesce(m.payload, '{}'::jsonb), m.event, m.topic, m.private);
end
$$;
revoke all on function realtime.publish_message(uuid) from public;
grant execute on function realtime.publish_message(uuid) to authenticated, service_role;

-- Public topics are open to anyone holding the anon key over the socket; so from SQL.
create or replace function realtime.publish_public(payload jsonb, event text, topic text)
returns void
language sql security definer
set search_path = pg_catalog
as $$ select realtime.publish(payload, event, topic, false) $$;
revoke all on function realtime.publish_public(jsonb, text, text) from public;
grant execute on function realtime.publish_public(jsonb, text, text) to authenticated, service_role;

create or replace function realtime.send(payload jsonb, event text, topic text, private boolean default true)
returns void
language plpgsql security invoker
set search_path = pg_catalog
as $$
declare
  previous text := current_setting('realtime.topic', true);
  message_id uuid;
begin
  if not private then
    perform realtime.publish_public(payload, event, topic);
    return;
  end if;
  perform set_config('realtime.topic', topic, true);
  -- No RETURNING: that would also demand a SELECT policy; an INSERT policy is what sending
  -- needs.
  message_id := gen_random_uuid();
  insert into realtime.messages (id, topic, extension, event, payload, private)
  values (message_id, topic, 'broadcast', event, payload, true);
  perform set_config('realtime.topic', coalesce(previous, ''), true);
  perform realtime.publish_message(message_id);
end
$$;
revoke all on function realtime.send(jsonb, text, text, boolean) from public;
grant execute on function realtime.send(jsonb, text, text, boolean) to authenticated, service_role;

create or replace function realtime.broadcast_changes(
  topic_name text, event_name text, operation text, table_name text, table_schema text,
  new record, old record, level text default 'ROW'
) returns void
language plpgsql security definer
set search_path = pg_catalog
as $$
begin
  perform realtime.publish(
    jsonb_build_object(
      'schema', table_schema, 'table', table_name, 'operation', operation,
      'record', case when new is null then null else to_jsonb(new) end,
      'old_record', case when old is null then null else to_jsonb(old) end),
    event_name, topic_name, true);
end
$$;
revoke all on function realtime.broadcast_changes(text, text, text, text, text, record, record, text)
  from public, authenticated;
grant execute on function realtime.broadcast_changes(text, text, text, text, text, record, record, text)
  to service_role;
